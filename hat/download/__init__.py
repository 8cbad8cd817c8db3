"""Fetch HAT's released models and preprocessed data, as HAT's own commands do.

    python download_model.py --model-name=HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8
    python download_model.py --download-all            # all 48 (--save-path ./downloaded_models)
    bash configs/<task>/get_preprocessed.sh            # = python -m hat.download data --task <task>

Models land in ``<save-path>/<name>.pt``; a task's binarized data (HAT's tgz) is extracted into
``data/<task>/data-bin``, the folder this project's configs read. Both commands take
``--mirror DIR`` to copy the files from a local folder instead of the network (``DIR/<name>.pt``,
``DIR/<archive>.tgz``, optionally with a ``.sha256`` file beside each), write atomically (a
temporary file or folder, renamed when complete and checked: nothing half-written ever appears
under the final name), check what they got (bytes against Content-Length; a model must be a
loadable checkpoint, not an HTML page, whose pickle asks to run no code
(:mod:`hat.compat.unpickle`'s restricted unpickler) and with the architecture HAT published for
its name (:func:`check_architecture`); the data must be a fairseq data-bin of the language pair;
sha256 when one is known) and skip what is already there and valid (``--force`` fetches again).

Where each part is: :mod:`~hat.download.catalog` (names, links, the data-bin layout),
:mod:`~hat.download.checks` (sha256, checkpoints, architectures, data-bins),
:mod:`~hat.download.transfer` (the one URL fetcher, data preparation's too; a mirror's copy),
:mod:`~hat.download.models` and :mod:`~hat.download.data` (the two jobs), and the command lines
in :mod:`~hat.download.cli` (``python -m hat.download``). Exit status: 0
when everything is in place, 1 when a download or check failed (with
``--download-all`` the others still run), 2 for bad input (unknown name or task).
"""

from hat.download.catalog import (
    DEFAULT_MODEL,
    DEFAULT_SAVE_PATH,
    HAT_DATA,
    HAT_MODELS,
    MARKER,
    SPLITS,
    DownloadError,
    HatData,
    check_model_name,
    check_task,
    direct_url,
    model_url,
)
from hat.download.checks import (
    RELEASED_TASKS,
    SUPER_ARCH_KEYS,
    ReleasedArchitecture,
    check_architecture,
    check_model_file,
    check_sha256,
    databin_missing,
    file_sha256,
    read_sha256,
    released_architecture,
    weight_dims,
)
from hat.download.data import extract_databin, fetch_data, safe_extract
from hat.download.models import download_model
from hat.download.transfer import copy_file, download_url, fetch_url

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_SAVE_PATH", "HAT_DATA", "HAT_MODELS", "MARKER", "RELEASED_TASKS",
    "SPLITS", "SUPER_ARCH_KEYS", "DownloadError", "HatData", "ReleasedArchitecture",
    "check_architecture", "check_model_file", "check_model_name", "check_sha256", "check_task",
    "copy_file", "databin_missing", "direct_url", "download_model", "download_url",
    "extract_databin", "fetch_data", "fetch_url", "file_sha256", "model_url", "read_sha256",
    "released_architecture", "safe_extract", "weight_dims",
]
