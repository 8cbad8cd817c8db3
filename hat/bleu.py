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
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hat.atomic import atomic_write_text, check_writable
from hat.cli import run_cli
from hat.errors import HatConfigError, UnsafeCheckpointError
from hat.space import SubConfig, read_subtransformer_yaml
from hat.threads import use_cpu_threads

if TYPE_CHECKING:
    from hat.generate.clock import DecodeClock

logger = logging.getLogger("hat.bleu")

METRICS = ("normal", "sacre")
_COMPOUND = re.compile(r"(\S)-(\S)")
_NOISE = (r"(?s).*ConfigStore schema", r"(?s).*pin_memory")  # fairseq/hydra/torch chatter


@dataclass(frozen=True)
class TaskSettings:
    """HAT's test settings and default paths of one task."""

    tgt: str
    beam: int = 5
    lenpen: float = 1.0
    remove_bpe: bool = True
    compound_split: bool = True
    lowercase: bool = False
    data: str = ""
    ref: str = ""


def _wmt(name: str, tgt: str) -> TaskSettings:
    return TaskSettings(tgt, beam=4, lenpen=0.6, data=f"data/{name}/data-bin",
                        ref=f"data/{name}/tokenized/test.detok.{tgt}")


TASKS: dict[str, TaskSettings] = {
    "wmt14.en-de": _wmt("wmt14.en-de", "de"),
    "wmt14.en-fr": _wmt("wmt14.en-fr", "fr"),
    "wmt19.en-de": _wmt("wmt19.en-de", "de"),
    "iwslt14.de-en": TaskSettings("en", lowercase=True, data="data/iwslt14.de-en/data-bin",
                                  ref="data/iwslt14.de-en/tokenized/test.detok.en"),
    **{f"debian.en-{t}": TaskSettings(t, data=f"data/debian.en-{t}/data-bin",
                                      ref=f"data/debian.en-{t}/tokenized/test.detok.{t}")
       for t in ("de", "fr")},
    "toy": TaskSettings("tgt", remove_bpe=False, data="data/toy/data-bin",
                        ref="data/toy/raw/test.detok.tgt"),
}
GENERIC = TaskSettings("", remove_bpe=False)


# ----- metrics --------------------------------------------------------------------------------
def compound_split(line: str) -> str:
    """HAT/tensor2tensor compound splitting: ``a-b`` -> ``a ##AT##-##AT## b``."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


@dataclass
class BleuResult:
    """One corpus BLEU score."""

    bleu: float
    metric: str
    signature: str
    n: int
    precisions: list[float] = field(default_factory=list)
    bp: float = 1.0
    hyp_len: int = 0
    ref_len: int = 0
    label: str = ""

    def line(self) -> str:
        """``BLEU = 27.40 (normal, tokenized, compound-split) 60.1/33.2/... (BP = ...)``."""
        prec = "/".join(f"{p:.1f}" for p in self.precisions)
        ratio = self.hyp_len / self.ref_len if self.ref_len else 0.0
        return (f"BLEU = {self.bleu:.2f} ({self.label}) {prec} (BP = {self.bp:.3f} ratio = "
                f"{ratio:.3f} hyp_len = {self.hyp_len} ref_len = {self.ref_len}) n = {self.n}")


def _check_lengths(hyps: Sequence[str], refs: Sequence[str], what: str) -> None:
    if len(hyps) != len(refs):
        raise HatConfigError(f"{what}: {len(hyps)} hypotheses but {len(refs)} reference lines")


def _result(metric: Any, score: Any, n: int, label: str, name: str, extra: str = ""
            ) -> BleuResult:
    return BleuResult(bleu=float(score.score), metric=name,
                      signature=str(metric.get_signature()) + extra, n=n,
                      precisions=[float(p) for p in score.precisions], bp=float(score.bp),
                      hyp_len=int(score.sys_len), ref_len=int(score.ref_len), label=label)


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str], compound: bool = True
                   ) -> BleuResult:
    """Corpus BLEU of tokenized text (multi-bleu.perl), optionally after compound splitting."""
    from sacrebleu.metrics import BLEU

    _check_lengths(hyps, refs, "normal BLEU")
    if compound:
        hyps, refs = [compound_split(h) for h in hyps], [compound_split(r) for r in refs]
    metric = BLEU(tokenize="none", smooth_method="none", force=True)
    score = metric.corpus_score(list(hyps), [list(refs)])
    label = "normal, tokenized" + (", compound-split" if compound else "")
    return _result(metric, score, len(hyps), label, "normal",
                   "|compound-split:" + ("yes" if compound else "no"))


def moses_detokenize(lines: Sequence[str], lang: str) -> list[str]:
    """Moses-detokenize tokenized lines (unescaping ``&amp;`` etc.)."""
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang=lang or "en")
    return [detok.detokenize(line.split()) for line in lines]


def sacre_bleu(hyps: Sequence[str], refs: Sequence[str], lowercase: bool = False
               ) -> BleuResult:
    """sacreBLEU (13a tokenization) of detokenized hypotheses against raw references."""
    from sacrebleu.metrics import BLEU

    _check_lengths(hyps, refs, "sacreBLEU")
    metric = BLEU(lowercase=lowercase)
    score = metric.corpus_score(list(hyps), [list(refs)])
    return _result(metric, score, len(hyps), "sacre, detokenized", "sacre")


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a text file without their newlines."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# ----- loading --------------------------------------------------------------------------------
def check_data(data: str | os.PathLike, subset: str) -> None:
    """The data-bin directory exists and holds ``subset``."""
    path = Path(data)
    if not path.is_dir():
        from hat.data.missing import how_to_get

        raise HatConfigError(f"data directory {path} not found (--data); {how_to_get(path)}")
    present = sorted({f.name.split(".")[0] for f in path.iterdir() if f.name.endswith(".idx")})
    if subset not in present:
        raise HatConfigError(f"{path}: split '{subset}' not found; splits present: "
                             f"{present or 'none'}")


def _load_state(path: str, data: str) -> dict[str, Any]:
    from fairseq import checkpoint_utils

    if not os.path.isfile(path):
        raise HatConfigError(f"{path}: checkpoint file not found")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path, {"data": data})
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - unpickling/upgrade failure: not a checkpoint
        raise HatConfigError(f"{path}: not a readable fairseq checkpoint ({e})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise HatConfigError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    return state


def load_model(checkpoint: str, data: str, sub_yaml: str | None = None
               ) -> tuple[Any, Any, str]:
    """(task, model in eval mode on CPU, kind) with the SubTransformer to test activated.

    ``kind`` is ``supertransformer``, ``retrained`` or ``exported``.
    """
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        return _load_model(checkpoint, data, sub_yaml)


def _load_model(checkpoint: str, data: str, sub_yaml: str | None) -> tuple[Any, Any, str]:
    from fairseq import checkpoint_utils

    from hat.checkpoint import checkpoint_args
    from hat.models.args import check_own_subtransformer

    state = _load_state(checkpoint, data)
    args = checkpoint_args(state, checkpoint)
    sub = read_subtransformer_yaml(sub_yaml) if sub_yaml else None
    if args.arch == "hat_subtransformer":
        kind = "exported"
    elif getattr(args, "train_subtransformer", False):
        kind = "retrained"
    else:
        kind = "supertransformer"
    if kind != "supertransformer":
        check_own_subtransformer(args, sub, checkpoint, sub_yaml, kind)
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [checkpoint], arg_overrides={"data": data}, state=state)
    except RuntimeError as e:
        hint = ""
        if "size mismatch for encoder.embed_tokens" in str(e):
            hint = (f"; its vocabulary differs from the dictionary in {data} (a released HAT "
                    "model needs HAT's preprocessed data: bash configs/<task>/get_preprocessed.sh)")
        raise HatConfigError(f"{checkpoint}: cannot build the model: "
                             f"{str(e).splitlines()[0]}{hint}") from None
    model = models[0]
    if sub is not None and kind == "supertransformer":
        model.set_sample_config(sub, source=sub_yaml)
    return task, model.eval(), kind


def average_into(checkpoint: str, n: int, by: str, tmp_dir: str) -> tuple[str, list[Path]]:
    """Average the last ``n`` checkpoints beside ``checkpoint`` (or in it, if a directory)."""
    from hat.average import average_last

    save_dir = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint) or "."
    out = os.path.join(tmp_dir, f"average_last{n}.pt")
    return out, average_last(save_dir, n, out, by)


# ----- generation -----------------------------------------------------------------------------
def translate(task: Any, model: Any, subset: str = "test", beam: int = 5, lenpen: float = 1.0,
              max_tokens: int | None = None, batch_size: int | None = None,
              remove_bpe: bool = False, device: str = "cpu", max_len_a: float = 0.0,
              max_len_b: int = 200, generator_kind: str = "fairseq",
              clock: DecodeClock | None = None) -> tuple[list[str], list[str]]:
    """Beam search over ``subset``: (1-best hypotheses, references), in test-set order.
    ``generator_kind``: fairseq's ``SequenceGenerator``, ``static`` (:mod:`hat.generate`, the
    same hypotheses over a static key/value cache) or ``graph`` (that search replayed as CUDA
    graphs on a GPU, one per batch shape; eager on a CPU). ``clock`` times every decode call."""
    from fairseq import utils
    from fairseq.dataclass.configs import GenerationConfig

    task.load_dataset(subset)
    dataset = task.dataset(subset)
    model.to(device)
    generator = task.build_generator([model], GenerationConfig(
        beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b))
    static = None
    if generator_kind in ("static", "graph"):
        from hat.generate import BeamSettings, GraphBeamSearch, StaticBeamSearch

        kind = GraphBeamSearch if generator_kind == "graph" else StaticBeamSearch
        static = kind(model, task.target_dictionary, BeamSettings(
            beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b))
    itr = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_sentences=batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_workers=0,
    ).next_epoch_itr(shuffle=False)
    tgt_dict = task.target_dictionary
    bpe = "subword_nmt" if remove_bpe else None
    strip = getattr(generator, "symbols_to_strip_from_output", {tgt_dict.eos()})
    hyps: list[str | None] = [None] * len(dataset)
    refs: list[str | None] = [None] * len(dataset)
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        for sample in itr:
            if "net_input" not in sample:
                continue
            sample = utils.move_to_cuda(sample) if device != "cpu" else sample
            net = sample["net_input"]

            def decode(sample: dict = sample, net: dict = net) -> list:
                if static is not None:
                    return static.generate(net["src_tokens"], net["src_lengths"])
                with torch.no_grad():
                    return task.inference_step(generator, [model], sample)

            out = clock.run(decode, net["src_tokens"].size(1)) if clock else decode()
            for i, sid in enumerate(sample["id"].tolist()):
                best = out[i][0]["tokens"].int().cpu()
                target = utils.strip_pad(sample["target"][i], tgt_dict.pad()).int().cpu()
                hyps[sid] = tgt_dict.string(best, bpe, extra_symbols_to_ignore=strip)
                refs[sid] = tgt_dict.string(target, bpe, escape_unk=True,
                                            extra_symbols_to_ignore=strip)
    missing = [i for i, h in enumerate(hyps) if h is None]
    if missing:
        raise HatConfigError(f"{len(missing)} sentences of '{subset}' were not translated "
                             f"(e.g. #{missing[0]})")
    return [h or "" for h in hyps], [r or "" for r in refs]


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


def settings_for(args: argparse.Namespace) -> TaskSettings:
    """Task settings with the command line's explicit values applied."""
    base = TASKS[args.task] if args.task else GENERIC
    values = asdict(base)
    subset = getattr(args, "subset", "test") or "test"
    if subset != "test" and values["ref"]:  # the task's reference of that split
        ref = Path(values["ref"])
        values["ref"] = str(ref.with_name(ref.name.replace("test.", f"{subset}.", 1)))
    for key in ("beam", "lenpen", "remove_bpe", "compound_split", "lowercase", "data", "ref"):
        v = getattr(args, key)
        if v is not None:
            values[key] = v
    return TaskSettings(**values)


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
