"""Decoding image files into one uint8 array, with the `on_bad_image` policy every image task shares."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from transferkit.errors import DataError
from transferkit.progress import progress


def decode_images(paths: Sequence[str], preprocessor, on_bad_image: str,
                  workers: int = 4) -> tuple[np.ndarray, list[int], list[dict[str, str]]]:
    """(images (N, H, W, 3) uint8, the indices of `paths` they came from, problems of the rest).

    Each file goes through `preprocessor.read_file` (an ImagePreprocessor: the serving graph's decode and
    resize). A file that does not decode is a problem, or a DataError naming it when `on_bad_image` is
    "error"; no usable file at all is a DataError listing the first reasons.

    Example:

    ```python
    images, kept, problems = decode_images(["a.jpg", "b.png"], ImagePreprocessor((64, 64)), "skip")
    ```
    """
    def decode(path: str):
        try:
            return preprocessor.read_file(path), None
        except Exception as error:  # Pillow and TensorFlow raise many types for bad files
            return None, f"unreadable image: {type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(progress(pool.map(decode, paths), "decoding images", len(paths), unit="image"))
    images, kept, problems = [], [], []
    for index, (path, (array, reason)) in enumerate(zip(paths, results)):
        if array is None:
            if on_bad_image == "error":
                raise DataError(f"{path}: {reason} (data.on_bad_image is 'error')")
            problems.append({"path": str(path), "reason": reason})
            continue
        images.append(array)
        kept.append(index)
    if not images:
        raise DataError("no usable images: " + "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5]))
    return np.stack(images), kept, problems
