"""Model command-line/YAML keys (HAT's names) and the architectures' defaults."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hat.errors import HatConfigError
from hat.modules.attention import ATTENTION_IMPLS
from hat.space import CHOICE_KEYS, SUB_YAML_KEYS, WMT_SPACE0, SearchSpace, SubConfig

SUB_ARG_OF = {
    field: key.replace("-", "_") for field, key in SUB_YAML_KEYS.items()
}  # SubConfig field -> args attribute (e.g. encoder_embed_dim_subtransformer)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Register the SuperTransformer's keys on a (fairseq) argument parser."""
    a = parser.add_argument
    for side in ("encoder", "decoder"):
        a(f"--{side}-embed-dim", type=int, metavar="N", help=f"super {side} embedding dim")
        a(f"--{side}-ffn-embed-dim", type=int, metavar="N", help=f"super {side} FFN dim")
        a(f"--{side}-layers", type=int, metavar="N", help=f"super number of {side} layers")
        a(f"--{side}-attention-heads", type=int, metavar="N", help=f"super {side} heads")
    a("--qkv-dim", type=int, metavar="N", help="fixed width of Q/K/V projections (HAT: 512)")
    a("--dropout", type=float, metavar="D", help="dropout at the super dim (scaled by d/super)")
    a("--attention-dropout", type=float, metavar="D", help="dropout on attention weights")
    a("--activation-dropout", type=float, metavar="D", help="dropout after the FFN ReLU")
    a(
        "--share-all-embeddings",
        action="store_true",
        help="share encoder, decoder and output embeddings (needs a joined dictionary)",
    )
    a(
        "--share-decoder-input-output-embed",
        action="store_true",
        help="share decoder input and output embeddings",
    )
    a("--max-source-positions", type=int, metavar="N")
    a("--max-target-positions", type=int, metavar="N")
    a(
        "--attn-impl",
        choices=ATTENTION_IMPLS,
        help="sdpa: torch scaled_dot_product_attention (default); reference: plain matmul+softmax",
    )
    a(
        "--hat-unscaled-encoder-attn-dropout",
        action="store_true",
        help="reproduce HAT's quirk: the dropout after encoder self-attention is not scaled by the "
        "sampled dim (default: scaled like every other residual dropout)",
    )
    for key in CHOICE_KEYS:
        a(
            "--" + key.replace("_", "-"),
            type=int,
            nargs="+",
            metavar="N",
            help="search-space choices",
        )
    for field, key in SUB_YAML_KEYS.items():
        many = "all" in key
        a(
            "--" + key,
            type=int,
            nargs="+" if many else None,
            metavar="N",
            help=f"SubTransformer {field.replace('_', ' ')}",
        )
    a(
        "--train-subtransformer",
        action="store_true",
        help="train only the SubTransformer given by the *-subtransformer keys",
    )


def fill_defaults(args: Any, space: SearchSpace = WMT_SPACE0, dropout: float = 0.3) -> None:
    """Fill every unset model key from a search space and HAT's recipe defaults."""
    defaults: dict[str, Any] = {
        "encoder_embed_dim": space.encoder_embed_dim,
        "decoder_embed_dim": space.decoder_embed_dim,
        "encoder_ffn_embed_dim": space.encoder_ffn_embed_dim,
        "decoder_ffn_embed_dim": space.decoder_ffn_embed_dim,
        "encoder_layers": space.encoder_layers,
        "decoder_layers": space.decoder_layers,
        "encoder_attention_heads": space.encoder_attention_heads,
        "decoder_attention_heads": space.decoder_attention_heads,
        "qkv_dim": space.qkv_dim,
        "dropout": dropout,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "share_all_embeddings": False,
        "share_decoder_input_output_embed": False,
        "max_source_positions": 1024,
        "max_target_positions": 1024,
        "attn_impl": "sdpa",
        "hat_unscaled_encoder_attn_dropout": False,
        "train_subtransformer": False,
    }
    for key in CHOICE_KEYS:
        defaults[key] = list(getattr(space, key))
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def space_from_args(args: Any) -> SearchSpace:
    """The SearchSpace described by (filled) model args."""
    return SearchSpace.from_args(args, source="model arguments")


def sub_config_from_args(args: Any) -> SubConfig | None:
    """The SubTransformer given by the ``*_subtransformer`` keys; None when none is given."""
    values = {f: getattr(args, a, None) for f, a in SUB_ARG_OF.items()}
    if all(v is None for v in values.values()):
        return None
    return SubConfig.from_dict(values, source=sub_config_source(args))


def check_own_subtransformer(ckpt_args: Any, cfg: SubConfig | None, checkpoint: Any,
                             given: Any, kind: str) -> SubConfig | None:
    """A retrained or exported checkpoint holds one SubTransformer; a given ``cfg`` (from
    ``given``, a YAML path) must be that one. Returns the checkpoint's own (None when its saved
    arguments do not say)."""
    own = sub_config_from_args(ckpt_args)
    if cfg is not None and own is not None and cfg != own:
        raise HatConfigError(
            f"{given}: does not match the {kind} SubTransformer in {checkpoint}: the "
            f"checkpoint runs {own.describe()}, the YAML gives {cfg.describe()}")
    return own


def sub_config_source(args: Any) -> str:
    """Where the SubTransformer keys came from: the last config file given (--configs,
    --sub-configs, --evo-configs, in the order they apply) that holds any ``*-subtransformer``
    key, else the command line."""
    from hat.yamlio import load_yaml

    holder = None
    for name in ("configs", "sub_configs", "evo_configs"):
        path = getattr(args, name, None)
        if not path:
            continue
        try:
            keys = load_yaml(path)
        except HatConfigError:
            continue
        if any(str(k).replace("_", "-") in SUB_YAML_KEYS.values() for k in keys):
            holder = str(path)
    return holder or "command line"


def warn_if_not_member(space: SearchSpace, cfg: SubConfig, source: str | None = None) -> bool:
    """Warn (stderr) when ``cfg`` fits the SuperTransformer but is not a member of the search
    space (a value outside the choices, e.g. embed 112 in {640, 512}); True if it is a member."""
    try:
        space.validate(cfg, source=source, strict=True)
    except HatConfigError as e:
        print(f"warning: {e}; it fits the SuperTransformer's shapes, but the SuperTransformer was "
              "never trained on it and a latency predictor never saw it", file=sys.stderr)
        return False
    return True


def set_sub_config_args(args: Any, cfg: SubConfig) -> None:
    """Write a SubTransformer into args' ``*_subtransformer`` keys."""
    for f, a in SUB_ARG_OF.items():
        v = getattr(cfg, f)
        setattr(args, a, list(v) if isinstance(v, tuple) else v)
