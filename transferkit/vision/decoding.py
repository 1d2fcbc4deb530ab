"""Decoding image files into one uint8 array, with the `on_bad_image` policy every image task shares."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from transferkit.errors import DataError
from transferkit.progress import progress


def decode_each(paths: Sequence[str], read: Callable[[str], np.ndarray], on_bad: str, field: str,
                workers: int = 4) -> tuple[list[np.ndarray], list[int], list[dict[str, str]]]:
    """(arrays, the indices of `paths` they came from, problems of the rest): `read` on every file, in a
    few threads, with the skip-or-raise policy (`on_bad` is the section's `field`, "skip" or "error").

    A file `read` fails on is a problem, or a DataError naming it under "error"; no usable file at all is a
    DataError listing the first reasons.
    """
    def decode(path: str):
        try:
            return read(path), None
        except Exception as error:  # Pillow and TensorFlow raise many types for bad files
            return None, f"unreadable image: {type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(progress(pool.map(decode, paths), "decoding images", len(paths), unit="image"))
    arrays, kept, problems = [], [], []
    for index, (path, (array, reason)) in enumerate(zip(paths, results)):
        if array is None:
            if on_bad == "error":
                raise DataError(f"{path}: {reason} ({field} is 'error')")
            problems.append({"path": str(path), "reason": reason})
            continue
        arrays.append(array)
        kept.append(index)
    if not arrays:
        raise DataError("no usable images: " + "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5]))
    return arrays, kept, problems


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
    images, kept, problems = decode_each(paths, preprocessor.read_file, on_bad_image, "data.on_bad_image", workers)
    return np.stack(images), kept, problems
