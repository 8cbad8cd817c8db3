"""A standalone SubTransformer (fairseq model ``hat_subtransformer``) with compact shapes.

Every module is built at exactly the SubTransformer's own dims, so nothing is sliced at run time.
It still records the SuperTransformer's widths and encoder depth, because HAT's sinusoid table,
dropout scaling and arbitrary attention are defined relative to them.
"""

from __future__ import annotations

from typing import Any

from fairseq.models import FairseqEncoderDecoderModel, register_model, register_model_architecture

from hat.errors import HatConfigError
from hat.models.args import add_model_args, fill_defaults, sub_config_from_args
from hat.models.supertransformer import build_embeddings, regularization
from hat.models.transformer import HatDecoder, HatEncoder, Widths
from hat.modules.attention import prefer_shape_agnostic_sdpa
from hat.space import SubConfig


@register_model("hat_subtransformer")
class SubTransformerModel(FairseqEncoderDecoderModel):
    """One SubTransformer, exported from a SuperTransformer."""

    def __init__(self, args: Any, encoder: HatEncoder, decoder: HatDecoder, cfg: SubConfig) -> None:
        super().__init__(encoder, decoder)
        self.args, self.sample_config = args, cfg
        encoder.set_sample(cfg)
        decoder.set_sample(cfg)

    @staticmethod
    def add_args(parser: Any) -> None:
        """Same keys as the SuperTransformer; the ``*-subtransformer`` ones are required."""
        add_model_args(parser)

    @classmethod
    def build_model(cls, args: Any, task: Any) -> SubTransformerModel:
        """Build at the SubTransformer's own dims (super dims kept for positions/dropout)."""
        fill_defaults(args)
        cfg = sub_config_from_args(args)
        if cfg is None:
            raise HatConfigError("hat_subtransformer needs the *-subtransformer keys")
        enc_w, dec_w = compact_widths(args, cfg)
        enc_emb, dec_emb, out_w = build_embeddings(
            args,
            task.source_dictionary,
            task.target_dictionary,
            cfg.encoder_embed_dim,
            cfg.decoder_embed_dim,
        )
        reg, impl = regularization(args), args.attn_impl
        if impl == "sdpa":
            prefer_shape_agnostic_sdpa()
        encoder = HatEncoder(
            task.source_dictionary, enc_emb, enc_w, reg, args.max_source_positions, impl
        )
        decoder = HatDecoder(
            task.target_dictionary, dec_emb, dec_w, reg, out_w, args.max_target_positions, impl
        )
        return cls(args, encoder, decoder, cfg)

    def set_sample_config(self, cfg: SubConfig | None = None, source: str | None = None) -> None:
        """A standalone SubTransformer is only its own config."""
        if cfg is not None and cfg != self.sample_config:
            raise HatConfigError(
                f"{source or 'config'}: a standalone SubTransformer runs only its own "
                f"architecture ({self.sample_config.describe()})"
            )

    def max_positions(self) -> tuple[int, int]:
        """(source, target) maximum lengths."""
        return self.encoder.max_positions(), self.decoder.max_positions()


def compact_widths(args: Any, cfg: SubConfig) -> tuple[Widths, Widths]:
    """Build-time widths of a standalone SubTransformer."""
    q = args.qkv_dim
    enc = Widths(
        cfg.encoder_embed_dim,
        args.encoder_embed_dim,
        cfg.encoder_ffn_embed_dim,
        cfg.encoder_self_attention_heads,
        args.encoder_layers,
        q,
    )
    dec = Widths(
        cfg.decoder_embed_dim,
        args.decoder_embed_dim,
        cfg.decoder_ffn_embed_dim,
        cfg.decoder_self_attention_heads,
        args.encoder_layers,
        q,
        cfg.decoder_ende_attention_heads,
        cfg.encoder_embed_dim,
    )
    return enc, dec


@register_model_architecture("hat_subtransformer", "hat_subtransformer")
def hat_subtransformer(args: Any) -> None:
    """Defaults of a standalone SubTransformer: the super dims it was exported from."""
    fill_defaults(args)
