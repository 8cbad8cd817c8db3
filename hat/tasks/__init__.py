"""fairseq tasks: translation with one sampled SubTransformer per update."""

from hat.tasks.translation import HatTranslationTask

__all__ = ["HatTranslationTask"]
