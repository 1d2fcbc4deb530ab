"""Config sections of the object-detection task: `data`, `augment`, `model`, `detect`."""

from __future__ import annotations

import dataclasses
from typing import Literal

from transferkit.config import ImageDataSection, PATH, check
from transferkit.errors import ConfigError


DEFAULT_MAX_BOXES = 100  # COCO's most crowded image has 93 boxes


@dataclasses.dataclass(frozen=True)
class DetectionDataConfig(ImageDataSection):
    """Where the annotated images are and how they are read.

    `train` (and `val`) is a Pascal VOC folder of XML files, a COCO JSON
    file, a YOLO folder (`images/`, `labels/`, `data.yaml`) or a CSV with
    `filename,width,height,class,xmin,ymin,xmax,ymax` (one row per box);
    `format: auto` tells them apart. `images` / `val_images` point at the
    image folder when it is not where the format expects it. Without `val`,
    a seeded `val_split` of the training images is held out.
    """

    train: str = dataclasses.field(default="", metadata={PATH: True})
    val: str | None = dataclasses.field(default=None, metadata={PATH: True})
    # Evaluated once, after training, and reported apart (metrics.json "test"); never picks the best epoch.
    test: str | None = dataclasses.field(default=None, metadata={PATH: True})
    format: Literal["auto", "voc", "coco", "yolo", "csv"] = "auto"
    images: str | None = dataclasses.field(default=None, metadata={PATH: True})
    val_images: str | None = dataclasses.field(default=None, metadata={PATH: True})
    val_split: float = 0.2
    image_size: tuple[int, int] = (320, 320)
    batch_size: int = 8
    class_names: list[str] | None = None
    on_bad_annotation: Literal["skip", "error"] = "skip"
    # The most boxes kept per image; targets are padded to the most any image has, up to this cap, so one
    # image with thousands of boxes cannot multiply every batch's memory (the cut is listed in the problems).
    # 0, written by configs before the cap existed, means the default.
    max_boxes: int = DEFAULT_MAX_BOXES
    # Train on a seeded share of the training images, stratified by each image's most frequent class.
    train_fraction: float = 1.0
    # As for image classification: memory decodes every image once; none streams them from the files each
    # epoch (headers checked up front); disk streams once into a tf.data file cache under cache_dir; auto:
    # memory while the decoded images fit in cache_memory_mb, else disk.
    cache: Literal["auto", "memory", "disk", "none"] = "auto"
    # Default: $TRANSFERKIT_HOME/data_cache.
    cache_dir: str | None = dataclasses.field(default=None, metadata={PATH: True})
    cache_memory_mb: int = 2048

    def __post_init__(self):
        if not self.train:
            raise ConfigError("data.train: required; expected a VOC folder, a COCO JSON, a YOLO folder or a CSV file")
        check(0.0 < self.val_split < 1.0, "data.val_split", self.val_split, "a number in (0, 1)")
        check(all(32 <= s <= 4096 and s % 32 == 0 for s in self.image_size), "data.image_size", list(self.image_size),
              "two multiples of 32 (the coarsest pyramid level's stride), [height, width]")
        check(self.batch_size >= 1, "data.batch_size", self.batch_size, "an integer >= 1")
        check(self.max_boxes >= 0, "data.max_boxes", self.max_boxes, "an integer >= 0")
        check(0.0 < self.train_fraction <= 1.0, "data.train_fraction", self.train_fraction, "a number in (0, 1]")
        check(self.cache_memory_mb >= 0, "data.cache_memory_mb", self.cache_memory_mb, "an integer >= 0")
        if self.class_names is not None:
            check(len(set(self.class_names)) == len(self.class_names) and len(self.class_names) >= 1,
                  "data.class_names", self.class_names, "at least one distinct name")


@dataclasses.dataclass(frozen=True)
class DetectionAugmentConfig:
    """Random augmentation of training batches; boxes move with the pixels (Keras box-aware layers)."""

    flip: Literal["none", "horizontal"] = "none"
    zoom: float = 0.0  # scale jitter: max fraction zoomed in or out
    translation: float = 0.0  # max fraction of the image size
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self):
        for name in ("zoom", "translation", "brightness", "contrast"):
            value = getattr(self, name)
            check(0.0 <= value < 1.0, f"augment.{name}", value, "a number in [0, 1)")

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any(getattr(self, n) > 0
                                          for n in ("zoom", "translation", "brightness", "contrast"))


@dataclasses.dataclass(frozen=True)
class DetectionModelConfig:
    """The detector put on the backbone's feature pyramid.

    RetinaNet: a feature pyramid over levels `min_level`..`max_level` (levels
    above the backbone's coarsest are computed from it), `fpn_channels` wide,
    and box and class heads of `head_convs` convolutions shared by all levels.
    YOLOv8: P3-P5 (min_level/max_level must be 3 and 5) projected to
    `fpn_channels`, a path-aggregation FPN of depth `head_convs - 1` (at
    least 1), anchor-free heads; the anchor settings do not apply.
    YOLOv4-tiny (`backbone.preset: yolov4-tiny-coco`): the whole COCO
    detector, its neck and heads included, comes from the preset; only the
    class rows of its output convolutions are new. `init_from` starts a class
    from a COCO class's rows (`{raccoon: bear}`); the level, channel and
    anchor settings do not apply.
    """

    architecture: Literal["retinanet", "yolo_v8", "yolov4_tiny"] = "retinanet"
    min_level: int = 3
    max_level: int = 7
    fpn_channels: int = 256
    head_convs: int = 4
    anchor_scales: int = 3
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_size: float = 4.0
    box_loss_weight: float = 1.0
    # Your class -> the source detector's class whose output rows it starts from (yolov4_tiny only).
    init_from: dict[str, str] | None = None

    def __post_init__(self):
        check(2 <= self.min_level <= self.max_level <= 8, "model.min_level", [self.min_level, self.max_level],
              "2 <= min_level <= max_level <= 8")
        check(self.fpn_channels >= 8, "model.fpn_channels", self.fpn_channels, "an integer >= 8")
        check(1 <= self.head_convs <= 8, "model.head_convs", self.head_convs, "an integer in [1, 8]")
        check(self.anchor_scales >= 1, "model.anchor_scales", self.anchor_scales, "an integer >= 1")
        check(len(self.aspect_ratios) >= 1 and all(r > 0 for r in self.aspect_ratios), "model.aspect_ratios",
              list(self.aspect_ratios), "positive numbers")
        check(0 < self.anchor_size <= 64, "model.anchor_size", self.anchor_size, "a number in (0, 64]")
        check(0 < self.box_loss_weight <= 1000, "model.box_loss_weight", self.box_loss_weight, "a number in (0, 1000]")
        if self.init_from is not None:
            check(self.architecture == "yolov4_tiny", "model.init_from", self.init_from,
                  "no value unless architecture: yolov4_tiny (the only detector whose class rows are pretrained)")
            check(len(self.init_from) >= 1 and all(isinstance(k, str) and isinstance(v, str) and k and v
                                                   for k, v in self.init_from.items()),
                  "model.init_from", self.init_from, "a mapping of your class names to source class names")
        if self.architecture == "yolo_v8":
            check((self.min_level, self.max_level) == (3, 5), "model.min_level", [self.min_level, self.max_level],
                  "min_level: 3 and max_level: 5 with architecture: yolo_v8 (it reads P3-P5)")


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    """Post-processing of `predict` and of the exported `serving_default` (a second signature takes them per request)."""

    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    max_detections: int = 100

    def __post_init__(self):
        check(0.0 <= self.score_threshold < 1.0, "detect.score_threshold", self.score_threshold, "a number in [0, 1)")
        check(0.0 < self.iou_threshold <= 1.0, "detect.iou_threshold", self.iou_threshold, "a number in (0, 1]")
        check(self.max_detections >= 1, "detect.max_detections", self.max_detections, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class ObjectDetectionConfig:
    """The task's own top-level sections: `data`, `augment`, `model`, `detect`."""

    data: DetectionDataConfig
    augment: DetectionAugmentConfig = dataclasses.field(default_factory=DetectionAugmentConfig)
    model: DetectionModelConfig = dataclasses.field(default_factory=DetectionModelConfig)
    detect: DetectConfig = dataclasses.field(default_factory=DetectConfig)
