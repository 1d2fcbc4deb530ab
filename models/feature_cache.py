"""Features computed once, for stages that keep the backbone frozen.

While the frozen part of a model (the task's `cache_split(...).extractor`)
sees un-augmented inputs, its outputs never change, so a frozen stage can
train the rest on cached features: one forward pass through the frozen part
in all instead of one per epoch. Features and targets may be any nested
structure of fixed-shape arrays (pooled features and one-hot labels for a
classifier; a dict of pyramid levels and per-anchor targets for a detector).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.fileio import atomic_write_text, atomic_writer
from transferkit.models.inference import traced_forward


def _nest():
    import tensorflow as tf

    return tf.nest


class FeatureCache:
    """Extractor outputs and the rest of each element (targets, weights), in memory or on disk.

    Example:

    ```python
    split = task.cache_split(model, backbone)
    cache = FeatureCache.compute(split.extractor, data.train_plain)
    split.trainable.fit(cache.dataset(batch_size=32, shuffle=True, seed=0), epochs=5)
    ```
    """

    def __init__(self, features: Any, rest: tuple):
        self.features = features
        self.rest = tuple(rest)

    def __len__(self) -> int:
        return int(_nest().flatten(self.features)[0].shape[0])

    @classmethod
    def compute(cls, extractor, dataset) -> "FeatureCache":
        import tensorflow as tf

        nest = _nest()
        features, rest = [], []
        extract = traced_forward(extractor)  # shared by the training and validation passes
        for element in dataset.prefetch(tf.data.AUTOTUNE):
            inputs, *others = element
            out = extract(inputs)
            features.append(nest.map_structure(lambda t: np.asarray(t, dtype=np.float32), out))
            rest.append(tuple(nest.map_structure(np.asarray, o) for o in others))
        if not features:
            raise ValueError("FeatureCache.compute: the dataset yielded no batches")

        def concat(*parts):
            try:
                return np.concatenate(parts)
            except ValueError as error:
                shapes = sorted({p.shape[1:] for p in parts})
                raise ValueError(f"FeatureCache: batches differ in shape {shapes}; the cached data must have "
                                 f"fixed shapes per example (pad variable-length targets). {error}") from None

        return cls(nest.map_structure(concat, *features), nest.map_structure(concat, *rest))

    @classmethod
    def compute_or_load(cls, extractor, dataset, directory: Path | None, name: str) -> "FeatureCache":
        """With a directory, the cache is stored there once and reloaded (resume, reruns)."""
        if directory is None:
            return cls.compute(extractor, dataset)
        nest = _nest()
        index_path = directory / f"{name}.structure.json"
        if index_path.exists():
            template = json.loads(index_path.read_text())
            arrays = [np.load(directory / f"{name}.{i}.npy", mmap_mode="r")
                      for i in range(len(nest.flatten(template)))]
            features, rest = nest.pack_sequence_as(template, arrays)
            return cls(features, rest)
        cache = cls.compute(extractor, dataset)
        directory.mkdir(parents=True, exist_ok=True)
        structure = (cache.features, cache.rest)
        for i, array in enumerate(nest.flatten(structure)):
            with atomic_writer(directory / f"{name}.{i}.npy", "wb") as handle:
                np.save(handle, array)
        # Written last: its presence means every array is complete. JSON nulls are
        # leaves for tf.nest, so the structure round-trips without pickle.
        template = nest.map_structure(lambda _: None, structure)
        atomic_write_text(index_path, json.dumps(template))
        return cache

    def dataset(self, batch_size: int, shuffle: bool = False, seed: int = 0):
        import tensorflow as tf

        nest = _nest()
        features = nest.map_structure(np.asarray, self.features)
        rest = nest.map_structure(np.asarray, self.rest)
        ds = tf.data.Dataset.from_tensor_slices((features, *rest))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
