"""Debian gettext catalogs (hat.data.debian): .mo parsing, cleaning, splits, the pipeline."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hat.corpora import task_recipe
from hat.data import catalogs as cat
from hat.data import debian as deb
from hat.data import prepare as prep
from hat.data.recipes import DataPrepError
from tests.conftest import ROOT

# ---------------------------------------------------------------------------------------------
# A tiny .mo writer
# ---------------------------------------------------------------------------------------------


def write_mo(path: Path, messages: dict[str, str], big_endian: bool = False,
             nplurals: int = 2) -> Path:
    """Write a GNU .mo file: keys are msgid (``ctx\\x04id``, ``id\\x00plural``), values msgstr
    (plural forms ``\\x00``-separated); the header is added."""
    header = ("Content-Type: text/plain; charset=UTF-8\n"
              f"Plural-Forms: nplurals={nplurals}; plural=(n != 1);\n")
    items = sorted({"": header, **messages}.items(), key=lambda kv: kv[0].encode())
    order = ">" if big_endian else "<"
    ids = [k.encode() for k, _ in items]
    strs = [v.encode() for _, v in items]
    n = len(items)
    orig_off, trans_off = 28, 28 + 8 * n
    data_off = trans_off + 8 * n
    blob, orig_tab, trans_tab = b"", [], []
    for table, strings in ((orig_tab, ids), (trans_tab, strs)):
        for s in strings:
            table.append((len(s), data_off + len(blob)))
            blob += s + b"\x00"
    out = struct.pack(order + "7I", cat.MO_MAGIC, 0, n, orig_off, trans_off, 0, 0)
    for length, off in orig_tab + trans_tab:
        out += struct.pack(order + "2I", length, off)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out + blob)
    return path


MESSAGES = {
    "Open file": "Datei öffnen",
    "adjective\x04Open": "Offen",
    "verb\x04Open": "Öffnen",
    "%d file\x00%d files": "%d Datei\x00%d Dateien",
    "Untranslated": "",
}


@pytest.mark.parametrize("big_endian", [False, True])
def test_read_mo_context_plural_header(tmp_path: Path, big_endian: bool) -> None:
    mo = write_mo(tmp_path / "a.mo", MESSAGES, big_endian)
    entries = cat.read_mo(mo.read_bytes())
    by_id = {(e.context, e.msgid): e for e in entries}
    assert by_id[(None, "")].msgstrs[0].startswith("Content-Type")
    assert by_id[("verb", "Open")].msgstrs == ("Öffnen",)
    assert by_id[("adjective", "Open")].msgstrs == ("Offen",)
    plural = by_id[(None, "%d file")]
    assert plural.msgid_plural == "%d files" and plural.msgstrs == ("%d Datei", "%d Dateien")
    assert cat.plural_count(entries) == 2
    pairs = list(cat.catalog_pairs(entries))
    assert (None, "%d files", "%d Dateien") in pairs
    assert ("verb", "Open", "Öffnen") in pairs and ("adjective", "Open", "Offen") in pairs
    # three plural forms: the singular only
    three = cat.read_mo(write_mo(tmp_path / "b.mo", MESSAGES, nplurals=3).read_bytes())
    assert not any(src == "%d files" for _, src, _ in cat.catalog_pairs(three))


def test_read_mo_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataPrepError, match="magic"):
        cat.read_mo(b"\x00" * 40, "x.mo")
    with pytest.raises(DataPrepError, match="shorter"):
        cat.read_mo(b"\xde\x12", "x.mo")
    data = write_mo(tmp_path / "a.mo", MESSAGES).read_bytes()
    with pytest.raises(DataPrepError, match="past the end"):
        cat.read_mo(data[:60], "cut.mo")


def test_cleaning_rules_each_counted() -> None:
    c = cat.Cleaner()
    cases = [
        ((None, "", "Content-Type: x"), None, "header"),
        ((None, "Save", "  "), None, "empty_translation"),
        (("NAME OF TRANSLATORS", "Your names", "Max Muster"), None, "translator_credits"),
        ((None, "translator-credits", "Max"), None, "translator_credits"),
        ((None, "<br/>", "<br/>"), None, "markup_only"),
        ((None, "%s: %d", "%s : %d"), None, "placeholder_only"),
        ((None, "{0} / %(name)s $HOME", "{0} / %(name)s $HOME!"), None, "placeholder_only"),
        ((None, "https://example.org/a", "https://example.org/b"), None, "placeholder_only"),
        ((None, "/usr/share/doc", "/usr/share/doc/"), None, "placeholder_only"),
        ((None, "Window", "Window"), None, "untranslated"),
        ((None, " ".join(["word"] * 81), " ".join(["Wort"] * 81)), None, "length"),
        ((None, "Go", "Bitte gehen Sie jetzt sofort weiter"), None, "length_ratio"),
        ((None, "_File", "_Datei"), ("File", "Datei"), "accelerator_removed"),
        ((None, "&Open", "Ö&ffnen"), ("Open", "Öffnen"), "accelerator_removed"),
        ((None, "~Edit", "~Bearbeiten"), ("Edit", "Bearbeiten"), "accelerator_removed"),
        ((None, "Save && Quit", "Speichern && Beenden"), ("Save & Quit", "Speichern & Beenden"),
         "accelerator_removed"),
        ((None, "Line one\nline  two", "Zeile eins\nZeile zwei"),
         ("Line one line two", "Zeile eins Zeile zwei"), "whitespace_normalized"),
        ((None, "<b>Bold</b> text", "<b>Fetter</b> Text"), ("Bold text", "Fetter Text"),
         "markup_stripped"),
        ((None, "File", "Datei"), None, "duplicate_pair"),  # "_File" -> "File" came first
    ]
    for args, expected, rule in cases:
        before = dict(c.counts)
        assert c.clean(*args) == expected, (args, rule)
        changed = {k for k in c.counts if c.counts[k] != before[k]}
        assert rule in changed, (args, rule, changed)
    assert c.clean(None, "my_var_name is wrong", "my_var_name ist falsch") == (
        "my_var_name is wrong", "my_var_name ist falsch")  # identifiers keep underscores
    assert c.clean(None, "Tom &amp; Jerry", "Tom &amp; Jerry!") == ("Tom & Jerry", "Tom & Jerry!")
    assert set(c.counts) == set(cat.CLEAN_RULES + cat.EDIT_RULES)


def test_installed_catalogs_parse_and_clean() -> None:
    mos = sorted(Path("/usr/share/locale/de/LC_MESSAGES").glob("*.mo"))
    if not mos:
        pytest.skip("no German catalogs installed under /usr/share/locale/de/LC_MESSAGES")
    c = cat.Cleaner()
    kept = 0
    for mo in mos:
        for ctx, src, tgt in cat.catalog_pairs(cat.read_mo(mo.read_bytes(), str(mo))):
            pair = c.clean(ctx, src, tgt)
            if pair is not None:
                kept += 1
                assert "\n" not in pair[0] + pair[1] and pair[0] != pair[1]
                assert 1 <= len(pair[0].split()) <= 80
    assert kept > 100 and c.counts["header"] >= 1


# ---------------------------------------------------------------------------------------------
# Fake catalogs, splits, pipeline
# ---------------------------------------------------------------------------------------------

WORDS = ("open save close file folder window print copy paste delete rename move search "
         "settings network account password user image color").split()


def fake_catalogs(root: Path, packages: int = 6, per_package: int = 300) -> Path:
    """``root/<pkg>/{VERSION,de/*.mo,fr/*.mo}`` with generated messages (some shared)."""
    for p in range(packages):
        pkg = root / f"pkg{p}"
        messages = {}
        for i in range(per_package):
            k = (p * 7919 + i * 104729) % 9973 if i % 10 else i  # 1 in 10 shared by packages
            words = [WORDS[(k >> s) % len(WORDS)] for s in (0, 3, 6, 9)][: 1 + k % 4]
            src = " ".join(words + [f"n{k}"]).capitalize()
            messages[src] = " ".join(w[::-1] for w in src.split()).capitalize()
        messages["_Quit"] = "_Beenden"
        for lang in ("de", "fr"):
            write_mo(pkg / lang / f"pkg{p}.mo", messages, big_endian=p % 2 == 1)
        (pkg / "VERSION").write_text(f"1.{p}-1\n")
    return root


@pytest.mark.slow
def test_splits_deterministic_disjoint_held_out(tmp_path: Path) -> None:
    catdir = fake_catalogs(tmp_path / "cat")
    for pkg, tgt in (("pkg4", "Die Scheibe brennen"), ("pkg5", "Scheibe brennen")):
        write_mo(catdir / pkg / "de" / "zz.mo", {"Burn the shared disc": tgt})
    pkgs = [f"pkg{p}" for p in range(6)]
    kw = dict(held_out=["pkg5"], valid_frac=0.1, test_frac=0.1, valid_unseen=["pkg4"])
    a = deb.build_corpus(catdir, list(reversed(pkgs)), "de", **kw)
    assert a.splits == deb.build_corpus(catdir, pkgs, "de", **kw).splits
    sources = {s: {cat.normalize_source(x) for x, _ in a.splits[s]} for s in deb.SPLITS}
    for i, s in enumerate(deb.SPLITS):
        for t in deb.SPLITS[i + 1:]:
            assert not sources[s] & sources[t], (s, t)
    assert all(a.splits[s] for s in deb.SPLITS)

    def package_sources(pkg: str) -> set[str]:
        return {cat.normalize_source(src) for mo in (catdir / pkg / "de").glob("*.mo")
                for _, src, _ in cat.catalog_pairs(cat.read_mo(mo.read_bytes()))}

    trained = set().union(*(package_sources(p) for p in pkgs[:4]))
    others = trained | package_sources("pkg4")
    only_held_out = package_sources("pkg5") - others
    seen = sources["train"] | sources["valid"] | sources["test"]
    assert only_held_out and not only_held_out & seen
    assert only_held_out - {"", "_quit"} <= sources["test_unseen"]
    assert not sources["test_unseen"] & others  # shared strings are not "unseen"
    only_valid_unseen = package_sources("pkg4") - trained  # valid_unseen: pkg4 alone
    assert only_valid_unseen - {"", "_quit"} <= sources["valid_unseen"]
    assert not sources["valid_unseen"] & (trained | seen)
    # a string of both unseen packages and no trained one: in valid_unseen only
    shared = cat.normalize_source("Burn the shared disc")
    assert shared in sources["valid_unseen"] and shared not in sources["test_unseen"]
    held = {p["package"]: p["held_out"] for p in a.packages}
    assert held["pkg5"] == "test_unseen" and held["pkg4"] == "valid_unseen" and not held["pkg0"]
    # independent of PYTHONHASHSEED
    code = ("import json,sys; from pathlib import Path; from hat.data import debian as d; "
            "c = d.build_corpus(Path(sys.argv[1]), [f'pkg{p}' for p in range(6)], 'de', "
            "held_out=['pkg5'], valid_frac=0.1, test_frac=0.1, valid_unseen=['pkg4']); "
            "print(json.dumps(c.splits))")
    outs = [subprocess.run([sys.executable, "-c", code, str(catdir)], cwd=ROOT, check=True,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")]
    assert outs[0] == outs[1] == json.dumps(a.splits) + "\n"


@pytest.fixture(scope="module")
def debian_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("debian")
    cat = fake_catalogs(root / "catalogs", packages=6, per_package=400)
    for fake, real in (("pkg5", "gitg"), ("pkg4", "geany-common")):  # held out in the real list
        shutil.copytree(cat / fake, cat / real)
        shutil.rmtree(cat / fake)
    assert prep.main(["--task", "debian.en-de", "--raw-dir", str(cat), "--out",
                      str(root / "out"), "--quiet"]) == 0
    return root / "out"


def test_pipeline_on_catalog_folder(debian_bin: Path, tmp_path: Path) -> None:
    names = {p.name for p in (debian_bin / "data-bin").iterdir()}
    for split in ("train", "valid", "test", "valid_unseen", "test_unseen"):
        assert f"{split}.en-de.en.bin" in names and f"{split}.en-de.de.idx" in names
    assert not [n for n in names if n.startswith(("valid1", "test1"))]
    assert (debian_bin / "tokenized" / "test_unseen.detok.de").is_file()
    man = json.loads((debian_bin / "manifest.json").read_text())
    assert [p["package"] for p in man["packages"]] == ["geany-common", "gitg"] + [
        f"pkg{i}" for i in range(4)]
    assert [p["held_out"] for p in man["packages"][:3]] == ["valid_unseen", "test_unseen", False]
    assert man["valid_unseen_packages"] == ["geany-common"]
    assert man["packages"][2]["version"] == "1.0-1"
    assert man["cleaning"]["accelerator_removed"] > 0 and man["cleaning"]["duplicate_pair"] > 0
    assert set(man["splits"]) == set(deb.SPLITS) and man["vocabulary_size"] > 4
    assert man["splits"]["train"]["pairs"] > 1000 and man["failures"] == []
    # same catalogs in another folder: byte-identical splits
    out2 = tmp_path / "again"
    cat = Path(man["catalog_dir"])
    deb.prepare_debian(task_recipe("debian.en-de"), out2, catalog_dir=cat)
    for split in deb.SPLITS:
        for lang in ("en", "de"):
            a = (debian_bin / "orig" / f"{split}.{lang}").read_bytes()
            assert a == (out2 / "orig" / f"{split}.{lang}").read_bytes()


def test_rerun_skips_and_bad_catalog_dir(debian_bin: Path, capsys) -> None:
    cat = json.loads((debian_bin / "manifest.json").read_text())["catalog_dir"]
    outputs = [p for p in debian_bin.rglob("*") if p.is_file() and p.name != "manifest.json"]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    prep.prepare("debian.en-de", debian_bin, raw_dir=Path(cat))
    assert {p: p.stat().st_mtime_ns for p in outputs} == before  # every step skipped
    assert prep.main(["--task", "debian.en-fr", "--raw-dir", str(debian_bin / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_fetch_with_fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    tree = tmp_path / "tree"
    write_mo(tree / "usr/share/locale/de/LC_MESSAGES/good.mo", MESSAGES)
    write_mo(tree / "usr/share/locale/fr/LC_MESSAGES/good.mo", MESSAGES)
    write_mo(tree / "usr/share/locale/it/LC_MESSAGES/good.mo", MESSAGES)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        "Package: good\nVersion: 1.2-3\nArchitecture: all\nMaintainer: x <x@y.z>\n"
        "Description: test\n")
    built = tmp_path / "good_1.2-3_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(built)], check=True,
                   capture_output=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"  # copies good's .deb, fails for any other name
    fake.write_text(f"#!/bin/sh\nshift 2\nfor p in \"$@\"; do\n  if [ \"$p\" = good ]; then "
                    f"cp {built} .; else echo \"E: Unable to locate package $p\" >&2; exit 100; "
                    "fi\ndone\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cache = tmp_path / "cache"
    failures = deb.fetch_catalogs(["good", "missing"], cache)
    assert list(failures) == ["missing"] and "Unable to locate" in failures["missing"]
    got = sorted(p.relative_to(cache / "catalogs").as_posix()
                 for p in (cache / "catalogs").rglob("*") if p.is_file())
    assert got == ["good/VERSION", "good/de/good.mo", "good/fr/good.mo"]
    assert (cache / "catalogs/good/VERSION").read_text() == "1.2-3\n"
    (cache / "debs" / built.name).unlink()
    assert deb.fetch_catalogs(["good"], cache) == {}  # extracted already: no download


@pytest.mark.slow
def test_binarized_catalogs_train_a_tiny_supertransformer(debian_bin: Path,
                                                          tmp_path: Path) -> None:
    tiny = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
    res = subprocess.run(
        [sys.executable, "train.py", str(debian_bin / "data-bin"), f"--configs={tiny}",
         "--source-lang", "en", "--target-lang", "de", "--save-dir", str(tmp_path / "ck"),
         "--max-tokens", "1024", "--max-update", "3", "--warmup-updates", "2",
         "--num-workers", "0", "--disable-validation", "--no-save"],
        cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "num_updates" in res.stdout + res.stderr


def test_split_and_dedup_on_the_tokenized_normalised_source(tmp_path: Path) -> None:
    """Strings that differ only in ellipsis, quote or space characters become one sentence after
    tokenization: they share a split, and equal pairs are kept once (and counted)."""
    variants = [("Open\u2026", "\u00d6ffnen\u2026"), ("Open...", "\u00d6ffnen..."),
                ("\u201cOpen\u201d", "\u201e\u00d6ffnen\u201c"), ('"Open"', '"\u00d6ffnen"'),
                ("Save  the file\u2026", "Datei speichern\u2026"),
                ("Save the file...", "Die Datei speichern...")]
    root = tmp_path / "cat"
    for p in range(40):  # many packages, so the variants would land in several splits by chance
        msgs = {f"Message {p} {i}": f"Nachricht {p} {i}" for i in range(30)}
        src, tgt = variants[p % len(variants)]
        msgs[src] = tgt
        write_mo(root / f"pkg{p}" / "de" / f"pkg{p}.mo", msgs)
        (root / f"pkg{p}" / "VERSION").write_text("1\n")
    c = deb.build_corpus(root, [f"pkg{p}" for p in range(40)], "de", held_out=[],
                         valid_frac=0.3, test_frac=0.3)
    key = deb.SplitKey("en")
    where: dict[str, set[str]] = {}
    for split, pairs in c.splits.items():
        for s, _ in pairs:
            where.setdefault(key(s), set()).add(split)
    assert key("Open\u2026") == key("Open...") and key("\u201cOpen\u201d") == key('"Open"')
    assert all(len(splits) == 1 for splits in where.values())
    kept = [(s, t) for pairs in c.splits.values() for s, t in pairs if "Message" not in s]
    # one of each normalised pair: Open..., "Open", and the two different Save translations
    assert len(kept) == 4, kept
    # exact repeats go to the cleaner's duplicate count; the two normalised twins are counted here
    assert c.normalised_duplicates == 2
