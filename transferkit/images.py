"""Decoding and resizing images, the same way in training and in the serving graph.

`decode_encoded` and `resize_image` are TensorFlow ops, so the exported
SavedModel runs exactly the code that prepared the training pixels: JPEG
EXIF orientation applied (how phones record a rotated photo), grayscale,
palette and alpha made RGB, the first frame of a GIF; Pillow reads what
TensorFlow's decoder cannot (TIFF, some BMPs). Every task that reads images
uses this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def read_image(path: str) -> np.ndarray:
    """Decodes one file to an upright RGB uint8 array of its own size."""
    import tensorflow as tf

    data = Path(path).read_bytes()
    try:
        return decode_encoded(tf.constant(data)).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return _decode_with_pillow(data)


def decode_image(path: str, image_size: Sequence[int], resize: str, crop_fraction: float = 1.0) -> np.ndarray:
    """Decodes one file to an upright RGB uint8 array of `image_size` (see `resize_image`)."""
    return resize_array(read_image(path), image_size, resize, crop_fraction)


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
