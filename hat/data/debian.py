"""Debian gettext catalogs as a parallel corpus: tasks ``debian.en-de`` and ``debian.en-fr``.

Steps (each skipped when done, every output written atomically):

1. fetch: ``apt-get download`` (run in ``<cache>/debs``, nothing is installed) of
   :data:`DEBIAN_PACKAGES`; ``dpkg-deb -x`` of each into a temporary folder keeping only
   ``usr/share/locale{,-langpack}/{de,fr}/LC_MESSAGES/*.mo``, stored as
   ``<cache>/catalogs/<package>/{VERSION,de/*.mo,fr/*.mo}`` (``data/debian/cache`` is shared
   by both tasks). A package that cannot be fetched is logged and listed in the manifest.
   ``--raw-dir DIR`` replaces the cache's ``catalogs/`` folder (same layout; no download).
2. corpus: read the catalogs with :func:`read_mo`, clean (:class:`Cleaner`), split
   (:func:`split_pairs`) into ``orig/{train,valid,test,test_unseen}.{en,<tgt>}``.
3. the WMT steps (:mod:`hat.data.wmt`, :mod:`hat.data.text`): sacremoses, joint BPE,
   fairseq-preprocess with a joined dictionary (``test_unseen`` binarized as an extra split).
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
  and give ``test_unseen`` (minus sources seen in the other packages).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hat.atomic import atomic_text_files, atomic_write_json
from hat.data.catalogs import (
    Cleaner,
    catalog_pairs,
    normalize_source,
    read_mo,
)
from hat.data.recipes import Corpus, DataPrepError, TaskRecipe
from hat.data.text import MosesProcessor, fairseq_preprocess, learn_bpe, read_lines
from hat.data.wmt import WmtPipeline

logger = logging.getLogger(__name__)

LANGS = ("de", "fr")  # catalogs kept in the shared cache (both tasks)
DEFAULT_CACHE = Path("data/debian/cache")
SPLITS = ("train", "valid", "test", "test_unseen")

# Packages chosen from Debian 12's Contents index (``apt-file search -x
# '/locale/de/LC_MESSAGES/.*\.mo$'``): every package shipping >= 2 German catalogs in a .deb
# under 30 MB (mostly KDE/Plasma, the biggest per-package share), plus hand-picked
# translation-rich single-catalog desktop and GNU packages (GIMP, Inkscape, VLC, GnuCash, GTK,
# GLib, GNOME, MATE, Xfce apps, coreutils, tar, grep, sed, apt, dpkg, ...). Big game/data
# packages (kstars-data, widelands-data, wesnoth) are left out for their size.
DEBIAN_PACKAGES: tuple[str, ...] = (
    "accountwizard", "aisleriot", "akonadi-contacts-data", "alkimia-data", "anjuta-common",
    "apparmor", "apper-data", "apt", "aptitude-common", "ardour-data", "atril-common",
    "audacity-data", "baloo-kf5", "binutils-common", "bison", "bluedevil", "bluefish-data",
    "brasero-common", "budgie-control-center-data", "caja-common", "calligra-data",
    "calligraplan", "calligrasheets-data", "calligrawords-data", "cinnamon-l10n",
    "claws-mail-i18n", "clisp", "coreutils", "cryptsetup-bin", "darktable", "debconf-i18n",
    "dia-common", "digikam-data", "dino-im-common", "dolphin", "dolphin-plugins", "dpkg",
    "dupeguru", "easyeffects", "ebook-speaker", "engrampa-common", "eom-common",
    "evince-common", "evolution-common", "evolution-data-server-common", "falkon",
    "filezilla-common", "fp-utils-3.2.2", "freeciv-data", "freedink-engine", "fvwm", "fvwm3",
    "gcc-12-locales", "geany-common", "geary", "gedit-common", "gettext", "gimp-data",
    "gimp-plugin-registry", "git", "gitg", "gmpc-plugins", "gnome-calls",
    "gnome-control-center-data", "gnome-maps", "gnome-shell-common",
    "gnome-shell-extensions-extra", "gnome-software-common", "gnucash-common",
    "gnumeric-common", "gramps", "grass-core", "grep", "grub-common", "gthumb-data",
    "gtranslator", "gucharmap", "guvcview", "handbrake", "hexchat-common", "inkscape",
    "iso-codes", "k3b-i18n", "kalendar", "kalgebra-common", "kamera", "karbon", "kate5-data",
    "kde-cli-tools-data", "kde-config-mobile-networking", "kde-config-screenlocker",
    "kde-config-tablet", "kde-config-telepathy-accounts", "kde-style-oxygen-qt5",
    "kde-telepathy-data", "kde-telepathy-desktop-applets", "kde-telepathy-text-ui",
    "kdeconnect", "kdenlive-data", "kdepim-addons", "kdepim-runtime", "kdepim-themeeditors",
    "kdeplasma-addons-data", "kdevelop-l10n", "kdiff3", "kexi-data", "kf5-messagelib-data",
    "kinfocenter", "kio-audiocd", "kio-extras-data", "kipi-plugins-common", "kleopatra",
    "kmail", "kmymoney-common", "knotes", "konq-plugins", "konqueror", "konsolekalendar",
    "kscreen", "ksirk", "kwalletmanager", "kwin-data", "latte-dock", "lepton-eda", "lgeneral",
    "libgammu-i18n", "libglib2.0-data", "libgtk-3-common", "libgtk-4-common",
    "libgtk2.0-common", "libgweather-4-common", "libkf5akonadicalendar-data",
    "libkf5purpose-bin", "libkf5sysguard-data", "libkf5wallet-data", "libokteta-l10n",
    "linuxcnc-uspace", "man-db", "marble-data", "marco-common", "mate-desktop-common",
    "mate-panel-common", "meld", "menu", "milou", "mkvtoolnix", "nautilus-data", "needrestart",
    "okteta", "okular", "okular-extra-backends", "pacman-package-manager", "picard",
    "pidgin-data", "planner-data", "plasma-bigscreen", "plasma-browser-integration",
    "plasma-desktop-data", "plasma-dialer", "plasma-discover-common", "plasma-mobile",
    "plasma-nano", "plasma-nm", "plasma-pa", "plasma-remotecontrollers", "plasma-sdk",
    "plasma-settings", "plasma-systemmonitor", "plasma-thunderbolt", "plasma-workspace-data",
    "postgresql-15", "postgresql-client-15", "powerdevil-data", "print-manager",
    "python3-django", "python3-django-horizon", "python3-django-recurrence",
    "python3-django-treebeard", "rhythmbox-data", "rocs", "ruby-gettext", "sed",
    "shotwell-common", "shutter", "step", "sudo", "sympa", "synaptic", "tar", "texinfo",
    "thunar-data", "totem-common", "util-linux-locales", "vlc-l10n", "wdiff", "wget",
    "wmaker-common", "xfce4-panel", "xine-ui", "xournalpp", "yapet",
)
# Whole packages kept out of train/valid/test: their pairs form ``test_unseen``. Four desktop
# apps of different domains (git GUI, image viewer, diff tool, note taking), ~1k messages each.
HELD_OUT_PACKAGES: tuple[str, ...] = ("gitg", "gthumb-data", "meld", "xournalpp")


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


def _run(cmd: Sequence[str], cwd: Path | None = None, timeout: float = 1800) -> tuple[int, str]:
    try:
        res = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True,
                             timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 1, str(err)
    return res.returncode, (res.stderr or res.stdout).strip()


def _find_deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    if len(found) > 1:
        logger.warning("%s: several .deb files in %s, using %s", package, debs, found[-1].name)
    return found[-1] if found else None


def extract_catalogs(deb: Path, dest: Path, langs: Sequence[str] = LANGS) -> int:
    """``dpkg-deb -x`` ``deb`` into a temporary folder and move its ``langs`` catalogs to
    ``dest/{VERSION,<lang>/*.mo}`` (atomically: ``dest`` appears complete or not at all).
    Returns the number of catalogs kept."""
    rc, version = _run(["dpkg-deb", "-f", str(deb), "Version"])
    if rc != 0 or not version:
        raise DataPrepError(f"{deb}: dpkg-deb cannot read its version: {version}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        root, staging = Path(tmp) / "root", Path(tmp) / "catalogs"
        rc, err = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if rc != 0:
            raise DataPrepError(f"{deb}: dpkg-deb -x failed: {err}")
        kept = 0
        for lang in langs:
            for base in ("usr/share/locale", "usr/share/locale-langpack"):
                folder = root / base / lang / "LC_MESSAGES"
                for mo in sorted(folder.glob("*.mo")) if folder.is_dir() else ():
                    if mo.is_file():  # symlinks to other packages' files are skipped
                        (staging / lang).mkdir(parents=True, exist_ok=True)
                        target = staging / lang / mo.name
                        if target.exists():  # the same domain in locale and locale-langpack
                            target = staging / lang / f"langpack-{mo.name}"
                        shutil.copyfile(mo, target)
                        kept += 1
        staging.mkdir(exist_ok=True)
        (staging / "VERSION").write_text(version + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    return kept


def fetch_catalogs(packages: Sequence[str], cache: Path) -> dict[str, str]:
    """Download and extract ``packages`` into ``cache``; packages already extracted are
    skipped. Returns ``{package: reason}`` of the packages that could not be fetched."""
    debs, catalogs = cache / "debs", cache / "catalogs"
    debs.mkdir(parents=True, exist_ok=True)
    todo = [p for p in packages if not (catalogs / p / "VERSION").is_file()]
    missing = [p for p in todo if _find_deb(debs, p) is None]
    failures: dict[str, str] = {}
    if missing:
        logger.info("apt-get download of %d packages into %s", len(missing), debs)
        rc, err = _run(["apt-get", "download", "-q", *missing], cwd=debs)
        if rc != 0:  # one unknown name fails the whole call: retry one by one
            logger.warning("apt-get download failed (%s); retrying package by package",
                           err.splitlines()[-1] if err else rc)
            for p in missing:
                if _find_deb(debs, p) is None:
                    rc, err = _run(["apt-get", "download", "-q", p], cwd=debs)
                    if rc != 0:
                        failures[p] = (err.splitlines() or [f"exit status {rc}"])[-1]
    for i, p in enumerate(todo, 1):
        if p in failures:
            continue
        deb = _find_deb(debs, p)
        if deb is None:
            failures[p] = "apt-get download gave no .deb file"
            continue
        try:
            n = extract_catalogs(deb, catalogs / p)
        except DataPrepError as err:
            failures[p] = str(err)
            continue
        logger.info("  [%d/%d] %s: %d catalogs", i, len(todo), deb.name, n)
    for p, reason in sorted(failures.items()):
        logger.warning("package %s not fetched: %s", p, reason)
    return failures


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


class SplitKey:
    """The normalised form of a sentence that splits and deduplication compare: what the
    tokenize step makes of it (Moses punctuation normalisation and tokenizer), casefolded and
    whitespace-collapsed. Memoised (catalogs repeat strings)."""

    def __init__(self, lang: str, aggressive_dash: bool = False) -> None:
        self.moses = MosesProcessor(lang, normalize_punct=True, aggressive_dash=aggressive_dash)
        self.memo: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        key = self.memo.get(text)
        if key is None:
            key = self.memo[text] = normalize_source(self.moses(text))
        return key


def split_of(key: str, valid_frac: float, test_frac: float) -> str:
    """train/valid/test by a SHA-256 of a normalised source (independent of any seed)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    x = int.from_bytes(digest[:8], "big") / 2.0**64
    return "valid" if x < valid_frac else "test" if x < valid_frac + test_frac else "train"


@dataclass
class CatalogCorpus:
    """The cleaned pairs of one language pair, per split, with per-package statistics."""

    splits: dict[str, list[tuple[str, str]]]
    packages: list[dict]
    cleaning: dict[str, int]
    unseen_dropped: int
    normalised_duplicates: int = 0


def package_catalogs(catalog_dir: Path, package: str, lang: str) -> list[Path]:
    """The package's catalogs of ``lang`` in name order."""
    folder = catalog_dir / package / lang
    return sorted(folder.glob("*.mo"), key=lambda p: p.name) if folder.is_dir() else []


def build_corpus(catalog_dir: Path, packages: Sequence[str], lang: str,
                 held_out: Iterable[str] = HELD_OUT_PACKAGES, valid_frac: float = 0.015,
                 test_frac: float = 0.015, cleaner: Cleaner | None = None,
                 src_lang: str = "en") -> CatalogCorpus:
    """Read, clean and split the ``lang`` catalogs of ``packages`` (train packages first,
    then held-out ones, each group in name order)."""
    cleaner = cleaner or Cleaner()
    src_key, tgt_key = SplitKey(src_lang), SplitKey(lang)
    seen_pairs: set[tuple[str, str]] = set()
    duplicates = 0
    held = set(held_out)
    order = sorted(p for p in packages if p not in held) + sorted(p for p in packages if p in held)
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    seen_sources: set[str] = set()
    unseen_dropped = 0
    stats = []
    for package in order:
        version_file = catalog_dir / package / "VERSION"
        version = (version_file.read_text(encoding="utf-8").strip()
                   if version_file.is_file() else "unknown")
        mos = package_catalogs(catalog_dir, package, lang)
        n_entries = n_pairs = 0
        for mo in mos:
            for context, src, tgt in catalog_pairs(read_mo(mo.read_bytes(), str(mo))):
                n_entries += src != ""
                pair = cleaner.clean(context, src, tgt)
                if pair is None:
                    continue
                key = src_key(pair[0])
                both = (key, tgt_key(pair[1]))
                if both in seen_pairs:
                    duplicates += 1
                    continue
                seen_pairs.add(both)
                if package in held:
                    if key in seen_sources:
                        unseen_dropped += 1
                        continue
                    splits["test_unseen"].append(pair)
                else:
                    seen_sources.add(key)
                    splits[split_of(key, valid_frac, test_frac)].append(pair)
                n_pairs += 1
        stats.append({"package": package, "version": version, "catalogs": len(mos),
                      "messages": n_entries, "pairs": n_pairs, "held_out": package in held})
    stats.sort(key=lambda s: s["package"])
    return CatalogCorpus(splits, stats, dict(cleaner.counts), unseen_dropped, duplicates)


def corpus_stats(pairs: Sequence[tuple[str, str]]) -> dict:
    """Pairs and mean/median whitespace tokens per side."""
    out: dict = {"pairs": len(pairs)}
    for side, name in ((0, "src"), (1, "tgt")):
        lengths = [len(p[side].split()) for p in pairs] or [0]
        out[f"{name}_tokens_mean"] = round(statistics.fmean(lengths), 2)
        out[f"{name}_tokens_median"] = statistics.median(lengths)
    return out


# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------


class DebianPipeline(WmtPipeline):
    """The WMT text steps on the catalog corpus (all splits normalized alike, no second
    length cleaning: the corpus step did it on words), plus the ``test_unseen`` split."""

    STEPS = ("corpus", "tokenize", "bpe_learn", "bpe_apply", "binarize", "manifest")

    def __init__(self, recipe: TaskRecipe, out: Path, catalog_dir: Path, packages: Sequence[str],
                 held_out: Sequence[str], failures: dict[str, str], workers: int,
                 valid_frac: float = 0.015, test_frac: float = 0.015) -> None:
        super().__init__(recipe, out, out / "orig", workers)
        self.catalog_dir, self.packages, self.held_out = catalog_dir, list(packages), held_out
        self.failures, self.valid_frac, self.test_frac = failures, valid_frac, test_frac
        self.cleaner = Cleaner()
        self.versions = {p: (catalog_dir / p / "VERSION").read_text(encoding="utf-8").strip()
                         for p in self.packages}

    def _params(self, step: str) -> dict:
        params = super()._params(step)
        params.pop("raw_dir")
        if step == "corpus":
            params.update(versions=self.versions, held_out=sorted(self.held_out),
                          clean=self.cleaner.params(), valid=self.valid_frac,
                          test=self.test_frac, catalog_dir=str(self.catalog_dir.resolve()),
                          split_key="moses-normalised, tokenized, casefolded")
        if step == "bpe_learn":
            params["bpe_tokens"] = self.r.bpe_tokens
        return params

    def _corpus(self) -> None:
        corpus = build_corpus(self.catalog_dir, self.packages, self.r.tgt, self.held_out,
                              self.valid_frac, self.test_frac, self.cleaner, self.r.src)
        files = [self.side(s, lang, self.raw) for s in SPLITS for lang in self.r.langs]
        with atomic_text_files(files) as handles:
            for i, split in enumerate(SPLITS):
                fs, ft = handles[2 * i], handles[2 * i + 1]
                for s, t in corpus.splits[split]:
                    fs.write(s + "\n")
                    ft.write(t + "\n")
        atomic_write_json(self.raw / "corpus.json", {
            "packages": corpus.packages, "cleaning": corpus.cleaning,
            "test_unseen_dropped_seen_source": corpus.unseen_dropped,
            "normalised_duplicates": corpus.normalised_duplicates,
            "splits": {s: corpus_stats(p) for s, p in corpus.splits.items()}})
        for split in SPLITS:
            logger.info("  %s: %d pairs", split, len(corpus.splits[split]))
        if not corpus.splits["train"] or not corpus.splits["valid"] or not corpus.splits["test"]:
            raise DataPrepError(
                f"task {self.r.name}: the catalogs in {self.catalog_dir} give too few pairs "
                f"(train {len(corpus.splits['train'])}, valid {len(corpus.splits['valid'])}, "
                f"test {len(corpus.splits['test'])}); add packages")

    def _has_unseen(self) -> bool:
        return (self.raw / f"test_unseen.{self.r.src}").stat().st_size > 0

    def _tokenize(self) -> None:
        stems = {"train": "train.tok", "valid": "valid", "test": "test"}
        splits = [s for s in SPLITS if s != "test_unseen" or self._has_unseen()]
        for split in splits:
            corpus = Corpus(split, "plain", {lang: f"{split}.{lang}" for lang in self.r.langs},
                            "")
            raw = self.pair(f"{split}.detok", self.tok) if split.startswith("test") else []
            self._process_corpora([corpus], self.pair(stems.get(split, split)), train=True,
                                  raw_outputs=raw)

    def _binarize(self) -> None:
        tok = self.tok
        extra = ["--testpref", f"{tok / 'test'},{tok / 'test_unseen'}"] if self._has_unseen() \
            else []
        fairseq_preprocess(tok, self.bin, self.r.src, self.r.tgt, True, self.workers, extra)
        for f in sorted(self.bin.glob("test1.*")):
            os.replace(f, f.with_name("test_unseen" + f.name[len("test1"):]))

    def _manifest(self) -> None:
        corpus = json.loads((self.raw / "corpus.json").read_text(encoding="utf-8"))
        vocab = sum(1 for _ in read_lines(self.bin / f"dict.{self.r.src}.txt"))
        atomic_write_json(self.out / "manifest.json", {
            "task": self.r.name, "source": "Debian gettext catalogs (apt-get download)",
            "catalog_dir": str(self.catalog_dir), "held_out_packages": sorted(self.held_out),
            "packages": corpus["packages"],
            "failures": [{"package": p, "reason": r} for p, r in sorted(self.failures.items())],
            "cleaning": corpus["cleaning"],
            "test_unseen_dropped_seen_source": corpus["test_unseen_dropped_seen_source"],
            "normalised_duplicates": corpus.get("normalised_duplicates", 0),
            "splits": corpus["splits"], "bpe_merges": self.r.bpe_tokens,
            "vocabulary_size": vocab + 4,  # dict.txt lists all but <s> <pad> </s> <unk>
            "vocabulary_note": "fairseq joined dictionary (BPE types + 4 special symbols)"})

    def run(self) -> Path:
        """Run every step (skipping finished ones); return the data-bin folder."""
        raw_files = [self.side(s, lang, self.raw) for s in SPLITS for lang in self.r.langs]
        self.step("corpus", raw_files + [self.raw / "corpus.json"], self._corpus)
        splits = ["train.tok", "valid", "test"] + (["test_unseen"] if self._has_unseen() else [])
        self.step("tokenize", [p for s in splits for p in self.pair(s)], self._tokenize)
        codes = self.tok / "code"
        self.step("bpe_learn", [codes],
                  lambda: learn_bpe(self.pair("train.tok"), codes, self.r.bpe_tokens,
                                    self.workers))
        stems = {"train": "train.tok", **{s: s for s in splits[1:]}}
        final = [self.side(s, lang, self.tok) for s in stems for lang in self.r.langs]
        self.step("bpe_apply", final, lambda: self._apply_bpe(codes, stems, self.tok, ""))
        self.step("binarize", [self.bin / f"dict.{lang}.txt" for lang in self.r.langs],
                  self._binarize)
        self.step("manifest", [self.out / "manifest.json"], self._manifest)
        return self.bin


def prepare_debian(recipe: TaskRecipe, out: Path, catalog_dir: Path | None = None,
                   cache: Path = DEFAULT_CACHE, workers: int = 1,
                   packages: Sequence[str] | None = None,
                   held_out: Sequence[str] = HELD_OUT_PACKAGES) -> Path:
    """Prepare a ``debian.en-*`` task into ``out``; return its data-bin folder.

    Without ``catalog_dir`` the packages are fetched into ``cache`` (``catalogs/`` there is
    used); with it, its ``<package>/{VERSION,<lang>/*.mo}`` folders are used as they are
    (``packages`` defaults to all of them).
    """
    failures: dict[str, str] = {}
    if catalog_dir is None:
        packages = list(packages or DEBIAN_PACKAGES)
        start = time.monotonic()
        failures = fetch_catalogs(packages, Path(cache))
        logger.info("fetched %d/%d packages in %.0fs", len(packages) - len(failures),
                    len(packages), time.monotonic() - start)
        catalog_dir = Path(cache) / "catalogs"
    else:
        catalog_dir = Path(catalog_dir)
        if not catalog_dir.is_dir():
            raise DataPrepError(f"task {recipe.name}: catalog folder {catalog_dir} is not a "
                                "directory (expected <package>/VERSION and <package>/<lang>/*.mo)")
        if packages is None:
            packages = sorted(p.name for p in catalog_dir.iterdir()
                              if (p / "VERSION").is_file())
    usable = [p for p in packages if p not in failures and (catalog_dir / p / "VERSION").is_file()]
    for p in packages:
        if p not in failures and p not in usable:
            failures[p] = f"no {catalog_dir / p / 'VERSION'}"
    if not usable:
        raise DataPrepError(f"task {recipe.name}: no package catalogs in {catalog_dir} "
                            f"({len(failures)} packages failed); see the log")
    logger.info("preparing %s from %d packages' catalogs in %s (BPE %d merges)", recipe.name,
                len(usable), catalog_dir, recipe.bpe_tokens)
    pipeline = DebianPipeline(recipe, Path(out), catalog_dir, usable,
                              [p for p in held_out if p in usable], failures, workers)
    data_bin = pipeline.run()
    logger.info("%s ready: %s (manifest %s)", recipe.name, data_bin, Path(out) / "manifest.json")
    return data_bin
