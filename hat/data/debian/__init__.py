"""Debian gettext catalogs as a parallel corpus: tasks ``debian.en-de`` and ``debian.en-fr``.

Steps (each skipped when done, every output written atomically):

1. fetch: ``apt-get download`` (run in ``<cache>/debs``, nothing is installed) of
   :data:`DEBIAN_PACKAGES`; ``dpkg-deb -x`` of each into a temporary folder keeping only
   ``usr/share/locale{,-langpack}/{de,fr}/LC_MESSAGES/*.mo``, stored as
   ``<cache>/catalogs/<package>/{VERSION,de/*.mo,fr/*.mo}`` (``data/debian/cache`` is shared
   by both tasks). A package that cannot be fetched is logged and listed in the manifest.
   ``--raw-dir DIR`` replaces the cache's ``catalogs/`` folder (same layout; no download).
2. corpus: read the catalogs with :func:`read_mo`, clean (:class:`Cleaner`), split
   (:func:`~hat.data.debian.corpus.build_corpus`) into
   ``orig/{train,valid,test,valid_unseen,test_unseen}.{en,<tgt>}``.
3. the WMT steps (:mod:`hat.data.wmt`, :mod:`hat.data.text`): sacremoses, joint BPE,
   fairseq-preprocess with a joined dictionary (``valid_unseen`` and ``test_unseen`` binarized
   as extra valid / test splits).
4. ``manifest.json``: packages, versions, catalogs/pairs per package, failures, cleaning
   counts, split statistics and the vocabulary size.

Choices:

* Context (``msgctxt``): dropped from the pair, but entries are read per (context, msgid), so
  homographs that differ only in context ("Open" the verb / the adjective) keep their
  different translations as separate pairs; identical ones collapse in the exact-duplicate
  rule. The final uniqueness key is therefore the (source, target) pair.
* Plurals: the singular msgid with ``msgstr[0]``, and the plural msgid with ``msgstr[1]`` when
  the catalog declares ``nplurals=2`` (German and French; French's ``n>1`` rule still maps
  ``msgstr[1]`` to the English plural). Other plural counts give the singular only.
* Fuzzy entries: ``msgfmt`` does not compile them into .mo files (without ``--use-fuzzy``),
  so every entry read is a finished translation; there is no fuzzy flag in the format.
* The header (empty msgid) is skipped; its ``Plural-Forms`` is read.
* Splits: by a SHA-256 of the normalised source (Moses punctuation normalisation and
  tokenization as the tokenize step does them, casefolded, whitespace collapsed), so two strings
  that become one sentence after tokenization ("Open…" / "Open...", curly / straight quotes)
  never land in two splits; pairs that are equal once both sides are normalised so are kept
  once (``normalised_duplicates`` in the manifest). :data:`HELD_OUT_PACKAGES` never reach train
  and give ``test_unseen``; :data:`VALID_UNSEEN_PACKAGES` neither, and give ``valid_unseen``
  (what a search may rank on without looking at ``test_unseen``). Each keeps only sources
  that no training package has, and ``test_unseen`` none that ``valid_unseen`` has.

Modules: :mod:`~hat.data.debian.packages` (the package lists and the cache folder),
:mod:`~hat.data.debian.fetch` (``apt-get download`` and ``dpkg-deb -x``),
:mod:`~hat.data.debian.corpus` (reading, cleaning, deduplication and the split rules) and
:mod:`~hat.data.debian.pipeline` (the task's steps and :func:`prepare_debian`).
"""

from hat.data.debian.corpus import (
    SPLITS,
    CatalogCorpus,
    SplitKey,
    build_corpus,
    corpus_stats,
    package_catalogs,
    split_of,
)
from hat.data.debian.fetch import extract_catalogs, fetch_catalogs
from hat.data.debian.packages import (
    DEBIAN_PACKAGES,
    DEFAULT_CACHE,
    HELD_OUT_PACKAGES,
    LANGS,
    VALID_UNSEEN_PACKAGES,
)
from hat.data.debian.pipeline import DebianPipeline, prepare_debian

__all__ = [
    "DEBIAN_PACKAGES", "DEFAULT_CACHE", "HELD_OUT_PACKAGES", "LANGS", "SPLITS",
    "VALID_UNSEEN_PACKAGES", "CatalogCorpus",
    "DebianPipeline", "SplitKey", "build_corpus", "corpus_stats", "extract_catalogs",
    "fetch_catalogs", "package_catalogs", "prepare_debian", "split_of",
]
