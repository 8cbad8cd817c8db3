#!/usr/bin/env bash
# Prepare iwslt14.de-en: download, Moses tokenization, BPE, fairseq binarization into
# data/iwslt14.de-en/data-bin (relative to the current directory; --out DIR to change).
# Extra arguments go to scripts/prepare_data.py: --raw-dir DIR, --workers N, --list-files, --help.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/../../scripts/prepare_data.py" --task iwslt14.de-en "$@"
