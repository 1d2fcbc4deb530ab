"""Config sections of the multi-label image-classification task."""

from __future__ import annotations

import dataclasses
from typing import Literal

from transferkit.config import ImageDataSection, PATH, check
from transferkit.errors import ConfigError
from transferkit.vision.input_section import ImageInputSection


@dataclasses.dataclass(frozen=True)
class MultiLabelDataConfig(ImageInputSection, ImageDataSection):
    """Where the images and their label sets are.

    `train` (and `val`, `test`) is one of:
    - a CSV with columns `path,labels`, the labels of a row separated by `label_separator` (an empty cell:
      an image with none of the labels);
    - a CSV with a `path` column and one 0/1 column per label;
    - a folder of images, each with a text file of the same stem (`cat_01.jpg`, `cat_01.txt`) holding its
      labels, one per line or separated by `label_separator`.
    Without `val`, a seeded `val_split` of the training images is held out. The image input keys
    (`image_size`, `resize`, `crop_fraction`, `interpolation`, `max_pixels`) come from `ImageInputSection`.
    """

    train: str = dataclasses.field(default="", metadata={PATH: True})
    val: str | None = dataclasses.field(default=None, metadata={PATH: True})
    test: str | None = dataclasses.field(default=None, metadata={PATH: True})
    val_split: float = 0.2
    label_separator: str = ";"
    batch_size: int = 32
    class_names: list[str] | None = None
    on_bad_image: Literal["skip", "error"] = "skip"
    # The decoded images are held in memory; more than this many MB is refused before decoding.
    cache_memory_mb: int = 4096
    train_fraction: float = 1.0

    def __post_init__(self):
        if not self.train:
            raise ConfigError("data.train: required; expected a CSV file or an image folder with label files")
        check(0.0 < self.val_split < 1.0, "data.val_split", self.val_split, "a number in (0, 1)")
        check(len(self.label_separator) == 1 and self.label_separator not in ",\n\r\"",
              "data.label_separator", self.label_separator, "one character other than a comma, quote or newline")
        self.check_image_input()
        check(self.batch_size >= 1, "data.batch_size", self.batch_size, "an integer >= 1")
        check(0.0 < self.train_fraction <= 1.0, "data.train_fraction", self.train_fraction, "a number in (0, 1]")
        check(self.cache_memory_mb >= 1, "data.cache_memory_mb", self.cache_memory_mb, "an integer >= 1")
        if self.class_names is not None:
            check(len(set(self.class_names)) == len(self.class_names) and len(self.class_names) >= 1,
                  "data.class_names", self.class_names, "at least one name, all distinct")


@dataclasses.dataclass(frozen=True)
class MultiLabelHeadConfig:
    """Sigmoid outputs, one per label, and how each label's decision threshold is chosen."""

    dropout: float = 0.2
    hidden_units: int = 0
    loss: Literal["binary_crossentropy", "focal"] = "binary_crossentropy"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    # tuned: each label's threshold maximises its F1 on the validation images after training;
    # fixed: every label uses `threshold`. A label without validation positives keeps `threshold`.
    thresholds: Literal["tuned", "fixed"] = "tuned"
    threshold: float = 0.5
    top_k: int = 5  # labels shown per image by `predict`, besides those above their threshold

    def __post_init__(self):
        check(0.0 <= self.dropout < 1.0, "head.dropout", self.dropout, "a number in [0, 1)")
        check(self.hidden_units >= 0, "head.hidden_units", self.hidden_units, "an integer >= 0")
        check(self.focal_gamma >= 0.0, "head.focal_gamma", self.focal_gamma, "a number >= 0")
        check(0.0 <= self.label_smoothing < 1.0, "head.label_smoothing", self.label_smoothing, "a number in [0, 1)")
        check(0.0 < self.threshold < 1.0, "head.threshold", self.threshold, "a number in (0, 1)")
        check(self.top_k >= 1, "head.top_k", self.top_k, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class MultiLabelAugmentConfig:
    """Random changes to training images that keep every label true (no crops that could cut an object out)."""

    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    rotation: float = 0.0  # max fraction of a full turn
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self):
        for name in ("rotation", "brightness", "contrast"):
            value = getattr(self, name)
            check(0.0 <= value < 1.0, f"augment.{name}", value, "a number in [0, 1)")

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any(getattr(self, n) > 0 for n in ("rotation", "brightness", "contrast"))


@dataclasses.dataclass(frozen=True)
class MultiLabelConfig:
    """The task's own top-level sections: `data`, `augment`, `head`."""

    data: MultiLabelDataConfig
    augment: MultiLabelAugmentConfig = dataclasses.field(default_factory=MultiLabelAugmentConfig)
    head: MultiLabelHeadConfig = dataclasses.field(default_factory=MultiLabelHeadConfig)
