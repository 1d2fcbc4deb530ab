"""Reading image folders and CSV files into decoded, resized arrays.

Images are decoded once by the same TensorFlow code as the exported serving
graph (`decode_encoded`: JPEG EXIF orientation applied; grayscale, palette
and RGBA made RGB; the first frame of a GIF; Pillow for formats TensorFlow
lacks), resized by the same `resize_image` and kept in memory as uint8. A file that cannot be used is listed with the reason
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

    `decode_encoded` is the same code as the exported serving graph, so
    training and serving see the same pixels; Pillow reads what TensorFlow's
    decoder cannot (TIFF, some BMPs).
    """
    import tensorflow as tf

    data = Path(path).read_bytes()
    try:
        image = decode_encoded(tf.constant(data))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        image = _decode_with_pillow(data)
    return resize_array(image, image_size, resize, crop_fraction)


def decode_encoded(encoded):
    """Encoded bytes (scalar string tensor) -> upright uint8 (H, W, 3), in TensorFlow ops.

    JPEG, PNG, BMP, GIF (first frame) and WebP; grayscale and alpha become RGB;
    a JPEG's EXIF orientation (how phones record a rotated photo) is applied.
    """
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return apply_orientation(image, exif_orientation(encoded))


def _decode_with_pillow(data: bytes) -> np.ndarray:
    import io

    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)  # first frame of animations
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)


_EXIF_MARKER = b"Exif\x00\x00"
_MAX_IFD_ENTRIES = 64


def exif_orientation(encoded):
    """The EXIF orientation tag (1..8) of JPEG bytes, 1 when absent; TensorFlow ops only.

    Reads the TIFF header after the APP1 "Exif" marker, then the entries of
    the first IFD, in the file's byte order. Out-of-range offsets read zero
    padding instead of failing, so any input yields a value.
    """
    import tensorflow as tf

    head = tf.strings.substr(encoded, 0, 65536)
    parts = tf.strings.split(head, sep=_EXIF_MARKER, maxsplit=1)
    found = tf.logical_and(tf.equal(tf.strings.substr(head, 0, 2), b"\xff\xd8"), tf.equal(tf.size(parts), 2))
    tiff = tf.where(found, parts[-1], b"")
    length = tf.strings.length(tiff)
    padded = tf.strings.join([tiff, b"\x00" * (16 + 12 * _MAX_IFD_ENTRIES)])
    little = tf.equal(tf.strings.substr(padded, 0, 2), b"II")

    def unsigned(raw, size):  # raw: (..., size) int32 bytes
        little_weights = tf.constant([256 ** i for i in range(size)], tf.int64)
        big_weights = tf.reverse(little_weights, [0])
        raw = tf.cast(raw, tf.int64)
        return tf.where(little, tf.reduce_sum(raw * little_weights, -1), tf.reduce_sum(raw * big_weights, -1))

    def read(position, size):
        return unsigned(tf.io.decode_raw(tf.strings.substr(padded, position, size), tf.uint8), size)

    ifd = tf.cast(tf.minimum(read(4, 4), tf.cast(length, tf.int64)), tf.int32)
    count = tf.minimum(read(ifd, 2), _MAX_IFD_ENTRIES)
    entries = tf.reshape(tf.io.decode_raw(tf.strings.substr(padded, ifd + 2, 12 * _MAX_IFD_ENTRIES), tf.uint8),
                         [_MAX_IFD_ENTRIES, 12])
    tags = unsigned(entries[:, 0:2], 2)
    values = unsigned(entries[:, 8:10], 2)
    wanted = tf.logical_and(tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64) < count, tf.equal(tags, 0x0112))
    orientation = tf.reduce_max(tf.where(wanted, values, 0))
    valid = tf.logical_and(found, tf.logical_and(orientation >= 1, orientation <= 8))
    return tf.cast(tf.where(valid, orientation, 1), tf.int32)


def apply_orientation(image, orientation):
    """Turns (H, W, C) pixels upright for an EXIF orientation 1..8."""
    import tensorflow as tf

    branches = [
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image),
        lambda: tf.image.transpose(image),
        lambda: tf.image.rot90(image, 3),
        lambda: tf.image.rot90(tf.image.transpose(image), 2),
        lambda: tf.image.rot90(image, 1),
    ]
    return tf.switch_case(orientation - 1, branches)


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
