"""Generated images with boxes for tests and examples of object detection: the image task's shapes, placed apart."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.testing import TINY_PYRAMID_EFFICIENTNET, tiny_vision_config
from transferkit.vision.testing import SHAPES, draw_shape


def make_detection_dataset(root: str | os.PathLike, count: int = 24, size: int = 64, classes=SHAPES[:2],
                           seed: int = 0, fmt: str = "csv", max_objects: int = 2) -> Path:
    """Writes generated images with 1..`max_objects` shapes each and their boxes; returns the annotation path.

    `fmt` is "csv" (returns the CSV), "voc", "yolo" (return the folder) or
    "coco" (returns the JSON), written by the detection plugin's own writers.
    """
    from PIL import Image

    from transferkit.plugins.object_detection import annotations as ann

    root = Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        canvas = np.empty((size, size, 3), np.float32)
        canvas[:] = rng.uniform(0, 80, size=3)
        canvas += rng.normal(0, 8, size=canvas.shape)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            name = classes[int(rng.integers(len(classes)))]
            side = int(rng.integers(size // 4, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
            if any(not (x0 + side <= b[0] or b[2] <= x0 or y0 + side <= b[1] or b[3] <= y0) for b in boxes):
                continue  # no overlapping objects: every box is fully visible
            patch = draw_shape(name, side, rng).astype(np.float32)
            mask = np.abs(patch - patch[0, 0]).max(axis=-1) > 40  # the shape, not its background
            region = canvas[y0:y0 + side, x0:x0 + side]
            region[mask] = patch[mask]
            ys, xs = np.nonzero(mask)
            boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
            labels.append(name)
        path = images_dir / f"img_{i:03d}.png"
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(path)
        records.append(ann.ImageAnnotation(str(path), size, size, np.asarray(boxes, np.float32), labels))
    if fmt == "csv":
        ann.write_csv(records, root / "labels.csv")
        return root / "labels.csv"
    if fmt == "voc":
        ann.write_voc(records, root / "annotations")
        return root / "annotations"
    if fmt == "coco":
        ann.write_coco(records, root / "annotations.json", list(classes))
        return root / "annotations.json"
    if fmt == "yolo":
        ann.write_yolo(records, root / "yolo", list(classes))
        return root / "yolo"
    raise ValueError(f"make_detection_dataset: fmt must be csv, voc, coco or yolo. Received: fmt={fmt!r}")


def tiny_detection_config(train: str | os.PathLike, image_size: int = 64, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for object detection on the tiny pyramid backbone."""
    config = tiny_vision_config("object_detection", train, image_size, **sections)
    config["task"] = "object_detection"
    config["backbone"] = copy.deepcopy(TINY_PYRAMID_EFFICIENTNET)
    config["data"].setdefault("image_size", [image_size, image_size])
    config.setdefault("model", {"fpn_channels": 16, "head_convs": 1, "min_level": 3, "max_level": 5})
    return config


# A Darknet cfg of YOLOv4-tiny's shape (channel-split routes, two [yolo] outputs at strides 32 and 16, an
# upsampling path between them) with a few channels per layer: tests build a preset from it in a second.
TINY_YOLO_CFG = """
[net]
width=64
height=64
[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[route]
layers=-1
groups=2
group_id=1
[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky
[route]
layers=-1,-3
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky
[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear
[yolo]
mask=3,4,5
anchors=6,8, 10,12, 14,20, 20,22, 28,30, 44,40
classes=3
num=6
scale_x_y=1.05
ignore_thresh=.7
[route]
layers=-4
[convolutional]
batch_normalize=1
filters=4
size=1
stride=1
pad=1
activation=leaky
[upsample]
stride=2
[route]
layers=-1,6
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear
[yolo]
mask=0,1,2
anchors=6,8, 10,12, 14,20, 20,22, 28,30, 44,40
classes=3
num=6
scale_x_y=1.05
ignore_thresh=.7
"""
TINY_YOLO_CLASSES = ("person", "cat", "dog")


def make_tiny_yolo_preset(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A YOLOv4-tiny-shaped preset folder (randomly initialised, 3 source classes `TINY_YOLO_CLASSES`)
    laid out as `import_yolov4_tiny_coco` writes one, for `backbone.preset` with `architecture: yolov4_tiny`."""
    import json

    import keras

    from transferkit.models.families.yolov4_tiny import model as yt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    detector = yt.build_yolov4_tiny(TINY_YOLO_CFG, 64)
    backbone = yt.YoloV4TinyBackbone(TINY_YOLO_CFG)
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(detector.get_layer(layer.name).get_weights())
    detector.save(folder / "model.keras")
    backbone.save_to_preset(str(folder))
    (folder / yt.CFG_FILE).write_text(TINY_YOLO_CFG, encoding="utf-8")
    (folder / "class_names.txt").write_text("\n".join(TINY_YOLO_CLASSES) + "\n", encoding="utf-8")
    facts = {"importer": yt.IMPORTER, "cfg": yt.CFG_FILE, "preset_version": yt.PRESET_VERSION,
             "classes": len(TINY_YOLO_CLASSES), "normalization": {"scale": 1 / 255, "offset": 0.0}}
    (folder / yt.PROVENANCE_FILE).write_text(json.dumps(facts), encoding="utf-8")
    return folder
