"""Config sections of the audio-classification task: `data`, `augment`, `head`."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from transferkit.config import ImageDataSection, PATH, check
from transferkit.errors import ConfigError
from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor
from transferkit.classification.head import HeadConfig


@dataclasses.dataclass(frozen=True)
class AudioDataConfig(ImageDataSection):
    """Where the clips are and how they become the model's input.

    `train` (and `val`) is a folder with one sub-folder of WAV files per class,
    or a CSV with `path,label` columns (paths relative to the CSV). Without
    `val`, a seeded `val_split` is held out. The spectrogram settings are
    those of `AudioPreprocessor`, which is saved with the run.
    """

    train: str = dataclasses.field(default="", metadata={PATH: True})
    val: str | None = dataclasses.field(default=None, metadata={PATH: True})
    # Evaluated once, after training, and reported apart (metrics.json "test"); never picks the best epoch.
    test: str | None = dataclasses.field(default=None, metadata={PATH: True})
    val_split: float = 0.2
    batch_size: int = 32
    class_names: list[str] | None = None
    on_bad_clip: Literal["skip", "error"] = "skip"
    train_fraction: float = 1.0
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    frame_ms: float = 25.0
    hop_ms: float = 10.0
    num_mels: int = 64
    min_hz: float = 20.0
    max_hz: float | None = None
    image_size: tuple[int, int] = (96, 96)
    front_end: Literal["auto", "spectrogram", "yamnet"] = "auto"

    def __post_init__(self):
        if not self.train:
            raise ConfigError("data.train: required; expected a folder of class sub-folders of WAV files or a CSV")
        check(0.0 < self.val_split < 1.0, "data.val_split", self.val_split, "a number in (0, 1)")
        check(self.batch_size >= 1, "data.batch_size", self.batch_size, "an integer >= 1")
        check(0.0 < self.train_fraction <= 1.0, "data.train_fraction", self.train_fraction, "a number in (0, 1]")
        if self.class_names is not None:
            check(len(set(self.class_names)) == len(self.class_names) and len(self.class_names) >= 2,
                  "data.class_names", self.class_names, "at least two distinct names")
        self.preprocessor()  # validates the spectrogram settings, naming the key

    def preprocessor(self) -> AudioPreprocessor:
        """The preprocessor these settings describe (its fields are the data section's keys of the same names)."""
        return AudioPreprocessor(**{field.name: getattr(self, field.name)
                                    for field in dataclasses.fields(AudioPreprocessor)})


@dataclasses.dataclass(frozen=True)
class AudioAugmentConfig:
    """Random augmentation of training clips: on the waveform, then SpecAugment on the spectrogram.

    No gain augmentation: the preprocessor scales each clip against its own
    loudest bin, so a louder copy of a clip gives the same spectrogram.
    """

    time_shift: float = 0.0  # max fraction of the clip the sound moves left or right
    noise_snr_db: tuple[float, float] | None = None  # white noise at a signal-to-noise ratio drawn from [min, max]
    time_masks: int = 0  # SpecAugment: masked bands of frames
    time_mask_width: float = 0.1  # max fraction of the width one mask covers
    freq_masks: int = 0  # SpecAugment: masked bands of mel bins
    freq_mask_width: float = 0.1

    def __post_init__(self):
        check(0.0 <= self.time_shift < 0.5, "augment.time_shift", self.time_shift, "a number in [0, 0.5)")
        if self.noise_snr_db is not None:
            low, high = self.noise_snr_db
            check(all(math.isfinite(v) for v in (low, high)) and -10 <= low <= high <= 100, "augment.noise_snr_db",
                  list(self.noise_snr_db), "[min, max] decibels with -10 <= min <= max <= 100")
        for name in ("time_masks", "freq_masks"):
            check(0 <= getattr(self, name) <= 10, f"augment.{name}", getattr(self, name), "an integer in [0, 10]")
        for name in ("time_mask_width", "freq_mask_width"):
            value = getattr(self, name)
            check(0.0 < value <= 0.5, f"augment.{name}", value, "a number in (0, 0.5]")

    @property
    def enabled(self) -> bool:
        return bool(self.time_shift or self.noise_snr_db is not None or self.time_masks or self.freq_masks)


@dataclasses.dataclass(frozen=True)
class AudioClassificationConfig:
    """The task's own top-level sections."""

    data: AudioDataConfig
    augment: AudioAugmentConfig = dataclasses.field(default_factory=AudioAugmentConfig)
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
