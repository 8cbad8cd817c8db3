"""Data preparation: the tasks' recipes (:mod:`hat.data.recipes`, listed in the task catalogue
:mod:`hat.corpora`), downloading (:mod:`hat.data.fetch`), text steps (:mod:`hat.data.text`),
the resumable step pipeline and its command line (:mod:`hat.data.prepare`, entry point
``hat.data.prepare.prepare``), Debian's catalogs (:mod:`hat.data.debian`) and a synthetic
corpus (:mod:`hat.data.toy_corpus`). Heavy dependencies (fairseq, sacremoses, subword-nmt) are
imported lazily."""

from hat.data.recipes import DataPrepError, expected_files
from hat.data.toy_corpus import SRC_LANG, TGT_LANG, detokenize, generate_corpus, make_toy_corpus

__all__ = [
    "DataPrepError", "expected_files",
    "SRC_LANG", "TGT_LANG", "detokenize", "generate_corpus", "make_toy_corpus",
]
