"""The records of a pack's TFRecord shards: one `tf.train.Example` per image file.

Each record holds the file's encoded bytes (`image`), its label index
(`label`) and its source path (`path`). `transferkit.vision.packing` writes
them and `transferkit.vision.streaming.pack_dataset` reads them; the format
lives apart from both so neither imports the other.
"""

from __future__ import annotations

from typing import Any


def serialize_record(encoded: bytes, label: int, path: str) -> bytes:
    """One record: encoded image bytes, label index and source path."""
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_record(serialized) -> tuple[Any, Any, Any]:
    """(encoded image bytes, label index, source path) of one serialized record."""
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
            "path": tf.io.FixedLenFeature([], tf.string)}
    parsed = tf.io.parse_single_example(serialized, spec)
    return parsed["image"], tf.cast(parsed["label"], tf.int32), parsed["path"]
