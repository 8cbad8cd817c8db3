#!/usr/bin/env bash
# Prepare wmt14.en-de into data/wmt14.en-de/data-bin (download, Moses tokenization, BPE, binarization).
# Extra arguments go to scripts/prepare_data.py, e.g. --raw-dir DIR --workers 16 (--help lists all).
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../scripts/prepare_data.py" --task wmt14.en-de "$@"
