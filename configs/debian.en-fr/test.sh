#!/usr/bin/env bash
# Test BLEU on debian.en-fr (beam 5, length penalty 1.0, BPE removed; test = in-domain split).
# Run from the repository root (default data: data/debian.en-fr/data-bin).
#
#   configs/debian.en-fr/test.sh <checkpoint> <subtransformer.yml|none> [normal|sacre] [hat.bleu options]
#
# normal: tokenized BLEU with compound splitting; sacre: sacreBLEU on detokenized output.
# The held-out packages' split: add --gen-subset test_unseen --ref data/debian.en-fr/tokenized/test_unseen.detok.fr
# (if hat.bleu passes --gen-subset through; otherwise use fairseq-generate --gen-subset test_unseen).
# Outputs go to <checkpoint dir>/exp/<yml name>_test/ unless --out is given; see scripts/test_bleu.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../../scripts/test_bleu.sh" --task debian.en-fr "$@"
