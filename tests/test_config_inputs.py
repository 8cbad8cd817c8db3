"""The user's cases of bad or unusual input on the command lines: a key twice in one YAML, the
data path as ``--data`` or a positional after the options, out-of-range values, a YAML that
is not UTF-8, and errors that name the command line when the value came from it."""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from hat.bleu import main as bleu_main
from hat.config import parse_fairseq_args
from hat.data.toy_corpus import make_toy_corpus
from hat.errors import HatConfigError
from hat.pipeline.__main__ import main as pipeline_main
from hat.search.cli import main as search_main
from hat.search.options import Sources, add_search_args, limits_from_args
from hat.train_cli import add_train_script_args
from hat.train_cli import main as train_main
from hat.yamlio import load_yaml
from tests.conftest import ROOT

TINY = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"
TOY_EVO = ROOT / "configs" / "toy" / "evo_search" / "toy_cpu_epyc.yml"
TOY_LATENCY = ROOT / "configs" / "toy" / "latency_dataset" / "cpu_epyc.yml"


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small binarized toy corpus (its data-bin directory)."""
    return make_toy_corpus(tmp_path_factory.mktemp("toy"), n_train=60, n_valid=10, n_test=10)


def write(tmp_path: Path, text: str, name: str = "c.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- duplicate keys
def test_a_key_twice_in_one_yaml_names_both_lines(tmp_path: Path) -> None:
    p = write(tmp_path, TINY.read_text() + "max-tokens: 512\n")
    line = TINY.read_text().splitlines().index("max-tokens: 2048") + 1
    last = len(TINY.read_text().splitlines()) + 1
    with pytest.raises(HatConfigError, match=rf"c.yml: key 'max-tokens' is given twice, on line "
                                             rf"{line} and line {last}"):
        parse_fairseq_args([f"--configs={p}"])
    # two spellings of one option are one key too
    q = write(tmp_path, "arch: transformersuper\ndata: x\nmax_tokens: 1\nmax-tokens: 2\n", "s.yml")
    with pytest.raises(HatConfigError, match=r"s.yml: key 'max-tokens' is given twice, on line 3 "
                                             r"\(as 'max_tokens'\) and line 4"):
        parse_fairseq_args([f"--configs={q}"])
    # and inside a nested mapping of any YAML the project reads
    r = write(tmp_path, "a: {x: 1, x: 2}\n", "n.yml")
    with pytest.raises(HatConfigError, match=r"n.yml: key 'x' is given twice, on line 1 and "
                                             r"line 1 column 11"):
        load_yaml(r)


def test_a_key_in_another_file_or_on_the_command_line_still_overrides(tmp_path: Path) -> None:
    later = write(tmp_path, "max-tokens: 512\ndropout: 0.2\n", "later.yml")
    origins: dict[str, str] = {}
    args = parse_fairseq_args([f"--configs={TINY}", f"--sub-configs={later}", "--dropout", "0.3"],
                              origins=origins)
    assert args.max_tokens == 512 and args.dropout == 0.3
    assert origins["--max-tokens"] == str(later) and "--dropout" not in origins
    # YAML merge keys may still override what they merge
    m = write(tmp_path, "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n", "merge.yml")
    assert load_yaml(m)["d"] == {"x": 3, "y": 2}


# ----------------------------------------------------------------------------- data path
def test_train_takes_data_as_option_or_positional_anywhere(toy: Path) -> None:
    from fairseq import tasks

    for argv in ([f"--configs={TINY}", "--data", str(toy)],
                 [f"--configs={TINY}", f"--data={toy}", "--max-tokens", "512"],
                 [f"--configs={TINY}", "--max-tokens", "512", str(toy)],
                 [f"--configs={TINY}", "--max-tokens", "512", str(toy), "--lr", "0.001"],
                 [str(toy), f"--configs={TINY}", "--max-tokens", "512"]):
        args = parse_fairseq_args(argv, add_extra=add_train_script_args)
        assert args.data == str(toy), argv
        assert args.max_tokens in (512, 2048)
    task = tasks.setup_task(args)  # the toy task's dictionaries come from that directory
    assert len(task.source_dictionary) > 4
    with pytest.raises(HatConfigError, match=r"command line: two data directories"):
        parse_fairseq_args([f"--configs={TINY}", "--data", str(toy), "--max-tokens", "5",
                            str(toy)])
    with pytest.raises(HatConfigError, match=r"command line: --data needs a value"):
        parse_fairseq_args([f"--configs={TINY}", "--data"])


def test_no_data_anywhere_says_how_to_give_it() -> None:
    with pytest.raises(HatConfigError, match=r"no data directory given: .*--data DIR"):
        parse_fairseq_args(["--arch", "transformersuper", "--max-tokens", "5"])


def test_evo_search_data_after_a_list_option_is_the_data_not_a_limit(toy: Path) -> None:
    base = [f"--configs={TINY}", f"--evo-configs={TOY_EVO}"]
    for extra in (["--latency-constraint", "5", str(toy)],
                  ["--latency-constraint", "5", "6", str(toy), "--evo-iter", "2"],
                  ["--data", str(toy), "--latency-constraint", "5"],
                  ["--feature-norm", "128", "3", "256", "4", "128", "3", "256", "4", "4", "2",
                   str(toy), "--latency-constraint", "5"]):
        origins: dict[str, str] = {}
        args = parse_fairseq_args(base + extra, add_extra=add_search_args, origins=origins)
        assert args.data == str(toy), extra
        assert limits_from_args(args, Sources(origins))[0].latency_ms == 5.0
        assert len(args.feature_norm) == 10
    # a limit that is not a number is blamed on the command line, not on the evo YAML
    origins = {}
    args = parse_fairseq_args(base + [str(toy), "--latency-constraint", "fast"],
                              add_extra=add_search_args, origins=origins)
    with pytest.raises(HatConfigError) as e:
        limits_from_args(args, Sources(origins))
    assert str(e.value).startswith("command line: latency-constraint 'fast' is not a number")
    assert TOY_EVO.name not in str(e.value)


def test_latency_dataset_takes_the_data_path_anywhere(toy: Path) -> None:
    from hat.latency.measure.cli import parse_args

    assert parse_args([f"--configs={TOY_LATENCY}", "--lat-dataset-size", "3", str(toy)]).data \
        == str(toy)
    assert parse_args([f"--configs={TOY_LATENCY}", "--data", str(toy)]).data == str(toy)


# ----------------------------------------------------------------------------- bad values
def test_dropout_outside_0_1_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = write(tmp_path, TINY.read_text().replace("dropout: 0.1", "dropout: 1.5"))
    with pytest.raises(HatConfigError, match=r"c.yml: dropout 1.5 is not a probability: allowed "
                                             r"0 <= dropout < 1"):
        parse_fairseq_args([f"--configs={p}"])
    for key, value in (("--attention-dropout", "1"), ("--activation-dropout", "-0.1")):
        with pytest.raises(HatConfigError, match=rf"command line: {key[2:]} {value} is not a "
                                                 r"probability"):
            parse_fairseq_args([f"--configs={TINY}", key, value])
    assert train_main([f"--configs={TINY}", "--dropout", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "dropout 1.5" in err and "1.125" not in err and "Traceback" not in err


def test_bleu_beam_0_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bleu_main(["--data", str(tmp_path), "--checkpoint", str(tmp_path / "x.pt"),
                      "--beam", "0"]) == 2
    assert "--beam 0: the beam size must be at least 1" in capsys.readouterr().err


def test_latin1_yaml_names_the_file_and_byte_offset(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yml"
    p.write_bytes("# Übersetzung\narch: transformersuper\n".encode("latin-1"))
    with pytest.raises(HatConfigError, match=r"latin1.yml: not UTF-8 text: byte 0xdc at byte "
                                             r"offset 2 \(line 1\)"):
        parse_fairseq_args([f"--configs={p}"])


def test_search_setting_from_the_command_line_is_blamed_on_it(toy: Path) -> None:
    buf = io.StringIO()
    with redirect_stderr(buf):
        rc = search_main([f"--configs={TINY}", f"--evo-configs={TOY_EVO}", str(toy),
                          "--population-size", "-5"])
    assert rc == 2
    err = buf.getvalue()
    assert "command line: population-size must be > 0, got -5" in err
    assert TOY_EVO.name not in err and "Traceback" not in err


def test_pipeline_jobs_0_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pipeline_main(["--out", str(tmp_path / "run"), "--jobs", "0"]) == 2
    assert "--jobs 0: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
