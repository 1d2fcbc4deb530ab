"""Text classification: labelled texts in, a fine-tuned BERT-style classifier that serves raw strings out."""

from transferkit.plugins.text_classification.config import (
    DataConfig,
    TextHeadConfig,
    TextClassificationConfig,
    TokenizerConfig,
)
from transferkit.plugins.text_classification.task import TextClassification

__all__ = ["DataConfig", "TextClassification", "TextClassificationConfig", "TextHeadConfig", "TokenizerConfig"]
