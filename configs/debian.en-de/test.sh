#!/usr/bin/env bash
# Test BLEU on debian.en-de (beam 5, length penalty 1.0, BPE removed; test = in-domain split).
# Run from the repository root (default data: data/debian.en-de/data-bin).
#
#   configs/debian.en-de/test.sh <checkpoint> <subtransformer.yml|none> [normal|sacre] [hat.bleu options]
#
# normal: tokenized BLEU with compound splitting; sacre: sacreBLEU on detokenized output.
# The held-out packages' split: add --gen-subset test_unseen --ref data/debian.en-de/tokenized/test_unseen.detok.de
# (if hat.bleu passes --gen-subset through; otherwise use fairseq-generate --gen-subset test_unseen).
# Outputs go to <checkpoint dir>/exp/<yml name>_test/ unless --out is given; see scripts/test_bleu.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../../scripts/test_bleu.sh" --task debian.en-de "$@"
