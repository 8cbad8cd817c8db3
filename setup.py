"""Install with ``pip install -e .`` (add ``[test]`` for the test tools)."""

from setuptools import find_packages, setup

setup(
    name="hat",
    version="0.1.0",
    description="Hardware-Aware Transformers (HAT) as a fairseq plugin",
    packages=find_packages(include=["hat", "hat.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        # Official fairseq 0.12.2 does not import on Python 3.11 (dataclass error). ve-fairseq is
        # the same 0.12 code with cp311/cp312 wheels (no 3.5-minute source build).
        "ve-fairseq==0.12.3",
        "pyyaml>=6",
        "numpy>=1.24",
        "sacrebleu>=2.3",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "sacremoses>=0.1",
        "subword-nmt>=0.3.8",
    ],
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3", "ruff>=0.5"],
                    "bench": ["scikit-learn>=1.3"]},
)
