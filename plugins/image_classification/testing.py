"""Generated images for tests and examples of image classification: shapes on noisy backgrounds.

`make_image_folder` writes a class-folder dataset and `tiny_config` a config
for it on core's tiny backbone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.testing import tiny_vision_config
from transferkit.vision.testing import SHAPES, draw_shape  # noqa: F401  (re-exported for tests)

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
    return tiny_vision_config("image_classification", train, image_size, **sections)
