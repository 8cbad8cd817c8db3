#!/usr/bin/env bash
# Test BLEU on wmt14.en-de with HAT's settings (beam 4, length penalty 0.6, BPE removed).
# Run from the repository root (default data: data/wmt14.en-de/data-bin).
#
#   configs/wmt14.en-de/test.sh <checkpoint> <subtransformer.yml|none> [normal|sacre] [hat.bleu options]
#
# normal: tokenized BLEU with compound splitting; sacre: sacreBLEU on detokenized output.
# Outputs go to <checkpoint dir>/exp/<yml name>_test/ unless --out is given; see scripts/test_bleu.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../../scripts/test_bleu.sh" --task wmt14.en-de "$@"
