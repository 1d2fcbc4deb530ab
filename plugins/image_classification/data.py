"""Reading image folders and CSV files into decoded, resized arrays.

Images are decoded once by the same TensorFlow code as the exported serving
graph (`transferkit.vision.images`), resized by the same `resize_image` and kept in
memory as uint8. A file that cannot be used is listed with the reason and
skipped, or is fatal with `on_bad_image: error`.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from transferkit.errors import DataError
from transferkit.progress import progress
from transferkit.vision.samples import IMAGE_EXTENSIONS, Sample, list_samples  # noqa: F401  (re-exported)
# The one decoder and resize of the project, shared with the serving graph and other tasks.
from transferkit.vision.images import (  # noqa: F401  (re-exported)
    MAX_PIXELS,
    apply_orientation,
    crop_to_aspect,
    decode_encoded,
    decode_image,
    exif_orientation,
    resize_array,
    resize_image,
)

@dataclasses.dataclass
class LoadedImages:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int32
    paths: list[str]
    problems: list[dict[str, str]]


def load_images(samples: list[Sample], class_names: list[str], preprocessor, on_bad_image: str,
                workers: int = 4) -> LoadedImages:
    """Decodes every sample once through `preprocessor` (an ImagePreprocessor); bad files are skipped or fatal."""
    index = {name: i for i, name in enumerate(class_names)}
    problems: list[dict[str, str]] = []
    usable = []
    for sample in samples:
        if sample.label not in index:
            reason = f"label {sample.label!r} is not one of the classes {class_names}"
            if on_bad_image == "error":
                raise DataError(f"{sample.path}: {reason}")
            problems.append({"path": sample.path, "reason": reason})
        else:
            usable.append(sample)

    def decode(sample: Sample):
        try:
            return preprocessor.read_file(sample.path), None
        except Exception as error:  # Pillow raises many types for bad files
            return None, f"unreadable image: {type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(progress(pool.map(decode, usable), "decoding images", len(usable), unit="image"))
    images, labels, kept = [], [], []
    for sample, (array, reason) in zip(usable, results):
        if array is None:
            if on_bad_image == "error":
                raise DataError(f"{sample.path}: {reason} (data.on_bad_image is 'error')")
            problems.append({"path": sample.path, "reason": reason})
            continue
        images.append(array)
        labels.append(index[sample.label])
        kept.append(sample.path)
    if not images:
        raise DataError("no usable images: " + "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5]))
    return LoadedImages(np.stack(images), np.asarray(labels, dtype=np.int32), kept, problems)
