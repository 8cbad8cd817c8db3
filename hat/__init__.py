"""HAT: Hardware-Aware Transformers as a fairseq plugin.

Importing ``hat`` registers the ``transformersuper`` and ``hat_subtransformer`` models (and the
task) with fairseq, so ``fairseq-train --user-dir <path to hat>`` works as well as our scripts.
"""

from hat.compat import patch_fairseq

patch_fairseq()

from hat import models, optim, tasks  # noqa: E402,F401  (registers models, hat_adam, task)
from hat.space import SearchSpace, SubConfig  # noqa: E402

__all__ = ["SearchSpace", "SubConfig"]
__version__ = "0.1.0"
