#!/usr/bin/env bash
# Prepare wmt19.en-de: download, Moses tokenization, BPE, fairseq binarization into
# data/wmt19.en-de/data-bin (relative to the current directory; --out DIR to change).
# Extra arguments go to scripts/prepare_data.py: --raw-dir DIR, --workers N, --list-files, --help.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../scripts/prepare_data.py" --task wmt19.en-de "$@"
