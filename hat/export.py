"""Export one SubTransformer of a SuperTransformer checkpoint as a compact standalone model.

python -m hat.export --configs=<sub>.yml --sub-configs=<common>.yml --restore-file <ckpt> --out <f>

The result is a fairseq checkpoint of arch ``hat_subtransformer`` whose tensors have the
SubTransformer's own shapes; ``fairseq-generate --user-dir <hat> --path <f>`` loads it.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

import torch

from hat.atomic import check_writable
from hat.checkpoint import (
    build_from_checkpoint,
    check_super_dims,
    checkpoint_args,
    read_checkpoint,
    save_checkpoint,
)
from hat.cli import run_cli
from hat.config import parse_fairseq_args
from hat.errors import HatConfigError
from hat.models import SubTransformerModel, TransformerSuperModel
from hat.models.args import set_sub_config_args, sub_config_from_args, sub_config_source
from hat.profile import count_params
from hat.space import SubConfig


def extract_subtransformer_state(super_model: TransformerSuperModel,
                                 compact: SubTransformerModel) -> dict[str, torch.Tensor]:
    """The compact model's tensors, each the front slice of the SuperTransformer's tensor."""
    sd = super_model.state_dict()
    qkv = super_model.space.qkv_dim
    out = {}
    for name, t in compact.state_dict().items():
        if name.endswith(".q_proj_weight"):
            src = sd[name.replace(".q_proj_weight", ".in_proj_weight")][:qkv]
        elif name.endswith(".kv_proj_weight"):
            src = sd[name.replace(".kv_proj_weight", ".in_proj_weight")][qkv:]
        else:
            src = sd[name]
        out[name] = src[tuple(slice(0, n) for n in t.shape)].clone()
    return out


def build_compact(super_model: TransformerSuperModel, cfg: SubConfig,
                  args: argparse.Namespace | None = None) -> SubTransformerModel:
    """A standalone SubTransformer with the SuperTransformer's weights for ``cfg``."""
    super_model.set_sample_config(cfg)
    sub_args = copy.deepcopy(args if args is not None else super_model.args)
    sub_args.arch = "hat_subtransformer"
    sub_args.train_subtransformer = False
    set_sub_config_args(sub_args, cfg)
    task = _DictTask(super_model)
    compact = SubTransformerModel.build_model(sub_args, task)
    compact.load_state_dict(extract_subtransformer_state(super_model, compact), strict=True)
    return compact


class _DictTask:
    def __init__(self, model: Any) -> None:
        self.source_dictionary = model.encoder.dictionary
        self.target_dictionary = model.decoder.dictionary


def embedding_params(model: torch.nn.Module) -> int:
    """Parameters of the embedding tables and a separate output projection."""
    seen, n = set(), 0
    for name, p in model.named_parameters():
        if ("embed_tokens" in name or name.endswith("embed_out")) and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


@torch.no_grad()
def max_output_diff(a: torch.nn.Module, b: torch.nn.Module, vocab: int, seed: int = 0) -> float:
    """Largest absolute difference of the two models' logits on a random batch (eval mode)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (2, 9), generator=g)
    prev = torch.randint(4, vocab, (2, 7), generator=g)
    lengths = torch.full((2,), 9)
    a.eval()
    b.eval()
    return (a(src, lengths, prev)[0] - b(src, lengths, prev)[0]).abs().max().item()


def export(restore_file: str, cfg: SubConfig, out: str, source: str | None = None,
           yaml_args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Export ``cfg`` from ``restore_file`` to ``out``; returns a summary dict."""
    state = read_checkpoint(restore_file)
    ckpt_args = checkpoint_args(state, restore_file)
    if ckpt_args.arch == "hat_subtransformer":
        raise HatConfigError(f"{restore_file}: already a standalone SubTransformer")
    if getattr(ckpt_args, "train_subtransformer", False):  # only its own slice was trained
        from hat.models.args import check_own_subtransformer

        check_own_subtransformer(ckpt_args, cfg, restore_file, source or "the YAML", "retrained")
    if yaml_args is not None:
        check_super_dims(yaml_args, ckpt_args, restore_file)
    model = build_from_checkpoint(state, restore_file)
    model.space.validate(cfg, source=source)
    from hat.models.args import warn_if_not_member

    warn_if_not_member(model.space, cfg, source)
    compact = build_compact(model, cfg)
    diff = max_output_diff(model, compact, len(model.encoder.dictionary))
    save_checkpoint(out, compact.args, compact.state_dict())
    total = sum(p.numel() for p in compact.parameters())
    return {"out": out, "params_total": total, "params_embeddings": embedding_params(compact),
            "params_profiled": count_params(cfg, model.space.qkv_dim), "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, help="path of the standalone checkpoint")

    def body() -> int:
        args = parse_fairseq_args(argv, add_extra=extra)
        cfg = sub_config_from_args(args)
        if cfg is None:
            raise HatConfigError("no SubTransformer given: pass its YAML (keys "
                                 "*-subtransformer) with --configs")
        if not args.restore_file or args.restore_file == "checkpoint_last.pt":
            raise HatConfigError("--restore-file must name the SuperTransformer checkpoint")
        check_writable(args.out, "--out")
        r = export(args.restore_file, cfg, args.out, source=sub_config_source(args), yaml_args=args)
        print(f"| wrote {r['out']}: {r['params_total']:,} parameters = {r['params_profiled']:,} "
              f"(profiled) + {r['params_embeddings']:,} (embeddings)")
        print("| max |logits(SuperTransformer slice) - logits(standalone)| = "
              f"{r['max_abs_diff']:.2e}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
