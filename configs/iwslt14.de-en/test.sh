#!/usr/bin/env bash
# Test BLEU on iwslt14.de-en with HAT's settings (beam 5, length penalty 1.0, BPE removed, case-insensitive sacreBLEU).
# Run from the repository root (default data: data/iwslt14.de-en/data-bin).
#
#   configs/iwslt14.de-en/test.sh <checkpoint> <subtransformer.yml|none> [normal|sacre] [hat.bleu options]
#
# normal: tokenized BLEU with compound splitting; sacre: sacreBLEU on detokenized output.
# Outputs go to <checkpoint dir>/exp/<yml name>_test/ unless --out is given; see scripts/test_bleu.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../../scripts/test_bleu.sh" --task iwslt14.de-en "$@"
