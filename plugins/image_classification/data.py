"""Reading image folders and CSV files into decoded, resized arrays.

Images are decoded once by the same TensorFlow code as the exported serving
graph (`transferkit.vision.images`), resized by the same `resize_image` and kept in
memory as uint8. A file that cannot be used is listed with the reason and
skipped, or is fatal with `on_bad_image: error`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from transferkit.errors import DataError
from transferkit.vision.decoding import decode_images
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
    if not usable:
        raise DataError("no usable images: " + "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5]))
    images, kept, decode_problems = decode_images([s.path for s in usable], preprocessor, on_bad_image, workers)
    return LoadedImages(images, np.asarray([index[usable[i].label] for i in kept], dtype=np.int32),
                        [usable[i].path for i in kept], problems + decode_problems)
