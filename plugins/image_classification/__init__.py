"""Image classification: class folders or a CSV in, a fine-tuned classifier out."""

from transferkit.plugins.image_classification.config import (
    AugmentConfig,
    DataConfig,
    HeadConfig,
    ImageClassificationConfig,
)
from transferkit.plugins.image_classification.task import ImageClassification

__all__ = ["AugmentConfig", "DataConfig", "HeadConfig", "ImageClassification", "ImageClassificationConfig"]
