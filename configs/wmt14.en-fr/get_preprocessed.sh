#!/usr/bin/env bash
# HAT's binarized wmt14.en-fr data (HAT's tgz) into data/wmt14.en-fr/data-bin,
# where this project's configs read it (relative to the current directory; --out DIR to change).
# HAT's released models need it: their dictionaries are HAT's (preprocess.sh builds this
# project's own data, with other dictionaries).
# Options: --mirror DIR (take the tgz from a local folder), --sha256 HEX, --force,
# --delete-archive; see python -m hat.download data --help.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m hat.download data --task wmt14.en-fr "$@"
