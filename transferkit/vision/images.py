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


# Images with more pixels are refused before they are decoded: a 2 MB JPEG of 12000x12000
# pixels would otherwise cost 0.4 GB decoded (and more resized), in training and in a server.
MAX_PIXELS = 40_000_000
PIXEL_CAP_MESSAGE = "image has more pixels than the cap of"


class TooManyPixels(ValueError):
    """An image whose header declares more pixels than the cap."""


# Formats TensorFlow decodes in the graph; others (TIFF, ...) go through Pillow.
TF_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"})


# JPEG start-of-frame markers (baseline, progressive, lossless, ...): not DHT (C4), JPG (C8) or DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Bytes read for a JPEG's markers up to its first scan; longer headers (large EXIF thumbnails) go to Pillow.
JPEG_HEAD_BYTES = 65536


def jpeg_frame_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's markers, read up to the first scan; None if `head` does not show a sound one.

    A well-formed segment sequence up to the start of scan, with one frame header of non-zero size,
    is what Pillow's header check accepts too; anything else (and a header longer than `head`)
    returns None, for Pillow to decide. About 10x faster than opening the file with Pillow.
    """
    if head[:3] != b"\xff\xd8\xff":
        return None
    size, i = None, 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: the header is complete
            return size
        if 0xD0 <= marker <= 0xD7:  # restart markers carry no length
            i += 2
            continue
        if marker in (0x01, 0xD8, 0xD9):  # unusual before a scan: Pillow decides
            return None
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if size is not None or i + 10 > len(head):
                return None
            precision, components = head[i + 4], head[i + 9]
            height, width = int.from_bytes(head[i + 5:i + 7], "big"), int.from_bytes(head[i + 7:i + 9], "big")
            # 8-bit samples in 1, 3 or 4 components, as Pillow and TensorFlow's decoder require.
            if precision != 8 or components not in (1, 3, 4) or length < 8 + 3 * components or not width or not height:
                return None
            size = (width, height)
        i += 2 + length
    return None


def image_header(source, upright: bool = False) -> tuple[str | None, int, int]:
    """(format, width, height) from an image's header alone (a path or a file object); Pillow's errors pass.

    `upright`: the size once decoding has applied the EXIF orientation (to JPEGs in TensorFlow, to
    every format Pillow decodes), width and height swapped for the orientations that turn a quarter.
    JPEG paths are read by `jpeg_frame_size` where the orientation is not needed.
    """
    import warnings

    from PIL import Image

    if not upright and isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            head = handle.read(4096)  # most JPEG headers end within it
            size = jpeg_frame_size(head)
            if size is None and head[:3] == b"\xff\xd8\xff":
                size = jpeg_frame_size(head + handle.read(JPEG_HEAD_BYTES - len(head)))
        if size is not None:
            return "JPEG", *size

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel cap decides
        with Image.open(source) as image:  # reads the header only
            width, height = image.size
            rotated_on_decode = image.format == "JPEG" or image.format not in TF_FORMATS
            if upright and rotated_on_decode and image.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            return image.format, width, height


def check_pixel_cap(width: int, height: int, max_pixels: int) -> None:
    """Raises TooManyPixels when a header's size exceeds the cap."""
    if width * height > max_pixels:
        raise TooManyPixels(f"{width}x{height} pixels, more than the cap of {max_pixels:,} (data.max_pixels)")


def read_image(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decodes one file to an upright RGB uint8 array of its own size (at most `max_pixels`)."""
    import io

    import tensorflow as tf

    data = Path(path).read_bytes()
    try:
        _, width, height = image_header(io.BytesIO(data))
    except Exception:
        width = height = 0  # not for Pillow: TensorFlow's decoder decides below
    check_pixel_cap(width, height, max_pixels)
    try:
        return decode_encoded(tf.constant(data), max_pixels).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        if PIXEL_CAP_MESSAGE in str(error):
            raise TooManyPixels(f"its header declares more pixels than the cap of {max_pixels:,} "
                                f"(data.max_pixels)") from None
        return _decode_with_pillow(data)


def decode_image(path: str, image_size: Sequence[int], resize: str, crop_fraction: float = 1.0,
                 max_pixels: int = MAX_PIXELS, interpolation: str = "bilinear") -> np.ndarray:
    """Decodes one file to an upright RGB uint8 array of `image_size` (see `resize_image`)."""
    return resize_array(read_image(path, max_pixels), image_size, resize, crop_fraction, interpolation)


def header_pixels(encoded):
    """Pixels an encoded JPEG, PNG, GIF, BMP or WebP declares in its header, in TensorFlow ops.

    0 for other formats, which TensorFlow's decoder refuses anyway. A GIF's size is its canvas:
    `decode_encoded` keeps only its first frame before decoding.
    """
    import tensorflow as tf

    def unsigned(offset, size, big_endian):
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, offset, size), tf.uint8), tf.int64)
        order = tf.range(size, dtype=tf.int64) if not big_endian else tf.range(size - 1, -1, -1, dtype=tf.int64)
        return tf.reduce_sum(raw * tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * order))

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        return shape[0] * shape[1]

    def png():
        return unsigned(16, 4, True) * unsigned(20, 4, True)

    def gif():
        return unsigned(6, 2, False) * unsigned(8, 2, False)

    def bmp():
        core = unsigned(14, 4, False) == 12  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        height = tf.where(core, unsigned(20, 2, False), unsigned(22, 4, False))
        height = tf.where(height >= 2**31, 2**32 - height, height)  # negative: a top-down bitmap
        return tf.where(core, unsigned(18, 2, False), unsigned(18, 4, False)) * height

    def webp():
        chunk = tf.strings.substr(encoded, 12, 4)
        lossy = (unsigned(26, 2, False) % 16384) * (unsigned(28, 2, False) % 16384)
        bits = unsigned(21, 4, False)  # VP8L: 14 bits width - 1, 14 bits height - 1
        lossless = (bits % 16384 + 1) * ((bits // 16384) % 16384 + 1)
        extended = (unsigned(24, 3, False) + 1) * (unsigned(27, 3, False) + 1)  # VP8X canvas
        # An unknown chunk gets a size over any cap: refused rather than decoded blind.
        return tf.case([(chunk == b"VP8 ", lambda: lossy), (chunk == b"VP8L", lambda: lossless),
                        (chunk == b"VP8X", lambda: extended)], default=lambda: tf.constant(2**62, tf.int64))

    length = tf.strings.length(encoded)
    head = tf.strings.substr(tf.strings.join([encoded, b"\0" * 12]), 0, 12)  # padded: short inputs have a head
    return tf.case([
        (tf.logical_and(tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff", length > 3), jpeg),
        (tf.logical_and(tf.strings.substr(head, 0, 8) == b"\x89PNG\r\n\x1a\n", length >= 24), png),
        (tf.logical_and(tf.strings.substr(head, 0, 3) == b"GIF", length >= 10), gif),
        (tf.logical_and(tf.strings.substr(head, 0, 2) == b"BM", length >= 26), bmp),
        (tf.logical_and(tf.logical_and(tf.strings.substr(head, 0, 4) == b"RIFF",
                                       tf.strings.substr(head, 8, 4) == b"WEBP"), length >= 30), webp),
    ], default=lambda: tf.constant(0, tf.int64), exclusive=False)


def gif_first_frame(encoded):
    """A GIF cut after its first image, with a trailer; other bytes as they are (TensorFlow ops).

    TensorFlow decodes every frame of a GIF at the canvas size even when only the first is
    kept, so a few kilobytes of one-pixel frames would cost gigabytes. Walking the blocks to
    the end of the first image costs one step per 255-byte sub-block of that image.
    """
    import tensorflow as tf

    length = tf.strings.length(encoded)
    pad = 1100  # past the longest block header (descriptor + colour table) and sub-block
    raw = tf.concat([tf.cast(tf.io.decode_raw(encoded, tf.uint8), tf.int32), tf.zeros([pad], tf.int32)], 0)

    def at(position):
        return tf.gather(raw, tf.minimum(position, length + pad - 1))

    def table(flags):  # bytes of the colour table that a packed-flags byte announces
        return tf.where(tf.bitwise.bitwise_and(flags, 0x80) > 0,
                        3 * tf.bitwise.left_shift(2, tf.bitwise.bitwise_and(flags, 7)), 0)

    block, extension, image, done = 0, 1, 2, 3

    def step(position, mode, cut):
        byte = at(position)
        next_block = tf.where(byte == 0x21, position + 2,
                              tf.where(byte == 0x2C, position + 11 + table(at(position + 9)), position))
        next_mode = tf.where(byte == 0x21, extension, tf.where(byte == 0x2C, image, done))
        in_blocks = position + byte + 1
        blocks_mode = tf.where(byte == 0, tf.where(mode == extension, block, done), mode)
        new_cut = tf.where(tf.logical_and(mode == image, byte == 0), in_blocks, cut)
        return (tf.where(mode == block, next_block, in_blocks),
                tf.where(mode == block, next_mode, blocks_mode),
                new_cut)

    start = 13 + table(at(10))
    _, _, cut = tf.while_loop(lambda position, mode, cut: tf.logical_and(mode != done, position < length),
                              step, (start, tf.constant(block), tf.constant(-1)))
    is_gif = tf.strings.substr(encoded, 0, 3) == b"GIF"
    return tf.cond(tf.logical_and(is_gif, cut > 0),
                   lambda: tf.strings.join([tf.strings.substr(encoded, 0, cut), b";"]),
                   lambda: encoded)


def decode_encoded(encoded, max_pixels: int = MAX_PIXELS):
    """Encoded bytes (scalar string tensor) -> upright uint8 (H, W, 3), in TensorFlow ops.

    JPEG, PNG, BMP, GIF (first frame) and WebP; grayscale and alpha become RGB;
    a JPEG's EXIF orientation (how phones record a rotated photo) is applied.
    An image whose header declares more than `max_pixels` pixels is refused
    (InvalidArgumentError) before it is decoded.
    """
    import tensorflow as tf

    check = tf.debugging.assert_less_equal(
        header_pixels(encoded), tf.constant(max_pixels, tf.int64),
        message=f"{PIXEL_CAP_MESSAGE} {max_pixels}")
    with tf.control_dependencies([check]):
        encoded = tf.cond(tf.strings.substr(encoded, 0, 3) == b"GIF", lambda: gif_first_frame(encoded),
                          lambda: tf.identity(encoded))
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


def resize_array(array: np.ndarray, image_size: Sequence[int], resize: str, crop_fraction: float = 1.0,
                 interpolation: str = "bilinear") -> np.ndarray:
    return resize_image(array, image_size, resize, crop_fraction, interpolation).numpy().astype(np.uint8)


INTERPOLATIONS = ("area", "bilinear")


def resize_image(image, image_size: Sequence[int], resize: str, crop_fraction: float = 1.0,
                 interpolation: str = "bilinear"):
    """(H, W, 3) pixels -> float32 `image_size` pixels, rounded to integers.

    The one resize of the project: the training pipeline and the exported
    serving graph both call it, so they see the same pixels.
    crop: central crop to the target aspect (`crop_fraction` of the largest
    such crop, as ImageNet evaluation does with 0.875), then resize;
    pad: fit inside and pad with black; stretch: resize ignoring the aspect.
    interpolation: "bilinear" is antialiased bilinear (a triangle filter);
    "area" averages the source pixels under each output pixel (a box
    filter), about twice as fast when shrinking, and falls back to
    antialiased bilinear for an image smaller than the target (area would
    repeat pixels there).
    """
    import tensorflow as tf

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}. Received: interpolation={interpolation!r}")
    height, width = int(image_size[0]), int(image_size[1])
    image = tf.convert_to_tensor(image)
    if resize == "crop":
        image = crop_to_aspect(image, height, width, crop_fraction)

    def resized(method):
        if resize == "pad":
            return tf.image.resize_with_pad(tf.cast(image, tf.float32), height, width, method=method,
                                            antialias=True)
        return tf.image.resize(image, (height, width), method=method, antialias=True)

    if interpolation == "area":
        shape = tf.shape(image)
        shrinking = tf.logical_and(shape[0] >= height, shape[1] >= width)
        out = tf.cond(shrinking, lambda: resized("area"), lambda: resized("bilinear"))
    else:
        out = resized("bilinear")
    # The training pipeline stores uint8 pixels: round the same way everywhere.
    return tf.clip_by_value(tf.round(out), 0.0, 255.0)


def random_crop_boxes(count, seed, scale: Sequence[float], ratio: Sequence[float], aspect):
    """`count` random crop boxes [y0, x0, y1, x1] as fractions of an image whose height/width is `aspect`.

    Each box covers a fraction of the image's area drawn uniformly from
    `scale` and has a pixel aspect (width/height) drawn log-uniformly from
    `ratio`, clipped to the image; `seed` is a stateless seed (two integers).
    """
    import math

    import tensorflow as tf

    u = tf.random.stateless_uniform([count, 4], seed=seed)
    area = scale[0] + u[:, 0] * (scale[1] - scale[0])
    pixel_ratio = tf.exp(math.log(ratio[0]) + u[:, 1] * (math.log(ratio[1]) - math.log(ratio[0])))
    aspect = tf.cast(aspect, tf.float32)
    # In pixels: w*h = area*H*W and w/h = pixel_ratio; as fractions of W and H:
    w = tf.minimum(1.0, tf.sqrt(area * pixel_ratio * aspect))
    h = tf.minimum(1.0, tf.sqrt(area / pixel_ratio / aspect))
    y0 = u[:, 2] * (1.0 - h)
    x0 = u[:, 3] * (1.0 - w)
    return tf.stack([y0, x0, y0 + h, x0 + w], axis=1)


def random_resized_crop(image, seed, image_size: Sequence[int], scale: Sequence[float], ratio: Sequence[float],
                        interpolation: str = "bilinear"):
    """A random crop of one decoded photo (H, W, 3), resized to `image_size` (float32, rounded)."""
    import tensorflow as tf

    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    box = random_crop_boxes(1, seed, scale, ratio, height / width)[0]
    top, left = tf.cast(box[0] * height, tf.int32), tf.cast(box[1] * width, tf.int32)
    crop_h = tf.maximum(1, tf.minimum(shape[0] - top, tf.cast(tf.round((box[2] - box[0]) * height), tf.int32)))
    crop_w = tf.maximum(1, tf.minimum(shape[1] - left, tf.cast(tf.round((box[3] - box[1]) * width), tf.int32)))
    crop = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
    return resize_image(crop, image_size, "stretch", 1.0, interpolation)


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
