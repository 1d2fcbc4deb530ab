"""Generated images for tests and examples of image classification: shapes on noisy backgrounds.

`make_image_folder` writes a class-folder dataset and `tiny_config` a config
for it on core's tiny backbone; the object detection and audio fixtures
build on them.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from transferkit.testing import TINY_EFFICIENTNET

SHAPES = ("circle", "square", "triangle", "cross")


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image of one shape on a noisy background."""
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = rng.uniform(0, 255, size=3)
    image += rng.normal(0, 12, size=image.shape)
    color = rng.uniform(0, 255, size=3)
    while np.abs(color - image.mean(axis=(0, 1))).max() < 80:
        color = rng.uniform(0, 255, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65, size=2) * size
    radius = rng.uniform(0.2, 0.32) * size
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    elif shape == "square":
        mask = (np.abs(yy - cy) <= radius * 0.85) & (np.abs(xx - cx) <= radius * 0.85)
    elif shape == "triangle":
        top = cy - radius
        mask = (yy >= top) & (yy <= cy + radius) & (np.abs(xx - cx) <= (yy - top) * 0.6)
    elif shape == "cross":
        width = radius * 0.3
        mask = ((np.abs(yy - cy) <= width) & (np.abs(xx - cx) <= radius)) | (
            (np.abs(xx - cx) <= width) & (np.abs(yy - cy) <= radius))
    else:
        raise ValueError(f"draw_shape: unknown shape. Received: shape={shape!r}; expected one of {SHAPES}")
    image[mask] = color
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folder(root: str | os.PathLike, classes: tuple[str, ...] = SHAPES[:3], per_class: int = 8,
                      size: int = 32, seed: int = 0, fmt: str = "png") -> Path:
    """Writes `root/<class>/<i>.<fmt>` images of generated shapes."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw_shape(name, size, rng)).save(folder / f"{name}_{i:03d}.{fmt}")
    return root


def tiny_config(train: str | os.PathLike, image_size: int = 32, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for image classification on the tiny backbone."""
    data = {"train": str(train), "image_size": [image_size, image_size], "batch_size": 8}
    data.update(sections.pop("data", {}))
    config = {
        "task": "image_classification",
        "data": data,
        "backbone": copy.deepcopy(TINY_EFFICIENTNET),
        "stages": [
            {"name": "head", "freeze": {"backbone": True}, "epochs": 1, "learning_rate": 1e-2},
            {"name": "finetune", "freeze": {"top_blocks": 2}, "epochs": 1, "learning_rate": 1e-3},
        ],
        "training": {"verbose": 0, "tensorboard": False},
    }
    for key, value in sections.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config
