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
import os
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.fileio import atomic_write_text, atomic_writer
from transferkit.models.inference import frozen_forward


def _nest():
    import tensorflow as tf

    return tf.nest


def _shape_error(shapes, error) -> ValueError:
    return ValueError(f"FeatureCache: batches differ in shape {sorted(shapes)}; the cached data must have "
                      f"fixed shapes per example (pad variable-length targets). {error}")


class RowStore:
    """Equal-length arrays written row by row to raw files, read back by row index.

    Rows are read with `os.pread`, not memory-mapped: the file's pages stay in
    the page cache instead of the process's resident set, so a store larger
    than memory costs no more than the rows of one batch.
    """

    def __init__(self, directory: Path, name: str):
        self.directory = Path(directory)
        self.name = name
        self.leaves: list[tuple[Path, np.dtype, tuple[int, ...]]] = []
        self._writers: list | None = None
        self._readers: list[int] = []
        self.rows = 0

    def append(self, arrays: list[np.ndarray]) -> None:
        if self._readers:
            raise ValueError(f"RowStore {self.directory / self.name}: finished, it takes no more rows")
        if self._writers is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.leaves = [(self.directory / f"{self.name}.{i}.rows", a.dtype, tuple(a.shape[1:]))
                           for i, a in enumerate(arrays)]
            self._writers = [open(path, "wb") for path, _, _ in self.leaves]
        for (_, dtype, shape), writer, array in zip(self.leaves, self._writers, arrays):
            if tuple(array.shape[1:]) != shape:
                raise _shape_error({shape, tuple(array.shape[1:])}, "")
            writer.write(np.ascontiguousarray(array, dtype=dtype).tobytes())
        self.rows += len(arrays[0])

    def finish(self) -> "RowStore":
        for writer in self._writers or []:
            writer.close()
        self._writers = None
        self._readers = [os.open(path, os.O_RDONLY) for path, _, _ in self.leaves]
        return self

    def read(self, indices: np.ndarray) -> list[np.ndarray]:
        order = np.argsort(indices, kind="stable")  # ascending offsets, then back to the asked order
        arrays = []
        for (_, dtype, shape), fd in zip(self.leaves, self._readers):
            row_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            rows = np.empty((len(indices), *shape), dtype)
            view = rows.reshape(len(indices), -1).view(np.uint8)
            for position in order:
                view[position] = np.frombuffer(os.pread(fd, row_bytes, int(indices[position]) * row_bytes), np.uint8)
            arrays.append(rows)
        return arrays

    def close(self) -> None:
        for fd in self._readers:
            os.close(fd)
        self._readers = []

    def __del__(self):
        self.close()


class _GrowingRows:
    """Arrays of rows filled batch by batch in place: no per-batch list to concatenate (which would hold
    the features twice). Capacity starts at `expected` rows (untouched pages cost no memory) and doubles."""

    def __init__(self, expected: int | None):
        self.expected = expected or 0
        self.arrays: list[np.ndarray] | None = None
        self.rows = 0

    @property
    def nbytes(self) -> int:
        return sum(self.rows * (a.nbytes // max(len(a), 1)) for a in self.arrays or [])

    def append(self, leaves: list[np.ndarray]) -> None:
        count = len(leaves[0])
        if self.arrays is None:
            self.arrays = [np.empty((max(self.expected, count), *leaf.shape[1:]), leaf.dtype) for leaf in leaves]
        for array, leaf in zip(self.arrays, leaves):
            if leaf.shape[1:] != array.shape[1:]:
                raise _shape_error({leaf.shape[1:], array.shape[1:]}, "")
        if self.rows + count > len(self.arrays[0]):
            capacity = max(2 * len(self.arrays[0]), self.rows + count)
            grown = []
            for array in self.arrays:
                bigger = np.empty((capacity, *array.shape[1:]), array.dtype)
                bigger[:self.rows] = array[:self.rows]
                grown.append(bigger)
            self.arrays = grown
        for array, leaf in zip(self.arrays, leaves):
            array[self.rows:self.rows + count] = leaf
        self.rows += count

    def result(self) -> list[np.ndarray]:
        return [array[:self.rows] for array in self.arrays or []]


class FeatureCache:
    """Extractor outputs and the rest of each element (targets, weights), in memory or on disk.

    Example:

    ```python
    split = task.cache_split(model, backbone)
    cache = FeatureCache.compute(split.extractor, data.train_plain)
    split.trainable.fit(cache.dataset(batch_size=32, shuffle=True, seed=0), epochs=5)
    ```
    """

    def __init__(self, features: Any = None, rest: tuple = (), store: RowStore | None = None,
                 template: Any = None):
        self.features = features
        self.rest = tuple(rest)
        # Spilled to disk: the rows live in `store`, `template` is the (features, rest) structure.
        self.store = store
        self.template = template

    def __len__(self) -> int:
        if self.store is not None:
            return self.store.rows
        return int(_nest().flatten(self.features)[0].shape[0])

    @property
    def memory_bytes(self) -> int:
        """Bytes held in memory (0 once spilled to disk)."""
        if self.store is not None:
            return 0
        return sum(a.nbytes for a in _nest().flatten((self.features, self.rest)))

    @classmethod
    def compute(cls, extractor, dataset, memory_budget: int | None = None,
                spill_dir: Path | None = None, name: str = "features",
                expected_rows: int | None = None) -> "FeatureCache":
        """Runs `extractor` once over `dataset`.

        With `spill_dir`, once the outputs held exceed `memory_budget` bytes
        they are written there (and every later batch with them) as a
        `RowStore`, so memory stays bounded however long the dataset is.
        `expected_rows` (the number of examples, if known) sizes the arrays
        filled in memory up front.
        """
        import tensorflow as tf

        from transferkit.progress import dataset_length, progress

        nest = _nest()
        held = _GrowingRows(expected_rows)  # the flat (features, rest) leaves, row by row
        store = template = None
        # Traced once, for any batch size, and shared by the training and validation passes.
        extract = frozen_forward(extractor, dataset.element_spec[0])
        batches = progress(dataset.prefetch(tf.data.AUTOTUNE), f"features ({name})", dataset_length(dataset),
                           unit="batch")
        for element in batches:
            inputs, *others = element
            out = nest.map_structure(lambda t: np.asarray(t, dtype=np.float32), extract(inputs))
            structure = (out, tuple(nest.map_structure(np.asarray, o) for o in others))
            template = template if template is not None else nest.map_structure(lambda _: None, structure)
            leaves = nest.flatten(structure)
            if store is not None:
                store.append(leaves)
                continue
            held.append(leaves)
            if spill_dir is not None and memory_budget is not None and held.nbytes > memory_budget:
                store = RowStore(spill_dir, name)
                store.append(held.result())
                held = _GrowingRows(None)
        if store is not None:
            return cls(store=store.finish(), template=template)
        if not held.rows:
            raise ValueError("FeatureCache.compute: the dataset yielded no batches")
        features, rest = nest.pack_sequence_as(template, held.result())
        return cls(features, rest)

    @classmethod
    def compute_or_load(cls, extractor, dataset, directory: Path | None, name: str,
                        memory_budget: int | None = None, spill_dir: Path | None = None,
                        expected_rows: int | None = None) -> "FeatureCache":
        """With a directory, the cache is stored there once and reloaded (resume, reruns); else see `compute`."""
        if directory is None:
            return cls.compute(extractor, dataset, memory_budget, spill_dir, name, expected_rows)
        nest = _nest()
        index_path = directory / f"{name}.structure.json"
        if index_path.exists():
            template = json.loads(index_path.read_text())
            arrays = [np.load(directory / f"{name}.{i}.npy", mmap_mode="r")
                      for i in range(len(nest.flatten(template)))]
            features, rest = nest.pack_sequence_as(template, arrays)
            return cls(features, rest)
        cache = cls.compute(extractor, dataset, expected_rows=expected_rows)
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
        """Batches of (features, *rest), gathered by row index from memory or from the RowStore.

        Rows are gathered rather than sliced from tensors (`from_tensor_slices` would copy every
        feature into TensorFlow's memory a second time). A shuffle's order depends on the seed,
        buffer size and length only, so shuffling the indices gives the batches that shuffling the
        rows would, in memory and on disk alike.
        """
        import tensorflow as tf

        nest = _nest()
        if self.store is not None:
            store = self.store
            specs = [(dtype, shape) for _, dtype, shape in store.leaves]
            template, gather = self.template, store.read
        else:
            arrays = [np.asarray(a) for a in nest.flatten((self.features, self.rest))]
            specs = [(a.dtype, a.shape[1:]) for a in arrays]
            template = nest.map_structure(lambda _: None, (self.features, self.rest))

            def gather(indices):
                return [a[indices] for a in arrays]

        ds = tf.data.Dataset.range(len(self))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        dtypes = [tf.as_dtype(dtype) for dtype, _ in specs]

        def read(indices):
            leaves = tf.numpy_function(gather, [indices], dtypes, stateful=False)
            for leaf, (_, shape) in zip(leaves, specs):
                leaf.set_shape((None, *shape))
            features, rest = nest.pack_sequence_as(template, leaves)
            return (features, *rest)

        return ds.batch(batch_size).map(read).prefetch(tf.data.AUTOTUNE)
