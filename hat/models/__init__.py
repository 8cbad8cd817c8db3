"""fairseq models: the SuperTransformer and the standalone SubTransformer."""

from hat.models.subtransformer import SubTransformerModel
from hat.models.supertransformer import TransformerSuperModel

__all__ = ["SubTransformerModel", "TransformerSuperModel"]
