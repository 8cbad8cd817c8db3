"""Tests of the synthetic corpus and of the task recipes on tiny local raw files."""

from __future__ import annotations

import gzip
import hashlib
import logging
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from hat.corpora import task_recipe
from hat.data import fetch, recipes, text
from hat.data import prepare as prep
from hat.data import toy_corpus as toy
from hat.data.recipes import DataPrepError, TaskRecipe

# ---------------------------------------------------------------------------------------------
# Synthetic corpus
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def toy_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy.make_toy_corpus(tmp_path_factory.mktemp("toy"), seed=0)


def test_toy_corpus_is_deterministic() -> None:
    a = toy.generate_corpus(300, 20, 20, seed=0)
    assert a == toy.generate_corpus(300, 20, 20, seed=0)
    assert a["train"] != toy.generate_corpus(300, 20, 20, seed=1)["train"]


def test_toy_corpus_sizes_lengths_vocab() -> None:
    corpus = toy.generate_corpus(seed=0)
    assert {k: len(v) for k, v in corpus.items()} == {"train": 6000, "valid": 300, "test": 300}
    sources = [s for pairs in corpus.values() for s, _ in pairs]
    assert len(set(sources)) == len(sources)  # no overlap between splits
    vocab: set[str] = set()
    for s, t in corpus["train"]:
        for side in (s.split(), t.split()):
            assert toy.MIN_LEN <= len(side) <= toy.MAX_LEN
            assert side[-1] == "."
            vocab.update(side)
    assert 1000 <= len(vocab) <= 2000
    src_vocab = {w for s, _ in corpus["train"] for w in s.split()}
    tgt_vocab = {w for _, t in corpus["train"] for w in t.split()}
    assert src_vocab & tgt_vocab == {".", ","}


def _noun_genders(lex: toy.Lexicon) -> dict[str, tuple[str, str]]:
    """Target noun form -> (gender, number)."""
    out = {}
    for stem, gender in zip(lex.nouns_tgt, lex.genders):
        out[stem], out[stem + "n"] = (gender, "sg"), (gender, "pl")
    return out


def test_toy_corpus_reordering_and_agreement() -> None:
    lex = toy.build_lexicon()
    nouns = _noun_genders(lex)
    verb_forms = {v + sfx: key for v in lex.verbs_tgt for key, sfx in toy._VERB_SUFFIX.items()}
    src_verbs = {v + sfx for v in lex.verbs_src for sfx in ("e", "en")}
    det_keys = {word: key for key, word in toy._TGT_DET.items()}
    pairs = toy.generate_corpus(2000, 0, 0, seed=3)["train"]
    checked = 0
    for src, tgt in pairs:
        s, t = src.split(), tgt.split()
        if "," in s:
            continue
        # SVO -> SOV: source verb right after the subject NP, target verb last (after "ke").
        assert t[-3] == toy._OBJ_PARTICLE and t[-2] in verb_forms
        assert s[-2] not in src_verbs and any(w in src_verbs for w in s)
        # the subject: determiner, noun, adjectives agreeing in gender and number
        _, det_gender, det_number = det_keys[t[0]]
        assert nouns[t[1]] == (det_gender, det_number)
        i = 2
        while t[i][:-1] in lex.adjs_tgt:
            assert t[i][-1] == toy._ADJ_SUFFIX[det_gender, det_number]
            i += 1
        # the verb agrees with the subject noun
        assert verb_forms[t[-2]] == (det_gender, det_number)
        checked += 1
    assert checked > 1000


def test_toy_corpus_binarized(toy_bin: Path) -> None:
    from fairseq.data import Dictionary, data_utils

    root = toy_bin.parent
    assert toy_bin == root / "data-bin"
    src_dict = Dictionary.load(str(toy_bin / "dict.src.txt"))
    tgt_dict = Dictionary.load(str(toy_bin / "dict.tgt.txt"))
    assert src_dict.symbols == tgt_dict.symbols  # joined dictionary
    assert 1000 < len(src_dict) < 2100
    sizes = {"train": 6000, "valid": 300, "test": 300}
    for split, n in sizes.items():
        for lang, d in (("src", src_dict), ("tgt", tgt_dict)):
            for ext in ("bin", "idx"):
                assert (toy_bin / f"{split}.src-tgt.{lang}.{ext}").is_file()
            ds = data_utils.load_indexed_dataset(str(toy_bin / f"{split}.src-tgt.{lang}"), d)
            assert ds is not None and len(ds) == n
            first = (root / "raw" / f"{split}.{lang}").read_text().splitlines()[0]
            assert d.string(ds[0]) == first
    detok = (root / "raw" / "test.detok.tgt").read_text().splitlines()
    tok = (root / "raw" / "test.tgt").read_text().splitlines()
    assert len(detok) == 300 and detok[0] == toy.detokenize(tok[0]) and detok[0].endswith(".")
    assert " ." not in detok[0]


def test_toy_corpus_cached_and_separate_dicts(toy_bin: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import hat.data.text

    def no_rebuild(*a, **k):
        raise AssertionError("a complete corpus was binarized again")

    monkeypatch.setattr(hat.data.text, "fairseq_preprocess", no_rebuild)
    stamps = {f: f.stat().st_mtime_ns for f in toy_bin.iterdir()}
    assert toy.make_toy_corpus(toy_bin.parent, seed=0) == toy_bin  # cached: nothing rewritten
    assert {f: f.stat().st_mtime_ns for f in toy_bin.iterdir()} == stamps
    monkeypatch.undo()
    out = toy.make_toy_corpus(tmp_path, n_train=200, seed=1, joined_dictionary=False,
                              n_valid=10, n_test=10)
    assert (out / "dict.src.txt").read_text() != (out / "dict.tgt.txt").read_text()


# ---------------------------------------------------------------------------------------------
# Raw format parsing
# ---------------------------------------------------------------------------------------------


SGM = """<srcset setid="newstest2014" srclang="any">
<doc sysid="ref" docid="1" genre="news" origlang="en">
<h1>
<seg id="1">  Gutach: Noch mehr Sicherheit  </seg>
</h1>
<p>
<seg id="2">Die Ampel – sie ist „gut“.</seg>
</p>
</doc>
</srcset>
"""


def test_read_sgm_and_xml(tmp_path: Path) -> None:
    path = tmp_path / "t.sgm"
    path.write_text(SGM, encoding="utf-8")
    assert list(text.read_sgm(path)) == [
        "Gutach: Noch mehr Sicherheit", "Die Ampel – sie ist „gut“."]
    xml = tmp_path / "IWSLT14.TED.dev2010.de-en.de.xml"
    xml.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<srcset setid="x">\n'
                   '<doc docid="535" genre="lectures">\n<url>http://x</url>\n<talkid>535</talkid>\n'
                   '<title>Ein Titel</title>\n<seg id="1"> Ich bin’s. </seg>\n'
                   '<seg id="2">Zwei</seg>\n</doc>\n</srcset>\n</mteval>\n', encoding="utf-8")
    assert list(text.read_sgm(xml)) == ["Ich bin’s.", "Zwei"]


def test_read_iwslt_tags(tmp_path: Path) -> None:
    path = tmp_path / "train.tags.de-en.de"
    path.write_text("<url>http://www.ted.com/talks/x.html</url>\n<keywords>talks, a</keywords>\n"
                    "<talkid>1</talkid>\n<title>Al Gore: Ein Titel</title>\n"
                    "<description>TED Talk: etwas</description>\nVielen Dank, Chris.\n"
                    "Es ist mir eine Ehre.\n", encoding="utf-8")
    assert list(text.read_iwslt_tags(path)) == [
        "Al Gore: Ein Titel", "TED Talk: etwas", "Vielen Dank, Chris.", "Es ist mir eine Ehre."]


def test_read_tsv_gzip_and_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "x.de-en.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("Hallo\tHello\nnur deutsch\n\tonly english\na\rb\tc\n")
    assert fetch.resolve_raw(tmp_path, "x.de-en.tsv") == path
    assert list(text.read_tsv_column(path, 0)) == ["Hallo", "nur deutsch", "", "a\rb"]
    assert list(text.read_tsv_column(path, 1)) == ["Hello", "", "only english", "c"]


def test_clean_pairs_like_clean_corpus_n() -> None:
    pairs = [("a  b c", "x y z"), ("a", ""), ("a b c d", "x"), ("a|b c", "x y"),
             ("a " * 6, "b " * 5), ("a " * 8, "b " * 5)]
    assert list(text.clean_pairs(pairs, 1, 7, 1.5)) == [
        ("a b c", "x y z"), ("ab c", "x y"), ("a a a a a a", "b b b b b")]


def test_moses_processor_matches_recipe_options() -> None:
    wmt = text.MosesProcessor("en", normalize_punct=True, aggressive_dash=True)
    assert wmt("A well-known  “test”\x07 &") == "A well @-@ known &quot; test &quot; &amp;"
    iwslt_eval = text.MosesProcessor("de", fix_quotes=True, lowercase=True)
    assert iwslt_eval("Ich bin’s, Hans-Peter.") == "ich bin &apos; s , hans-peter ."


# ---------------------------------------------------------------------------------------------
# Task recipes end to end on tiny raw files
# ---------------------------------------------------------------------------------------------


def _text_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` natural-looking sentence pairs (capitalized, detokenized, with some hyphens)."""
    pairs = toy.generate_corpus(n, 0, 0, seed=seed)["train"]
    out = []
    for i, (s, t) in enumerate(pairs):
        s, t = toy.detokenize(s).capitalize(), toy.detokenize(t).capitalize()
        if i % 5 == 0:
            s, t = s.replace(" ", "-", 1), t.replace(" ", "-", 1)
        out.append((s, t))
    return out


def _write(path: Path, text: str, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _sgm_text(lines: list[str]) -> str:
    segs = "".join(f'<seg id="{i}">{line}</seg>\n' for i, line in enumerate(lines, 1))
    return ('<srcset setid="t" srclang="any">\n<doc docid="1">\n<p>\n'
            f"{segs}</p>\n</doc>\n</srcset>\n")


def make_raw(recipe: TaskRecipe, raw: Path, n_train: int = 40, n_eval: int = 8) -> dict:
    """Write tiny raw files in the layout ``recipe`` expects; return the eval sizes."""
    seed = 10
    for corpus in recipe.train:
        seed += 1
        pairs = _text_pairs(n_train, seed)
        sides = dict(zip(recipe.langs, zip(*pairs)))
        if corpus.kind == "plain":
            for i, lang in enumerate(recipe.langs):
                _write(raw / corpus.files[lang], "".join(x + "\n" for x in sides[lang]),
                       gz=corpus.name == "commoncrawl" and i == 0)
        elif corpus.kind == "tsv":
            order = sorted(recipe.langs, key=lambda lang: corpus.columns[lang])
            rows = zip(*(sides[lang] for lang in order))
            _write(raw / corpus.files[recipe.src], "".join("\t".join(r) + "\n" for r in rows),
                   gz=True)
        elif corpus.kind == "tags":
            for lang in recipe.langs:
                head = (f"<url>http://www.ted.com/talks/{lang}.html</url>\n"
                        "<keywords>talks, science</keywords>\n<talkid>7</talkid>\n"
                        f"<title>Title {lang}: Talk</title>\n"
                        f"<description>TED Talk {lang}: about it</description>\n")
                _write(raw / corpus.files[lang], head + "".join(x + "\n" for x in sides[lang]))
    sizes = {}
    for split, corpora in (("valid", recipe.valid), ("test", recipe.test)):
        sizes[split] = 0
        for corpus in corpora:
            seed += 1
            pairs = _text_pairs(n_eval, seed)
            for lang, side in zip(recipe.langs, zip(*pairs)):
                side = [side[0][:-1] + " it’s."] + list(side[1:])  # fixed to ' by the recipe
                _write(raw / corpus.files[lang], _sgm_text(side))
            sizes[split] += n_eval
    return sizes


def _check_data_bin(data_bin: Path, recipe: TaskRecipe, n_test: int) -> None:
    from fairseq.data import Dictionary, data_utils

    src, tgt = recipe.langs
    dicts = {lang: Dictionary.load(str(data_bin / f"dict.{lang}.txt")) for lang in recipe.langs}
    assert (dicts[src].symbols == dicts[tgt].symbols) == recipe.joined_dictionary
    for split in ("train", "valid", "test"):
        for lang in recipe.langs:
            ds = data_utils.load_indexed_dataset(str(data_bin / f"{split}.{src}-{tgt}.{lang}"),
                                                 dicts[lang])
            assert ds is not None and len(ds) > 0, (split, lang)
            if split == "test":
                assert len(ds) == n_test
    text = data_bin.parent / "tokenized"
    code_lines = (text / "code").read_text(encoding="utf-8").splitlines()
    assert code_lines[0].startswith("#version") and len(code_lines) <= 51
    train = (text / f"train.{src}").read_text(encoding="utf-8")
    assert "@@ " in train
    assert (train == train.lower()) == recipe.lowercase


@pytest.mark.parametrize("task", ["wmt14.en-de", "wmt19.en-de", "iwslt14.de-en"])
def test_task_end_to_end(task: str, tmp_path: Path) -> None:
    recipe = task_recipe(task)
    raw = tmp_path / "raw"
    sizes = make_raw(recipe, raw)
    out = tmp_path / "out"
    argv = ["--task", task, "--out", str(out), "--raw-dir", str(raw), "--bpe-tokens", "50",
            "--quiet"]
    assert prep.main(argv) == 0
    _check_data_bin(out / "data-bin", recipe, sizes["test"])
    if task == "iwslt14.de-en":
        valid = (out / "tokenized" / "valid.de").read_text().splitlines()
        assert len(valid) == 40 // 23  # every 23rd train line
        test = (out / "tmp" / "test.en").read_text()  # before BPE
        assert "’" not in test and "it &apos;s ." in test
        detok = (out / "tokenized" / "test.detok.en").read_text().splitlines()
        assert len(detok) == sizes["test"] and detok[0].endswith(" it’s.")
        assert detok[0][0].isupper()


def test_wmt14_en_fr_valid_split(tmp_path: Path) -> None:
    recipe = task_recipe("wmt14.en-fr")
    raw = tmp_path / "raw"
    make_raw(recipe, raw, n_train=270, n_eval=5)  # 5 corpora -> 1350 lines, one valid line
    data_bin = prep.prepare("wmt14.en-fr", tmp_path / "out", raw_dir=raw, bpe_tokens=50)
    _check_data_bin(data_bin, recipe, 5)
    assert len((tmp_path / "out" / "tmp" / "valid.fr").read_text().splitlines()) == 1


def test_resume_skips_finished_steps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recipe = task_recipe("iwslt14.de-en")
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(recipe, raw)
    prep.prepare(recipe.name, out, raw_dir=raw, bpe_tokens=50)
    dict_mtime = (out / "data-bin" / "dict.de.txt").stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="hat.data")
    caplog.clear()
    prep.prepare(recipe.name, out, raw_dir=raw, bpe_tokens=50)
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 7  # all steps of the IWSLT recipe
    assert (out / "data-bin" / "dict.de.txt").stat().st_mtime_ns == dict_mtime
    # an interrupted BPE step: it and everything after it run again, nothing before it
    (out / ".steps" / "bpe_apply.json").unlink()
    (out / "tokenized" / "test.en").unlink()
    caplog.clear()
    prep.prepare(recipe.name, out, raw_dir=raw, bpe_tokens=50)
    ran = {r.getMessage().split()[1].rstrip(":") for r in caplog.records
           if r.getMessage().endswith("...")}
    assert ran == {"bpe_apply", "binarize"}
    assert (out / "tokenized" / "test.en").is_file()
    # a different BPE size redoes BPE but keeps the tokenized text
    caplog.clear()
    prep.prepare(recipe.name, out, raw_dir=raw, bpe_tokens=30)
    ran = {r.getMessage().split()[1] for r in caplog.records if r.getMessage().endswith("...")}
    assert "train_tok" not in ran and {"bpe_learn", "bpe_apply", "binarize"} <= ran


def test_map_lines_in_parallel_keeps_order() -> None:
    proc = text.MosesProcessor("en")
    lines = [f"Line {i}, with-dash." for i in range(25)]
    assert list(text.map_lines(proc, lines, workers=2, chunk_size=4)) == [proc(x) for x in lines]


def test_download_extract_and_prepare_without_raw_dir(tmp_path: Path) -> None:
    recipe = task_recipe("iwslt14.de-en")
    sizes = make_raw(recipe, tmp_path / "src")
    archive = tmp_path / "de-en.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "de-en", arcname="de-en")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    dl = recipes.Download("de-en.tgz", (f"file://{tmp_path}/missing.tgz", f"file://{archive}"),
                       size=archive.stat().st_size, sha256=sha)
    local = replace(recipe, downloads=(dl,))
    out = tmp_path / "out"
    data_bin = prep.prepare(recipe.name, out, bpe_tokens=50, recipe=local)  # no raw_dir
    _check_data_bin(data_bin, recipe, sizes["test"])
    assert (out / "orig" / "de-en.tgz").is_file() and (out / "orig" / ".de-en.tgz.extracted")
    assert not list((out / "orig").glob("*.part"))
    # complete files are not fetched again (the URLs are gone now)
    archive.rename(tmp_path / "moved.tgz")
    fetch.fetch_raw(local, out / "orig")
    bad = replace(recipe, downloads=(replace(dl, sha256="0" * 64),))
    with pytest.raises(DataPrepError, match="sha256 mismatch"):
        fetch.fetch_raw(bad, out / "orig")
    with pytest.raises(DataPrepError, match="could not download de-en.tgz"):
        fetch.fetch_raw(bad, tmp_path / "empty")
    # the one safe extractor (hat.download.data.safe_extract): a member leading outside is refused
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tf:
        tf.add(tmp_path / "src" / "de-en", arcname="../de-en")
    with pytest.raises(DataPrepError, match="leads outside the folder"):
        fetch.extract(evil, tmp_path / "evil_raw")
    assert not (tmp_path / "evil_raw" / "de-en").exists()  # nothing written outside staging


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_missing_raw_file_names_file_and_task(tmp_path: Path, capsys) -> None:
    recipe = task_recipe("wmt14.en-de")
    raw = tmp_path / "raw"
    make_raw(recipe, raw)
    (raw / "test-full" / "newstest2014-deen-ref.de.sgm").unlink()
    with pytest.raises(DataPrepError, match="(?s)wmt14.en-de.*newstest2014-deen-ref.de.sgm"):
        prep.prepare("wmt14.en-de", tmp_path / "out", raw_dir=raw)
    argv = ["--task", "wmt14.en-de", "--out", str(tmp_path / "out"), "--raw-dir", str(raw)]
    assert prep.main(argv) == 2
    err = capsys.readouterr().err
    assert "test-full/newstest2014-deen-ref.de.sgm" in err and "test-full.tgz" in err
    assert "Traceback" not in err


def test_unknown_task_lists_allowed(capsys) -> None:
    with pytest.raises(DataPrepError, match="allowed tasks: debian.en-de, debian.en-fr, "
                                            "iwslt14.de-en, wmt14.en-de"):
        task_recipe("wmt16.en-de")
    assert prep.main(["--task", "wmt16.en-de", "--raw-dir", "."]) == 2
    assert "wmt19.en-de" in capsys.readouterr().err


def test_non_parallel_corpus_is_an_error(tmp_path: Path) -> None:
    recipe = task_recipe("iwslt14.de-en")
    raw = tmp_path / "raw"
    make_raw(recipe, raw)
    with open(raw / "de-en" / "train.tags.de-en.en", "a", encoding="utf-8") as f:
        f.write("One line too many.\n")
    with pytest.raises(DataPrepError, match="not parallel.*gives 42 lines.*gives 43"):
        prep.prepare(recipe.name, tmp_path / "out", raw_dir=raw, bpe_tokens=50)


def test_expected_files_and_list_files(capsys) -> None:
    files = dict(recipes.expected_files(task_recipe("iwslt14.de-en")))
    assert files["de-en/train.tags.de-en.de"] == "de-en.tgz"
    assert "de-en/IWSLT14.TEDX.dev2012.de-en.en.xml" in files
    assert prep.main(["--task", "wmt19.en-de", "--list-files"]) == 0
    listed = capsys.readouterr().out
    assert "en-de.bicleaner07.txt" in listed and "dev/newstest2018-ende-ref.de.sgm" in listed
