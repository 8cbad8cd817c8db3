#!/usr/bin/env python
"""Download HAT's released models: the same as download_model.py in the repository root.

python scripts/download_model.py --model-name=HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8
python scripts/download_model.py --download-all [--save-path ./downloaded_models] [--mirror DIR]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
HAT_LAZY = True  # `import hat` registers with fairseq only where a download needs it (hat.register)

from hat.download.cli import models_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(models_main(prog="scripts/download_model.py"))
