"""Streaming image input: files checked from their headers up front, then read and decoded by tf.data.

No step holds the dataset: file names are shuffled, then read, decoded and
resized in parallel (`map` with AUTOTUNE), batched and prefetched. The
decode and resize are `transferkit.vision.images`' TensorFlow ops, the same as the
exported serving graph. A disk cache (a `tf.data` file cache of the resized
pixels) is keyed by the files (path, size, modification time) and the
preprocessing, so later runs on the same data reuse it and any change makes
a new one; the cache folders themselves are core's (`transferkit.streaming`).

Example:

```python
files = check_image_files(paths, labels, max_pixels=40_000_000)
dataset = image_dataset(files, image_size=(224, 224), resize="crop", batch_size=32, shuffle=True, seed=0)
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

# resolve_cache is re-exported: the image tasks call `streaming.resolve_cache(..., streaming.image_bytes(...))`.
from transferkit.progress import progress
from transferkit.streaming import SHUFFLE_BUFFER, disk_cache_prefix, resolve_cache  # noqa: F401
from transferkit.vision.images import MAX_PIXELS, TF_FORMATS, TooManyPixels, check_pixel_cap, image_header

CACHE_FORMAT_VERSION = 1  # in every image disk cache's key: raising it retires the caches written before


@dataclasses.dataclass
class CheckedFiles:
    """Image files that passed the header check, with their class indices, and the ones that did not."""

    paths: list[str]
    labels: np.ndarray  # (N,) int32
    tf_decodable: np.ndarray  # (N,) bool: decoded by TensorFlow ops, else by Pillow
    problems: list[dict[str, str]]
    sizes: np.ndarray | None = None  # (N, 2) upright (height, width), when asked for

    def __len__(self) -> int:
        return len(self.paths)

    def digest(self) -> str:
        """A digest of every file's path, label, size and modification time (computed once: a stat per file)."""
        if getattr(self, "_digest", None) is None:
            digest = hashlib.sha256()
            for path, label in zip(self.paths, self.labels.tolist()):
                stat = os.stat(path)
                digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            self._digest = digest.hexdigest()
        return self._digest


def _header(path: str, max_pixels: int, upright: bool = False) -> tuple[str | None, str | None, tuple[int, int]]:
    """(format, None, (height, width)) for a usable file, or (None, reason, (0, 0))."""
    try:
        if os.path.getsize(path) == 0:
            return None, "unreadable image: empty file", (0, 0)
        kind, width, height = image_header(path, upright=upright)
    except Exception as error:  # Pillow raises many types for bad files
        return None, f"unreadable image: {type(error).__name__}: {error}", (0, 0)
    try:
        check_pixel_cap(width, height, max_pixels)
    except TooManyPixels as error:
        return None, str(error), (0, 0)
    return kind, None, (height, width)


def check_image_files(paths: Sequence[str], labels: Sequence[int], max_pixels: int = MAX_PIXELS,
                      workers: int = 8, sizes: bool = False) -> CheckedFiles:
    """Reads every file's header (format, size against the pixel cap); bad files become problems.

    `sizes`: also keep each file's upright (height, width), EXIF orientation applied.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        headers = list(progress(pool.map(lambda p: _header(p, max_pixels, upright=sizes), paths),
                                "checking image headers", len(paths), unit="file"))
    kept, kept_labels, native, problems, kept_sizes = [], [], [], [], []
    for path, label, (kind, reason, size) in zip(paths, labels, headers):
        if reason is not None:
            problems.append({"path": path, "reason": reason})
            continue
        kept.append(path)
        kept_labels.append(int(label))
        native.append(kind in TF_FORMATS)
        kept_sizes.append(size)
    return CheckedFiles(kept, np.asarray(kept_labels, np.int32), np.asarray(native, bool), problems,
                        np.asarray(kept_sizes, np.int32).reshape(-1, 2) if sizes else None)


def image_bytes(image_size: Sequence[int]) -> int:
    """Bytes of one decoded uint8 RGB image at `image_size`."""
    return int(image_size[0]) * int(image_size[1]) * 3


def cache_key(files: CheckedFiles, **preprocessing) -> str:
    """A digest of the files (path, size, modification time) and the preprocessing: a disk cache's name."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_FORMAT_VERSION, **preprocessing}, sort_keys=True).encode())
    digest.update(files.digest().encode())
    return digest.hexdigest()[:24]


def _model_image(photo, draw, size: Sequence[int], resize: str, crop_fraction: float, interpolation: str,
                 random_crop: tuple | None):
    """A decoded photo at the model's size: resized, or with `draw` (a seeded number) a random resized crop."""
    import tensorflow as tf

    from transferkit.vision.images import random_resized_crop, resize_image

    if draw is None:
        image = resize_image(photo, size, resize, crop_fraction, interpolation)
    else:
        image = random_resized_crop(photo, tf.stack([draw, tf.constant(0, tf.int64)]), size, *random_crop,
                                    interpolation)
    image = tf.cast(image, tf.uint8)
    image.set_shape([*size, 3])
    return image


def decoded_images(files: CheckedFiles, image_size: Sequence[int], resize: str, crop_fraction: float = 1.0,
                   max_pixels: int = MAX_PIXELS, shuffle_files: bool = False, seed: int = 0,
                   skip_errors: bool = True, interpolation: str = "bilinear", reshuffle: bool = True,
                   random_crop: tuple | None = None):
    """A dataset of (uint8 image of `image_size`, label), one file at a time, decoded in parallel.

    With `random_crop` (scale, ratio), each decoded photo gives a random
    resized crop instead of the resize, new every epoch and seeded. A file
    whose header was fine but whose body does not decode is dropped with
    `skip_errors` (TensorFlow logs it); otherwise it stops the pass.
    """
    import tensorflow as tf

    from transferkit.vision.images import decode_encoded, read_image

    size = [int(image_size[0]), int(image_size[1])]
    needs_pillow = not bool(np.all(files.tf_decodable))

    def decode(path, label, native, draw=None):
        def with_tensorflow():
            return decode_encoded(tf.io.read_file(path), max_pixels)

        def with_pillow():
            photo = tf.py_function(lambda p: read_image(p.numpy().decode("utf-8"), max_pixels), [path], tf.uint8)
            photo.set_shape([None, None, 3])
            return photo

        # Pillow (in a py_function, which holds the GIL) only where a file needs it.
        photo = tf.cond(native, with_tensorflow, with_pillow) if needs_pillow else with_tensorflow()
        return _model_image(photo, draw, size, resize, crop_fraction, interpolation, random_crop), label

    dataset = tf.data.Dataset.from_tensor_slices((files.paths, files.labels, files.tf_decodable))
    if shuffle_files:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=reshuffle)
    if random_crop is not None:
        # One random number per file and epoch (seeded): the crops are reproducible and new every epoch.
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, draws).map(lambda element, draw: decode(*element, draw),
                                                           num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if skip_errors:
        dataset = dataset.ignore_errors(log_warning=True)
    return dataset


def image_dataset(files: CheckedFiles, image_size: Sequence[int], resize: str, batch_size: int,
                  crop_fraction: float = 1.0, max_pixels: int = MAX_PIXELS, shuffle: bool = False, seed: int = 0,
                  cache: str = "none", cache_dir: str | os.PathLike | None = None, skip_errors: bool = True,
                  interpolation: str = "bilinear", random_crop: tuple | None = None):
    """Batches of (uint8 images, labels), streamed from the files.

    cache: "none" decodes every epoch (file names shuffled, nothing held);
    "disk" writes the resized pixels during the first full pass under
    `cache_dir/<key>` (a tf.data file cache) and reads them back in later
    epochs and later runs, shuffled through a bounded buffer.
    """
    if cache not in ("none", "disk"):
        raise ValueError(f"cache: expected none or disk. Received: cache={cache!r}")
    if random_crop is not None and cache != "none":
        raise ValueError("random_crop: crops of the photos need cache='none' (a cache holds model-size images)")
    decoded = decoded_images(files, image_size, resize, crop_fraction, max_pixels,
                             # Before a disk cache larger than the buffer: written once in a seeded random
                             # order, not by class. A smaller one is shuffled whole after the cache, as in memory.
                             shuffle_files=shuffle and (cache == "none" or len(files) > SHUFFLE_BUFFER),
                             reshuffle=cache == "none", seed=seed,
                             skip_errors=skip_errors, interpolation=interpolation, random_crop=random_crop)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("cache: 'disk' needs a cache_dir")
        # Bilinear keys are as before, so caches written before `interpolation` existed stay valid.
        extra = {} if interpolation == "bilinear" else {"interpolation": interpolation}
        if shuffle and len(files) > SHUFFLE_BUFFER:  # written in this seed's order, not the files'
            extra["order_seed"] = seed
        key = cache_key(files, image_size=list(image_size), resize=resize, crop_fraction=crop_fraction,
                        max_pixels=max_pixels, **extra)
        decoded = decoded.cache(str(disk_cache_prefix(Path(cache_dir) / key)))
    if shuffle and cache == "disk":
        decoded = decoded.shuffle(min(len(files), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    return decoded.batch(batch_size)


def pack_dataset(split, image_size: Sequence[int], resize: str, batch_size: int, crop_fraction: float = 1.0,
                 max_pixels: int = MAX_PIXELS, shuffle: bool = False, seed: int = 0, cache: str = "none",
                 cache_dir: str | os.PathLike | None = None, skip_errors: bool = True,
                 interpolation: str = "bilinear", random_crop: tuple | None = None):
    """Batches of (uint8 images, labels) read from a pack split's TFRecord shards (see `transferkit.vision.packing`).

    Shards are read in parallel (interleaved, in a seeded order when
    shuffling), records decoded and resized like files. cache: "none" reads
    the shards every epoch; "memory" keeps the decoded pixels after the first
    pass (`Dataset.cache()`); "disk" writes them under `cache_dir`, keyed by
    the pack's digest and the preprocessing. Several workers share out the records (sharding by data).
    """
    import tensorflow as tf

    from transferkit.vision.images import decode_encoded
    from transferkit.vision.pack_records import parse_record

    if cache not in ("none", "memory", "disk"):
        raise ValueError(f"cache: expected none, memory or disk. Received: cache={cache!r}")
    if random_crop is not None and cache != "none":
        raise ValueError("random_crop: crops of the photos need cache='none' (a cache holds model-size images)")
    size = [int(image_size[0]), int(image_size[1])]
    shards = tf.data.Dataset.from_tensor_slices(list(split.shards))
    if shuffle and cache == "none":  # before a cache the order stays the shards' (records were shuffled when packed)
        shards = shards.shuffle(len(split.shards), seed=seed, reshuffle_each_iteration=True)
    records = shards.interleave(lambda shard: tf.data.TFRecordDataset(shard, buffer_size=8 << 20),
                                cycle_length=min(4, len(split.shards)), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)
    buffer = min(split.count, SHUFFLE_BUFFER)
    if shuffle and cache == "none":
        records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

    def decode(serialized, draw=None):
        encoded, label, _ = parse_record(serialized)
        photo = decode_encoded(encoded, max_pixels)
        return _model_image(photo, draw, size, resize, crop_fraction, interpolation, random_crop), label

    if random_crop is not None:  # one seeded random number per record and epoch
        records = tf.data.Dataset.zip(records, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True))
    decoded = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if skip_errors:
        decoded = decoded.ignore_errors(log_warning=True)
    if cache == "memory":
        decoded = decoded.cache()
    elif cache == "disk":
        if cache_dir is None:
            raise ValueError("cache: 'disk' needs a cache_dir")
        digest = hashlib.sha256(json.dumps(
            {"version": CACHE_FORMAT_VERSION, "pack": split.digest, "shards": [Path(s).name for s in split.shards], "size": size,
             "resize": resize, "crop_fraction": crop_fraction, "max_pixels": max_pixels,
             "interpolation": interpolation}, sort_keys=True).encode()).hexdigest()[:24]
        decoded = decoded.cache(str(disk_cache_prefix(Path(cache_dir) / f"pack-{digest}")))
    if shuffle and cache != "none":
        decoded = decoded.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    # Several workers share out the records, not the shards: a split may have fewer shards than workers,
    # and each worker's disk cache must hold the whole split under its shared key.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return decoded.batch(batch_size).with_options(options)
