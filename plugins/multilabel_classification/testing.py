"""Generated multi-label images for tests and examples: a 2x2 grid of tiles, each a shape or plain noise;
an image's labels are the shapes it shows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.testing import tiny_vision_config
from transferkit.vision.testing import SHAPES, draw_shape


def draw_tiles(shapes: list[str | None], size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image of 4 tiles (row by row); a None tile is noise."""
    half = size // 2
    image = np.empty((2 * half, 2 * half, 3), np.uint8)
    for index, shape in enumerate(shapes):
        y, x = divmod(index, 2)
        tile = (draw_shape(shape, half, rng) if shape is not None
                else rng.integers(0, 256, (half, half, 3), dtype=np.uint8))
        image[y * half:(y + 1) * half, x * half:(x + 1) * half] = tile
    return image


def make_multilabel_folder(root: str | os.PathLike, count: int = 24, size: int = 32, labels=SHAPES[:3],
                           seed: int = 0, csv: bool = False) -> Path:
    """Writes `count` images with 1 to 3 of `labels` each: `<i>.png` + `<i>.txt` (or `labels.csv` with `csv`).

    Returns the folder (or the CSV).
    """
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        chosen = [labels[j] for j in sorted(rng.choice(len(labels), size=1 + i % min(3, len(labels)),
                                                       replace=False))]
        tiles = chosen + [None] * (4 - len(chosen))
        tiles = [tiles[j] for j in rng.permutation(4)]
        name = f"image_{i:03d}"
        Image.fromarray(draw_tiles(tiles, size, rng)).save(root / f"{name}.png")
        if csv:
            rows.append(f"{name}.png,{';'.join(chosen)}")
        else:
            (root / f"{name}.txt").write_text("\n".join(chosen) + "\n")
    if csv:
        path = root / "labels.csv"
        path.write_text("path,labels\n" + "\n".join(rows) + "\n")
        return path
    return root


def tiny_config(train: str | os.PathLike, image_size: int = 32, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for multi-label classification on the tiny backbone."""
    return tiny_vision_config("multilabel_classification", train, image_size, **sections)
