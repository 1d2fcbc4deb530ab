"""Config sections of the image-classification task."""

from __future__ import annotations

import dataclasses
from typing import Literal

from transferkit.classification.head import HeadConfig
from transferkit.config import ImageDataSection, PATH, check
from transferkit.errors import ConfigError
from transferkit.vision.input_section import ImageInputSection


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation applied to training batches only."""

    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    zoom: float = 0.0  # max fraction zoomed in or out
    rotation: float = 0.0  # max fraction of a full turn
    translation: float = 0.0  # max fraction of the image size
    brightness: float = 0.0
    contrast: float = 0.0
    mixup_alpha: float = 0.0  # 0 disables mixup
    cutmix_alpha: float = 0.0  # 0 disables cutmix; with mixup too, each batch gets one of them
    # Random resized crop: [min, max] share of the image's area, pixel aspect (w/h) log-uniform in crop_ratio.
    # Cut from the decoded photo when the data is streamed (data.cache: none), else from the cached image.
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (0.75, 1.3333)

    def __post_init__(self):
        for name in ("zoom", "rotation", "translation", "brightness", "contrast"):
            value = getattr(self, name)
            check(0.0 <= value < 1.0, f"augment.{name}", value, "a number in [0, 1)")
        check(self.mixup_alpha >= 0.0, "augment.mixup_alpha", self.mixup_alpha, "a number >= 0")
        check(self.cutmix_alpha >= 0.0, "augment.cutmix_alpha", self.cutmix_alpha, "a number >= 0")
        if self.crop_scale is not None:
            check(0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0, "augment.crop_scale",
                  list(self.crop_scale), "[min, max] with 0 < min <= max <= 1")
        check(0.0 < self.crop_ratio[0] <= self.crop_ratio[1], "augment.crop_ratio", list(self.crop_ratio),
              "[min, max] with 0 < min <= max")

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or self.crop_scale is not None or any(
            getattr(self, n) > 0
            for n in ("zoom", "rotation", "translation", "brightness", "contrast", "mixup_alpha", "cutmix_alpha")
        )


@dataclasses.dataclass(frozen=True)
class DataConfig(ImageInputSection, ImageDataSection):
    """Where the images are and how they are read.

    The image input keys (`image_size`, `resize`, `crop_fraction`, `interpolation`, `max_pixels`)
    come from `ImageInputSection`. `train` (and `val`) is an image folder with one sub-folder per class, or a
    CSV file with `path,label` columns (paths relative to the CSV). Without
    `val`, a seeded `val_split` of the training data is held out.
    """

    train: str = dataclasses.field(default="", metadata={PATH: True})
    val: str | None = dataclasses.field(default=None, metadata={PATH: True})
    # Evaluated once, after training, and reported apart (metrics.json "test"); never picks the best epoch.
    test: str | None = dataclasses.field(default=None, metadata={PATH: True})
    val_split: float = 0.2
    batch_size: int = 32
    class_names: list[str] | None = None
    class_weights: Literal["none", "balanced"] = "none"
    on_bad_image: Literal["skip", "error"] = "skip"
    # memory: decode every image once into memory (fastest epochs, exact bad-file reports); none: stream
    # from the files every epoch, holding nothing; disk: stream once into a tf.data file cache under
    # cache_dir, reused by later epochs and runs; auto: memory when the decoded training and validation
    # images fit in cache_memory_mb, else disk.
    cache: Literal["auto", "memory", "disk", "none"] = "auto"
    # Default: $TRANSFERKIT_HOME/data_cache.
    cache_dir: str | None = dataclasses.field(default=None, metadata={PATH: True})
    cache_memory_mb: int = 2048
    # Train on a seeded, stratified share of the training images (learning curves); validation is unchanged.
    train_fraction: float = 1.0

    def __post_init__(self):
        if not self.train:
            raise ConfigError("data.train: required; expected an image folder or a CSV file path")
        check(0.0 < self.val_split < 1.0, "data.val_split", self.val_split, "a number in (0, 1)")
        self.check_image_input()
        check(self.batch_size >= 1, "data.batch_size", self.batch_size, "an integer >= 1")
        check(0.0 < self.train_fraction <= 1.0, "data.train_fraction", self.train_fraction, "a number in (0, 1]")
        check(self.cache_memory_mb >= 0, "data.cache_memory_mb", self.cache_memory_mb, "an integer >= 0")
        if self.class_names is not None:
            check(len(set(self.class_names)) == len(self.class_names) and len(self.class_names) >= 2,
                  "data.class_names", self.class_names, "at least two distinct names")


@dataclasses.dataclass(frozen=True)
class ImageClassificationConfig:
    """The task's own top-level sections: `data`, `augment`, `head`."""

    data: DataConfig
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
