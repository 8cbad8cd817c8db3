#!/usr/bin/env bash
# The body of every configs/<task>/test.sh: test BLEU with hat.bleu (run from anywhere).
#
#   scripts/test_bleu.sh --task <task> <checkpoint> <subtransformer.yml|none> [normal|sacre] [hat.bleu options]
#
# normal: tokenized BLEU with compound splitting; sacre: sacreBLEU on detokenized output.
# Hypotheses, references and the score go to <checkpoint dir>/exp/<yml name>_test/ unless
# --out is given. Extra options (--data, --ref, --average-last N, --json, ...) go to hat.bleu.
set -euo pipefail
if [ $# -lt 2 ] || [ "$1" != --task ]; then
  sed -n 4p "$0" | sed 's/^# *//' >&2
  exit 2
fi
task=$2
shift 2
if [ $# -lt 2 ]; then
  echo "configs/$task/test.sh <checkpoint> <subtransformer.yml|none> [normal|sacre] [hat.bleu options]" >&2
  exit 2
fi
checkpoint=$1
sub=$2
metric=${3:-normal}
shift $(( $# < 3 ? $# : 3 ))
name=$(basename "$sub" .yml)
[ "$sub" = none ] && name=$(basename "$checkpoint" .pt)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m hat.bleu --task "$task" --checkpoint "$checkpoint" --sub-config "$sub" \
  --metric "$metric" --out "$(dirname "$checkpoint")/exp/${name}_test" "$@"
