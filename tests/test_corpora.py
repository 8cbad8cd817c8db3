"""The task catalogue (hat/corpora.py) is the one source the other tables are read from."""

from __future__ import annotations

import pytest

from hat.corpora import HAT_TASKS, TASKS, latency_length, task_info, task_recipe
from hat.data.recipes import DataPrepError
from hat.errors import HatConfigError
from hat.paths import ROOT


def test_every_recipe_agrees_with_its_catalogue_entry() -> None:
    for name, t in TASKS.items():
        if t.recipe is None:
            continue
        r = task_recipe(name)
        assert (r.name, r.src, r.tgt) == (name, t.src, t.tgt)


def test_bleu_download_and_pipeline_tables_come_from_the_catalogue() -> None:
    from hat.bleu import build_parser, settings_for
    from hat.download import HAT_DATA, RELEASED_TASKS
    from hat.pipeline.tasks import TASKS as PIPELINE

    assert set(HAT_DATA) == set(HAT_TASKS) == {"wmt14.en-de", "wmt14.en-fr", "wmt19.en-de",
                                                "iwslt14.de-en"}
    for name in HAT_TASKS:
        info = TASKS[name]
        assert (HAT_DATA[name].src, HAT_DATA[name].tgt) == (info.src, info.tgt)
        assert RELEASED_TASKS[info.hat.model_prefix] == (name, info.hat.super_arch)
        assert (ROOT / "configs" / name).is_dir()
    assert set(PIPELINE) == {n for n, t in TASKS.items() if t.pipeline}
    assert PIPELINE["debian.en-fr"].bleu_metric == "sacre" == TASKS["debian.en-fr"].scoring.metric
    s = settings_for(build_parser().parse_args(["--task", "wmt14.en-de", "--checkpoint", "x"]))
    assert (s.beam, s.lenpen, s.data) == (4, 0.6, "data/wmt14.en-de/data-bin")
    s = settings_for(build_parser().parse_args(["--task", "iwslt14.de-en", "--checkpoint", "x"]))
    assert s.lowercase and s.ref == "data/iwslt14.de-en/tokenized/test.detok.en"


def test_latency_sentence_length_follows_the_arch_family() -> None:
    assert latency_length("transformersuper_iwslt_de_en") == 23
    assert latency_length("transformer_iwslt_de_en") == 23
    assert latency_length("transformersuper_wmt_en_de") == 30
    assert latency_length("transformersuper_wmt19_en_de") == 30
    assert latency_length("something_else") == 30


def test_unknown_tasks_are_refused_with_the_names() -> None:
    with pytest.raises(HatConfigError, match="allowed wmt14.en-de"):
        task_info("wmt16.en-de")
    with pytest.raises(DataPrepError, match="allowed tasks: debian.en-de"):
        task_recipe("toy")  # the toy corpus has no download recipe
