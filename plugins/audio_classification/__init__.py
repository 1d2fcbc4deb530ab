"""Audio classification: class folders of WAV clips in, a fine-tuned classifier of spoken words or sounds out."""

from transferkit.plugins.audio_classification.config import (
    AudioAugmentConfig,
    AudioClassificationConfig,
    AudioDataConfig,
)
from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor
from transferkit.plugins.audio_classification.task import AudioClassification

__all__ = ["AudioAugmentConfig", "AudioClassification", "AudioClassificationConfig", "AudioDataConfig",
           "AudioPreprocessor"]
