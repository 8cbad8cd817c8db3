#!/usr/bin/env bash
# Prepare wmt14.en-fr: download, Moses tokenization, BPE, fairseq binarization into
# data/wmt14.en-fr/data-bin (relative to the current directory; --out DIR to change).
# Extra arguments go to scripts/prepare_data.py: --raw-dir DIR, --workers N, --list-files, --help.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../scripts/prepare_data.py" --task wmt14.en-fr "$@"
