"""Real example inputs for a SavedModel's warmup records and parity check.

A run records the paths of real validation inputs in `info.json`
(`examples`); tasks that take encoded images read them through
`encoded_image_examples`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np

SERVABLE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF8")


def as_servable_bytes(data: bytes) -> bytes:
    """JPEG/PNG/BMP/GIF bytes as they are; anything else (TIFF, WebP, ...) re-encoded as PNG."""
    if data.startswith(SERVABLE_MAGIC):
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
        return out.getvalue()


def encoded_image_examples(info: Mapping[str, Any], count: int, image_size: tuple[int, int]) -> list[bytes]:
    """Up to `count` encoded images recorded by the run, or generated ones of `image_size` (the run's
    preprocessor's) when the files are gone."""
    encoded: list[bytes] = []
    for path in info.get("examples", info.get("sample_images", [])):
        if len(encoded) >= count:
            break
        try:
            encoded.append(as_servable_bytes(Path(path).read_bytes()))
        except OSError:
            continue
    if not encoded and count:
        import tensorflow as tf

        rng = np.random.default_rng(0)
        height, width = image_size
        for _ in range(min(count, 4)):
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            encoded.append(tf.io.encode_jpeg(pixels).numpy())
    return encoded
