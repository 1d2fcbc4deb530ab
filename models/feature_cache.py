"""Backbone features computed once, for stages that keep the backbone frozen.

While the whole backbone is frozen its output for an un-augmented image never
changes, so a frozen stage can train the head alone on cached features: one
backbone forward pass in all instead of one per epoch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class FeatureCache:
    """Pooled backbone features and targets of a dataset, in memory or on disk.

    Example:

    ```python
    cache = FeatureCache.compute(backbone.feature_extractor((224, 224)), data.train_plain)
    head.fit(cache.dataset(batch_size=32, shuffle=True, seed=0), epochs=5)
    ```
    """

    def __init__(self, features: np.ndarray, targets: np.ndarray):
        self.features = features
        self.targets = targets

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    def compute(cls, extractor, dataset) -> "FeatureCache":
        features, targets = [], []
        for inputs, batch_targets in dataset:
            features.append(np.asarray(extractor(inputs, training=False)))
            targets.append(np.asarray(batch_targets))
        return cls(np.concatenate(features).astype("float32"), np.concatenate(targets))

    @classmethod
    def compute_or_load(cls, extractor, dataset, directory: Path | None, name: str) -> "FeatureCache":
        """With a directory, features are stored there once and reloaded (resume, reruns)."""
        if directory is None:
            return cls.compute(extractor, dataset)
        feats, targs = directory / f"{name}.features.npy", directory / f"{name}.targets.npy"
        if feats.exists() and targs.exists():
            return cls(np.load(feats, mmap_mode="r"), np.load(targs))
        cache = cls.compute(extractor, dataset)
        directory.mkdir(parents=True, exist_ok=True)
        for path, array in ((feats, cache.features), (targs, cache.targets)):
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as handle:
                np.save(handle, array)
            os.replace(tmp, path)
        return cache

    def dataset(self, batch_size: int, shuffle: bool = False, seed: int = 0):
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((np.asarray(self.features), self.targets))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
