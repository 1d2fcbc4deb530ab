"""Reading image folders and CSV files into decoded, resized arrays.

Images are decoded once with TensorFlow's decoder, the op of the serving
graph (Pillow for formats it lacks; EXIF orientation applied; grayscale,
palette and RGBA made RGB; the first frame of a GIF), resized with the same
resize as the serving graph and kept in memory as uint8. A file that cannot be used is listed with the reason
and skipped, or is fatal with `on_bad_image: error`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from transferkit.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclasses.dataclass
class Sample:
    path: str
    label: str


@dataclasses.dataclass
class LoadedImages:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int32
    paths: list[str]
    problems: list[dict[str, str]]


def list_samples(source: str | os.PathLike) -> tuple[list[Sample], list[dict[str, str]]]:
    """Samples of an image folder (class sub-folders) or a `path,label` CSV."""
    source = Path(source)
    if source.is_dir():
        return _list_folder(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return _list_csv(source)
    if not source.exists():
        raise DataError(f"{source}: not found; expected an image folder with one sub-folder per class, or a CSV file")
    raise DataError(f"{source}: expected an image folder or a .csv file")


def _list_folder(root: Path) -> tuple[list[Sample], list[dict[str, str]]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; expected one sub-folder of images per class")
    samples, problems = [], []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            problems.append({"path": str(class_dir), "reason": "empty class folder (no images); class skipped"})
            continue
        samples.extend(Sample(str(f), class_dir.name) for f in files)
    if not samples:
        raise DataError(f"{root}: no images found in any class folder (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return samples, problems


def _list_csv(path: Path) -> tuple[list[Sample], list[dict[str, str]]]:
    samples, problems = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if "path" not in fields or "label" not in fields:
            raise DataError(f"{path}: expected a header with columns 'path' and 'label', received {fields}")
        for line, row in enumerate(reader, start=2):
            rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not rel or not label:
                problems.append({"path": f"{path}:{line}", "reason": "row with an empty path or label"})
                continue
            file = (path.parent / rel).resolve()
            if not file.is_file():
                problems.append({"path": f"{path}:{line}", "reason": f"file not found: {file}"})
                continue
            samples.append(Sample(str(file), label))
    if not samples:
        raise DataError(f"{path}: no usable rows")
    return samples, problems


def decode_image(path: str, image_size: Sequence[int], resize: str, crop_fraction: float = 1.0) -> np.ndarray:
    """Decodes one file to an upright RGB uint8 array of `image_size`.

    TensorFlow's decoder is used where it can read the file: it is the op in
    the exported serving graph, so training and serving see the same pixels.
    Pillow reads the rest (TIFF, WebP, odd BMPs), and the EXIF orientation of
    phone photos is applied either way.
    """
    import tensorflow as tf

    data = Path(path).read_bytes()
    try:
        array = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        array = _decode_with_pillow(data)
    return resize_array(_apply_exif_orientation(data, array), image_size, resize, crop_fraction)


def _decode_with_pillow(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)  # first frame of animations
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _apply_exif_orientation(data: bytes, array: np.ndarray) -> np.ndarray:
    """Rotates/flips decoded pixels as the file's EXIF orientation tag asks."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = image.getexif().get(0x0112, 1)
    except Exception:
        return array
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.transpose(a, (1, 0, 2)),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: np.transpose(a, (1, 0, 2))[::-1, ::-1],
        8: lambda a: np.rot90(a, k=1),
    }
    transform = transforms.get(orientation)
    return np.ascontiguousarray(transform(array)) if transform else array


def resize_array(array: np.ndarray, image_size: Sequence[int], resize: str, crop_fraction: float = 1.0) -> np.ndarray:
    return resize_image(array, image_size, resize, crop_fraction).numpy().astype(np.uint8)


def resize_image(image, image_size: Sequence[int], resize: str, crop_fraction: float = 1.0):
    """(H, W, 3) pixels -> float32 `image_size` pixels, rounded to integers.

    The one resize of the project: the training pipeline and the exported
    serving graph both call it, so they see the same pixels.
    crop: central crop to the target aspect (`crop_fraction` of the largest
    such crop, as ImageNet evaluation does with 0.875), then resize;
    pad: fit inside and pad with black; stretch: resize ignoring the aspect.
    """
    import tensorflow as tf

    height, width = int(image_size[0]), int(image_size[1])
    image = tf.convert_to_tensor(image)
    if resize == "crop":
        out = tf.image.resize(crop_to_aspect(image, height, width, crop_fraction), (height, width), antialias=True)
    elif resize == "pad":
        out = tf.image.resize_with_pad(tf.cast(image, tf.float32), height, width, antialias=True)
    else:
        out = tf.image.resize(image, (height, width), antialias=True)
    # The training pipeline stores uint8 pixels: round the same way everywhere.
    return tf.clip_by_value(tf.round(out), 0.0, 255.0)


def crop_to_aspect(image, height: int, width: int, fraction: float = 1.0):
    """Central crop of `image` (H, W, C tensor) to the aspect ratio height:width."""
    import tensorflow as tf

    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    target = height / width
    crop_h = tf.minimum(h, w * target) * fraction
    crop_w = tf.minimum(w, h / target) * fraction
    crop_h_i = tf.maximum(tf.cast(tf.round(crop_h), tf.int32), 1)
    crop_w_i = tf.maximum(tf.cast(tf.round(crop_w), tf.int32), 1)
    top = (shape[0] - crop_h_i) // 2
    left = (shape[1] - crop_w_i) // 2
    return image[top:top + crop_h_i, left:left + crop_w_i]


def load_images(samples: list[Sample], class_names: list[str], image_size: Sequence[int], resize: str,
                on_bad_image: str, crop_fraction: float = 1.0, workers: int = 4) -> LoadedImages:
    """Decodes every sample once; bad files are skipped (with reasons) or fatal."""
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
            return decode_image(sample.path, image_size, resize, crop_fraction), None
        except Exception as error:  # Pillow raises many types for bad files
            return None, f"unreadable image: {type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(decode, usable))
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
