"""Generated images for tests and examples of the image tasks: shapes on noisy backgrounds."""

from __future__ import annotations

import numpy as np

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
