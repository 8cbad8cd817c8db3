"""The weight-shared SuperTransformer as the fairseq model ``transformersuper``."""

from __future__ import annotations

from typing import Any

from fairseq.models import (
    ARCH_CONFIG_REGISTRY,
    FairseqEncoderDecoderModel,
    register_model,
    register_model_architecture,
)

from hat.errors import HatConfigError
from hat.models.args import (
    add_model_args,
    fill_defaults,
    space_from_args,
    sub_config_from_args,
)
from hat.models.transformer import (
    HatDecoder,
    HatEncoder,
    Regularization,
    Widths,
    new_embedding,
    new_output_weight,
)
from hat.modules.attention import prefer_shape_agnostic_sdpa
from hat.space import IWSLT_SPACE1, WMT_SPACE0, SearchSpace, SubConfig


def regularization(args: Any) -> Regularization:
    """Dropout settings from args."""
    return Regularization(
        args.dropout,
        args.attention_dropout,
        args.activation_dropout,
        not args.hat_unscaled_encoder_attn_dropout,
    )


def build_embeddings(
    args: Any, src_dict: Any, tgt_dict: Any, enc_dim: int, dec_dim: int
) -> tuple[Any, Any, Any]:
    """Encoder table, decoder table and (if separate) output projection."""
    if args.share_all_embeddings:
        if src_dict != tgt_dict:
            raise HatConfigError(
                "--share-all-embeddings needs a joined dictionary (source and target "
                "dictionaries differ); preprocess with --joined-dictionary or drop the flag"
            )
        enc = new_embedding(len(src_dict), enc_dim, src_dict.pad())
        dec = enc if enc_dim == dec_dim else new_embedding(len(tgt_dict), dec_dim, tgt_dict.pad())
        return enc, dec, None
    enc = new_embedding(len(src_dict), enc_dim, src_dict.pad())
    dec = new_embedding(len(tgt_dict), dec_dim, tgt_dict.pad())
    out = (
        None if args.share_decoder_input_output_embed else new_output_weight(len(tgt_dict), dec_dim)
    )
    return enc, dec, out


@register_model("transformersuper")
class TransformerSuperModel(FairseqEncoderDecoderModel):
    """SuperTransformer: every SubTransformer of ``space`` is a front slice of its weights."""

    def __init__(
        self, args: Any, encoder: HatEncoder, decoder: HatDecoder, space: SearchSpace
    ) -> None:
        super().__init__(encoder, decoder)
        self.args, self.space = args, space
        self.sample_config: SubConfig = space.largest()

    @staticmethod
    def add_args(parser: Any) -> None:
        """Model keys (HAT's names)."""
        add_model_args(parser)

    @classmethod
    def build_model(cls, args: Any, task: Any) -> TransformerSuperModel:
        """Build from args and the task's dictionaries; activates the given or largest subnet."""
        ARCH_CONFIG_REGISTRY.get(getattr(args, "arch", ""), transformersuper_base)(args)
        space = space_from_args(args)
        enc_emb, dec_emb, out_w = build_embeddings(
            args,
            task.source_dictionary,
            task.target_dictionary,
            space.encoder_embed_dim,
            space.decoder_embed_dim,
        )
        reg, impl = regularization(args), args.attn_impl
        if impl == "sdpa":
            prefer_shape_agnostic_sdpa()
        E, D, q = space.encoder_layers, space.decoder_layers, space.qkv_dim
        enc_w = Widths(
            space.encoder_embed_dim,
            space.encoder_embed_dim,
            (space.encoder_ffn_embed_dim,) * E,
            (space.encoder_attention_heads,) * E,
            E,
            q,
        )
        dec_w = Widths(
            space.decoder_embed_dim,
            space.decoder_embed_dim,
            (space.decoder_ffn_embed_dim,) * D,
            (space.decoder_attention_heads,) * D,
            E,
            q,
            (space.decoder_attention_heads,) * D,
            space.encoder_embed_dim,
        )
        encoder = HatEncoder(
            task.source_dictionary, enc_emb, enc_w, reg, args.max_source_positions, impl
        )
        decoder = HatDecoder(
            task.target_dictionary, dec_emb, dec_w, reg, out_w, args.max_target_positions, impl
        )
        model = cls(args, encoder, decoder, space)
        given = sub_config_from_args(args)
        if args.train_subtransformer and given is None:
            raise HatConfigError(
                "--train-subtransformer needs a SubTransformer: pass its YAML "
                "with --configs/--sub-configs (keys *-subtransformer)"
            )
        model.set_sample_config(given if given is not None else space.largest())
        return model

    def set_sample_config(self, cfg: SubConfig | dict[str, Any], source: str | None = None) -> None:
        """Activate one SubTransformer (a SubConfig or HAT's nested dict)."""
        if isinstance(cfg, dict):
            flat = {**cfg.get("encoder", {}), **cfg.get("decoder", {})} if "encoder" in cfg else cfg
            cfg = SubConfig.from_dict(flat, source)
        self.space.validate(cfg, source=source)
        self.sample_config = cfg
        self.encoder.set_sample(cfg)
        self.decoder.set_sample(cfg)

    def active_regions(self) -> dict[Any, list[tuple[slice, ...]]]:
        """The blocks of every parameter the active SubTransformer uses (for ``hat_adam``); a
        parameter it does not list (a skipped layer's) is unused."""
        regions: dict[Any, list[tuple[slice, ...]]] = {}
        for part in (self.encoder, self.decoder):
            for layer in part.layers[: part.sample_layer_num]:
                for module in layer.modules():
                    if hasattr(module, "active_boxes"):
                        for name, boxes in module.active_boxes().items():
                            regions.setdefault(getattr(module, name), []).extend(boxes)
            table = [(slice(None), slice(0, part.sample_embed_dim))]
            regions.setdefault(part.embed_tokens.weight, []).extend(table)
        if hasattr(self.decoder, "embed_out"):
            regions.setdefault(self.decoder.embed_out, []).extend(
                [(slice(None), slice(0, self.decoder.sample_embed_dim))])
        return regions

    def max_positions(self) -> tuple[int, int]:
        """(source, target) maximum lengths."""
        return self.encoder.max_positions(), self.decoder.max_positions()


@register_model_architecture("transformersuper", "transformersuper")
def transformersuper_base(args: Any) -> None:
    """Defaults: WMT space0 dims."""
    fill_defaults(args, WMT_SPACE0)


@register_model_architecture("transformersuper", "transformersuper_wmt_en_de")
def transformersuper_wmt_en_de(args: Any) -> None:
    """WMT14 En-De SuperTransformer: 640/3072/8 heads, 6+6 layers, qkv 512 (space0)."""
    fill_defaults(args, WMT_SPACE0)


@register_model_architecture("transformersuper", "transformersuper_wmt_en_fr")
def transformersuper_wmt_en_fr(args: Any) -> None:
    """WMT14 En-Fr SuperTransformer (space0)."""
    fill_defaults(args, WMT_SPACE0)


@register_model_architecture("transformersuper", "transformersuper_wmt19_en_de")
def transformersuper_wmt19_en_de(args: Any) -> None:
    """WMT19 En-De SuperTransformer (space0)."""
    fill_defaults(args, WMT_SPACE0)


@register_model_architecture("transformersuper", "transformersuper_iwslt_de_en")
def transformersuper_iwslt_de_en(args: Any) -> None:
    """IWSLT14 De-En SuperTransformer: 640/2048/4 heads (space1), dropout 0.375."""
    fill_defaults(args, IWSLT_SPACE1, dropout=0.375)
