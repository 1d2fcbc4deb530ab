"""FeatureCache: in memory, or spilled to disk beyond a memory budget with the same batches."""

import numpy as np
import pytest
import tensorflow as tf

from transferkit.models.feature_cache import FeatureCache, RowStore


def _extractor_and_data(count=50, batch=8):
    import keras

    inputs = keras.Input((6,))
    extractor = keras.Model(inputs, {"pooled": keras.layers.Dense(3)(inputs),
                                     "grid": keras.layers.Reshape((2, 3))(keras.layers.Dense(6)(inputs))})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=(count,)).astype(np.int32)
    weights = rng.random(size=(count,)).astype(np.float32)
    return extractor, tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(batch)


def _batches(dataset):
    return [tf.nest.map_structure(np.asarray, element) for element in dataset]


def test_spilled_cache_gives_the_same_batches_as_memory(tmp_path):
    extractor, data = _extractor_and_data()
    memory = FeatureCache.compute(extractor, data)
    # A budget of 200 bytes: the first batch fits, the second spills everything to disk.
    spilled = FeatureCache.compute(extractor, data, memory_budget=200, spill_dir=tmp_path / "spill")
    assert spilled.store is not None and memory.store is None
    assert len(spilled) == len(memory) == 50
    assert spilled.memory_bytes == 0 and memory.memory_bytes > 0
    assert sorted(p.name for p in (tmp_path / "spill").iterdir()) == [f"features.{i}.rows" for i in range(4)]
    for shuffle in (False, True):
        a = memory.dataset(16, shuffle=shuffle, seed=3)
        b = spilled.dataset(16, shuffle=shuffle, seed=3)
        for _epoch in range(2):  # reshuffled each epoch, alike
            for left, right in zip(_batches(a), _batches(b), strict=True):
                tf.nest.assert_same_structure(left, right)
                for x, y in zip(tf.nest.flatten(left), tf.nest.flatten(right)):
                    assert x.dtype == y.dtype
                    np.testing.assert_array_equal(x, y)


def test_no_budget_or_no_folder_keeps_everything_in_memory(tmp_path):
    extractor, data = _extractor_and_data()
    assert FeatureCache.compute(extractor, data, memory_budget=10**9, spill_dir=tmp_path).store is None
    assert FeatureCache.compute(extractor, data, memory_budget=0, spill_dir=None).store is None
    assert not list(tmp_path.iterdir())


def test_row_store_reads_rows_in_the_order_asked(tmp_path):
    store = RowStore(tmp_path, "x")
    store.append([np.arange(12, dtype=np.float32).reshape(4, 3), np.arange(4, dtype=np.int64)])
    store.append([np.arange(12, 18, dtype=np.float32).reshape(2, 3), np.arange(4, 6, dtype=np.int64)])
    store.finish()
    rows, labels = store.read(np.array([5, 0, 3, 3]))
    np.testing.assert_array_equal(labels, [5, 0, 3, 3])
    np.testing.assert_array_equal(rows[0], [15, 16, 17])
    np.testing.assert_array_equal(rows[2], rows[3])
    other = RowStore(tmp_path, "y")
    other.append([np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"batches differ in shape \[\(3,\), \(4,\)\]"):
        other.append([np.zeros((1, 4))])
    with pytest.raises(ValueError, match="finished"):
        store.append([np.zeros((1, 3)), np.zeros(1, dtype=np.int64)])


@pytest.mark.parametrize("expected", [None, 5, 50, 500])
def test_rows_are_filled_in_place_whatever_the_expected_count(expected):
    extractor, data = _extractor_and_data()
    reference = FeatureCache.compute(extractor, data)
    cache = FeatureCache.compute(extractor, data, expected_rows=expected)
    assert len(cache) == 50
    for a, b in zip(tf.nest.flatten((reference.features, reference.rest)), tf.nest.flatten((cache.features,
                                                                                          cache.rest))):
        np.testing.assert_array_equal(a, b)
