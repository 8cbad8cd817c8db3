"""A model to translate with (a SuperTransformer with a SubTransformer YAML, a retrained or an
exported SubTransformer, optionally averaged checkpoints) and beam search over a test split, in
the test set's order."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hat.checkpoint import read_checkpoint
from hat.errors import HatConfigError
from hat.space import read_subtransformer_yaml

if TYPE_CHECKING:
    from hat.generate.clock import DecodeClock


_NOISE = (r"(?s).*ConfigStore schema", r"(?s).*pin_memory")  # fairseq/hydra/torch chatter


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
    from hat.checkpoint import checkpoint_args, load_task_and_model
    from hat.models.args import check_own_subtransformer

    state = read_checkpoint(checkpoint, data=data)
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
    task, model = load_task_and_model(checkpoint, data, state)
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
