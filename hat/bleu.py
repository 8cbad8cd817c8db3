"""Test BLEU of a SubTransformer: beam search on a test split, then HAT's two metrics.

python -m hat.bleu --task wmt14.en-de --checkpoint <ckpt> --sub-config <sub>.yml --metric normal

The checkpoint may be (a) a SuperTransformer (the SubTransformer YAML picks the subnet whose
inherited weights are tested; without one its own / the largest subnet runs), (b) a retrained
SubTransformer (SuperTransformer shapes, its config in the args; a YAML, if given, must equal
it) or (c) an exported ``hat_subtransformer`` (a YAML, if given, must equal its architecture).

Metrics (both on the 1-best hypotheses, written in the original test-set order):

* ``normal``: tokenized BLEU as HAT reports it. Hypothesis and reference are the model's
  tokenized text after BPE removal; with compound splitting (HAT's test scripts apply it for
  every task: ``(\\S)-(\\S)`` -> ``\\1 ##AT##-##AT## \\2``, non-overlapping, like the perl
  one-liner) and then corpus BLEU on whitespace tokens without smoothing (sacrebleu with
  ``tokenize='none'``, which equals multi-bleu.perl and fairseq's ``score.py``).
* ``sacre``: hypotheses detokenized with the Moses detokenizer of the target language and
  scored by sacrebleu (13a) against the untokenized reference text (``--ref``); the signature
  is printed. HAT detokenized its tokenized references instead; the raw reference is the
  standard way to report sacreBLEU.

``--task`` fills in HAT's settings and the default paths of the task (data
``data/<task>/data-bin``, reference ``data/<task>/tokenized/test.detok.<tgt>``): WMT beam 4,
length penalty 0.6; IWSLT beam 5, length penalty 1.0, case-insensitive sacreBLEU (the data
is lowercased); toy beam 5, length penalty 1.0, no BPE.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hat.atomic import atomic_write_text, check_writable
from hat.cli import run_cli
from hat.corpora import TASKS, Scoring, task_info
from hat.errors import HatConfigError
from hat.metrics import (
    BleuResult,
    check_metric_installed,
    moses_detokenize,
    read_lines,
    sacre_bleu,
    tokenized_bleu,
)
from hat.space import SubConfig
from hat.threads import use_cpu_threads
from hat.translate import average_into, check_data, load_model, translate

if TYPE_CHECKING:
    from hat.generate.clock import DecodeClock


METRICS = ("normal", "sacre")


@dataclass(frozen=True)
class BleuSettings(Scoring):
    """A task's test settings (HAT's) and default paths."""

    tgt: str = ""
    data: str = ""
    ref: str = ""


def task_settings(name: str) -> BleuSettings:
    """The test settings and default paths of catalogue task ``name``."""
    t = task_info(name)
    return BleuSettings(**asdict(t.scoring), tgt=t.tgt, data=t.data_bin, ref=t.ref)


GENERIC = BleuSettings(remove_bpe=False)


# ----- command line ---------------------------------------------------------------------------
@dataclass
class Evaluation:
    """Everything one run produced."""

    result: BleuResult
    hyps: list[str]
    refs: list[str]
    detok_hyps: list[str] | None
    config: SubConfig | None
    kind: str
    checkpoint: str
    averaged: list[str] = field(default_factory=list)
    generator: str = "fairseq"
    clock: DecodeClock | None = None


def subset_reference(test_ref: str, subset: str) -> str:
    """The untokenized reference of ``subset`` next to the test split's (``""``: none)."""
    if subset == "test" or not test_ref:
        return test_ref
    ref = Path(test_ref)
    return str(ref.with_name(ref.name.replace("test.", f"{subset}.", 1)))


def settings_for(args: argparse.Namespace) -> BleuSettings:
    """Task settings with the command line's explicit values applied."""
    base = task_settings(args.task) if args.task else GENERIC
    values = asdict(base)
    subset = getattr(args, "subset", "test") or "test"
    values["ref"] = subset_reference(values["ref"], subset)  # the task's reference of that split
    for key in ("beam", "lenpen", "remove_bpe", "compound_split", "lowercase", "data", "ref"):
        v = getattr(args, key)
        if v is not None:
            values[key] = v
    return BleuSettings(**values)


def evaluate(args: argparse.Namespace) -> Evaluation:
    """Load, translate and score as the parsed command line says."""
    s = settings_for(args)
    if s.beam < 1:
        raise HatConfigError(f"--beam {s.beam}: the beam size must be at least 1 (the number "
                             "of hypotheses kept per sentence)")
    if not s.data:
        raise HatConfigError("no data directory: give --data or --task")
    if args.metric not in METRICS:
        raise HatConfigError(f"--metric must be one of {', '.join(METRICS)}, got {args.metric}")
    check_metric_installed(args.metric, f"--metric {args.metric}")
    sub_yaml = None if args.sub_config in (None, "", "none") else args.sub_config
    if args.out:  # before the decoding, not after it
        check_writable(Path(args.out) / f"{args.subset}.hyp", "--out")
    check_data(s.data, args.subset)
    refs_raw: list[str] | None = None
    if args.metric == "sacre":
        ref = s.ref
        if not ref:
            raise HatConfigError("sacre needs the untokenized reference: give --ref")
        if not os.path.isfile(ref):
            raise HatConfigError(f"{ref}: reference file for sacreBLEU not found (--ref)")
        refs_raw = read_lines(ref)
    if args.cpu or not torch.cuda.is_available():
        device = "cpu"
        use_cpu_threads()
    else:
        device = "cuda"
    with tempfile.TemporaryDirectory(prefix="hat-average-") as tmp:
        checkpoint, averaged = args.checkpoint, []
        if args.average_last:
            if not os.path.exists(checkpoint):
                raise HatConfigError(f"{checkpoint}: checkpoint not found")
            checkpoint, paths = average_into(checkpoint, args.average_last, args.average_by, tmp)
            averaged = [str(p) for p in paths]
        task, model, kind = load_model(checkpoint, s.data, sub_yaml)
    if device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    batch_size = args.batch_size if args.batch_size or args.max_tokens else 128
    from hat.generate.clock import DecodeClock

    clock = DecodeClock(device) if args.timing else None
    hyps, refs = translate(task, model, args.subset, s.beam, s.lenpen, args.max_tokens,
                           batch_size, s.remove_bpe, device, args.max_len_a, args.max_len_b,
                           args.generator, clock)
    config = getattr(model, "sample_config", None)
    detok = None
    if args.metric == "normal":
        result = tokenized_bleu(hyps, refs, compound=s.compound_split)
    else:
        assert refs_raw is not None
        if len(refs_raw) != len(hyps):
            raise HatConfigError(f"{s.ref}: {len(refs_raw)} lines but split '{args.subset}' "
                                 f"has {len(hyps)} sentences; is it the right reference?")
        lang = s.tgt or task.cfg.target_lang
        detok = moses_detokenize(hyps, lang)
        result = sacre_bleu(detok, refs_raw, lowercase=s.lowercase)
    ev = Evaluation(result, hyps, refs, detok, config, kind, args.checkpoint, averaged,
                    args.generator, clock)
    if args.out:
        write_outputs(ev, args.out, args.subset)
    return ev


def write_outputs(ev: Evaluation, out: str | os.PathLike, subset: str) -> None:
    """``<subset>.hyp``/``.ref`` (tokenized), ``.hyp.detok`` (sacre) and ``.<metric>.json``."""
    out = Path(out)

    def text(lines: Sequence[str]) -> str:
        return "".join(line + "\n" for line in lines)

    atomic_write_text(out / f"{subset}.hyp", text(ev.hyps))
    atomic_write_text(out / f"{subset}.ref", text(ev.refs))
    if ev.detok_hyps is not None:
        atomic_write_text(out / f"{subset}.hyp.detok", text(ev.detok_hyps))
    atomic_write_text(out / f"{subset}.{ev.result.metric}.json", json.dumps(summary(ev)) + "\n")


def summary(ev: Evaluation) -> dict[str, Any]:
    """The JSON line: bleu, metric, signature, n, plus what was tested."""
    r = ev.result
    return {"bleu": round(r.bleu, 4), "metric": r.metric, "signature": r.signature, "n": r.n,
            "checkpoint": ev.checkpoint, "kind": ev.kind, "averaged": ev.averaged,
            "generator": ev.generator,
            "config": ev.config.to_dict() if ev.config is not None else None,
            **({"timing": ev.clock.summary()} if ev.clock else {})}


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (unset ones come from --task)."""
    p = argparse.ArgumentParser(prog="python -m hat.bleu",
                                description="Test BLEU of a SubTransformer (beam search).")
    p.add_argument("--task", choices=sorted(TASKS), help="HAT's settings and default paths")
    p.add_argument("--data", help="fairseq data-bin directory (default: data/<task>/data-bin)")
    p.add_argument("--checkpoint", required=True, help="checkpoint to test")
    p.add_argument("--sub-config", help="SubTransformer YAML ('none': the checkpoint's own)")
    p.add_argument("--metric", default="normal", choices=METRICS)
    p.add_argument("--subset", default="test", help="split to translate (default: test)")
    p.add_argument("--beam", type=int, help="beam size (WMT 4, else 5)")
    p.add_argument("--lenpen", type=float, help="length penalty (WMT 0.6, else 1.0)")
    p.add_argument("--max-tokens", type=int, help="tokens per batch")
    p.add_argument("--max-len-a", type=float, default=0.0,
                   help="maximum output length is a*source_length + b (default 0)")
    p.add_argument("--max-len-b", type=int, default=200, help="see --max-len-a (default 200)")
    p.add_argument("--batch-size", type=int, help="sentences per batch (default 128)")
    p.add_argument("--remove-bpe", action=argparse.BooleanOptionalAction, default=None,
                   help="remove subword-nmt '@@ ' (default with --task except toy)")
    p.add_argument("--compound-split", action=argparse.BooleanOptionalAction, default=None,
                   help="normal: split hyphenated compounds as HAT (default: yes)")
    p.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=None,
                   help="sacre: case-insensitive (default: yes for iwslt14.de-en)")
    p.add_argument("--ref", help="sacre: untokenized reference (default per task and --subset: "
                   "data/<task>/tokenized/<subset>.detok.<tgt>)")
    p.add_argument("--average-last", type=int, metavar="N",
                   help="first average the last N checkpoints of the checkpoint's directory")
    p.add_argument("--average-by", choices=("update", "epoch"), default="update",
                   help="with --average-last: checkpoint_<e>_<update>.pt or checkpoint<e>.pt")
    p.add_argument("--generator", choices=("fairseq", "static", "graph"), default="fairseq",
                   help="beam search: fairseq's SequenceGenerator; 'static' (hat.generate: the "
                        "same hypotheses over a static key/value cache); 'graph' (that search "
                        "replayed as CUDA graphs on a GPU, one captured per batch shape: for "
                        "repeated shapes, e.g. --batch-size 1 with fixed lengths; eager on a CPU)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is there")
    p.add_argument("--threads", type=int, help="CPU threads (a latency dataset's "
                   "latcpu-threads, to decode as it measured)")
    p.add_argument("--timing", action="store_true", help="time every decode call and print "
                   "the medians (per call, per number of decoder steps); with --batch-size 1 "
                   "comparable to a lat-deployment generate latency")
    p.add_argument("--out", help="directory for hypotheses, references and the score")
    p.add_argument("--json", action="store_true", help="print a JSON line last")
    p.add_argument("--verbose", action="store_true", help="show fairseq's log")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 2 on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s:%(name)s:%(message)s")
    logging.getLogger().setLevel(logging.INFO if args.verbose else logging.WARNING)
    for name in ("fairseq", "hat"):
        logging.getLogger(name).setLevel(logging.INFO if args.verbose else logging.WARNING)
    def body() -> int:
        ev = evaluate(args)
        if ev.averaged:
            print(f"| averaged {len(ev.averaged)} checkpoints: "
                  + ", ".join(Path(p).name for p in ev.averaged))
        if ev.config is not None:
            print(f"| {ev.kind}: {ev.config.describe()}")
        print(ev.result.line())
        print(f"| signature: {ev.result.signature}")
        for line in ev.clock.lines() if ev.clock else []:
            print(line)
        if args.out:
            print(f"| wrote {args.out}")
        if args.json:
            print(json.dumps(summary(ev)))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
