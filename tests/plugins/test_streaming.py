"""Streaming image input: header checks up front, the same pixels as the in-memory path, the disk cache."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from transferkit.vision.preprocessor import ImagePreprocessor
from transferkit import streaming as core_streaming
from transferkit.config import build_run_config
from transferkit.plugins.image_classification import data as data_lib
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import train
from transferkit.vision import streaming


@pytest.fixture()
def folder(tmp_path):
    root = make_image_folder(tmp_path / "imgs", classes=("circle", "square"), per_class=4, size=40, fmt="png")
    # Another format of each kind of decoder: JPEG (TensorFlow) and TIFF (Pillow, in a py_function).
    Image.open(root / "circle" / "circle_000.png").convert("RGB").save(root / "circle" / "as_jpeg.jpg", quality=90)
    Image.open(root / "square" / "square_000.png").convert("RGB").resize((50, 30)).save(root / "square" / "wide.tif")
    return root


def _files(root, **kwargs):
    samples, _ = data_lib.list_samples(root)
    index = {"circle": 0, "square": 1}
    return samples, streaming.check_image_files([s.path for s in samples], [index[s.label] for s in samples], **kwargs)


def test_streamed_pixels_equal_the_in_memory_decode(folder):
    samples, files = _files(folder)
    assert len(files) == 10 and files.problems == []
    assert files.tf_decodable.tolist().count(False) == 1  # the TIFF
    dataset = streaming.image_dataset(files, (24, 24), "crop", batch_size=4, crop_fraction=0.875)
    streamed = np.concatenate([images.numpy() for images, _ in dataset])
    labels = np.concatenate([labels.numpy() for _, labels in dataset])
    loaded = data_lib.load_images(samples, ["circle", "square"], ImagePreprocessor((24, 24), crop_fraction=0.875), "error")
    np.testing.assert_array_equal(streamed, loaded.images)
    np.testing.assert_array_equal(labels, loaded.labels)


def test_bad_headers_are_reported_before_any_decoding(folder):
    (folder / "circle" / "notes.png").write_text("not an image")
    (folder / "circle" / "empty.png").write_bytes(b"")
    Image.new("RGB", (300, 300)).save(folder / "square" / "big.png")
    _, files = _files(folder, max_pixels=200 * 200)
    reasons = {os.path.basename(p["path"]): p["reason"] for p in files.problems}
    assert set(reasons) == {"notes.png", "empty.png", "big.png"}
    assert reasons["empty.png"] == "unreadable image: empty file"
    assert reasons["notes.png"].startswith("unreadable image: UnidentifiedImageError")
    assert reasons["big.png"] == "300x300 pixels, more than the cap of 40,000 (data.max_pixels)"
    assert len(files) == 10


def test_a_body_that_does_not_decode_is_dropped_or_stops_the_pass(folder):
    png = (folder / "circle" / "circle_001.png").read_bytes()
    (folder / "circle" / "truncated.png").write_bytes(png[:60])  # a valid header, no pixels
    _, files = _files(folder)
    assert len(files) == 11  # the header check passes it
    kept = sum(int(images.shape[0]) for images, _ in streaming.image_dataset(files, (16, 16), "crop", 4))
    assert kept == 10
    strict = streaming.image_dataset(files, (16, 16), "crop", 4, skip_errors=False)
    with pytest.raises(Exception):
        for _ in strict:
            pass


def test_disk_cache_is_read_back_and_keyed_by_the_files(folder, tmp_path):
    _, files = _files(folder)
    options = dict(image_size=(16, 16), resize="crop", batch_size=4, cache="disk", cache_dir=tmp_path / "cache")
    dataset = streaming.image_dataset(files, **options)
    first = np.concatenate([x.numpy() for x, _ in dataset])
    (key,) = os.listdir(tmp_path / "cache")
    # The sources are gone: the next epoch reads everything from the cache.
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    again = np.concatenate([x.numpy() for x, _ in dataset])
    np.testing.assert_array_equal(first, again)
    # A later run on the same files finds the same cache; a changed file or preprocessing makes a new one.
    shutil.copytree(moved, folder)
    for path in files.paths:
        os.utime(path, ns=(os.stat(moved / os.path.relpath(path, folder)).st_mtime_ns,) * 2)
    streaming.image_dataset(files, **options)
    assert os.listdir(tmp_path / "cache") == [key]
    assert streaming.cache_key(files, size=16) != streaming.cache_key(files, size=24)
    os.utime(files.paths[0], ns=(1, 1))
    _, files = _files(folder)  # a new run checks the files again (the digest is taken once per check)
    assert streaming.image_dataset(files, **options) is not None
    assert len(os.listdir(tmp_path / "cache")) == 2


def test_runs_train_alike_from_memory_and_streamed(tmp_path):
    shapes = make_image_folder(tmp_path / "shapes", per_class=8, size=32)
    histories = {}
    for mode in ("memory", "none", "disk"):
        config = build_run_config(tiny_config(shapes, data={"cache": mode, "cache_dir": str(tmp_path / "cache")},
                                              head={"dropout": 0.0}))
        run = train(config, tmp_path / mode)
        histories[mode] = json.loads((run / "history.json").read_text())
    for mode in ("none", "disk"):
        for a, b in zip(histories["memory"], histories[mode]):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
            assert a["val_accuracy"] == pytest.approx(b["val_accuracy"])


def test_auto_picks_memory_until_the_budget(tmp_path):
    from transferkit.registry import get_task

    config = build_run_config(tiny_config("x", data={"cache_memory_mb": 1}))
    task = get_task("image_classification")(config)
    per_image_mb = 32 * 32 * 3 / 2**20
    assert task.cache_mode(int(1 / per_image_mb)) == "memory"
    assert task.cache_mode(int(1 / per_image_mb) + 1) == "disk"


def test_a_later_run_reads_the_disk_cache_without_the_sources(tmp_path):
    root = make_image_folder(tmp_path / "imgs", classes=("circle", "square"), per_class=4, size=40, fmt="png")
    _, files = _files(root)
    options = dict(image_size=(16, 16), resize="crop", batch_size=4, cache="disk", cache_dir=tmp_path / "cache")
    first = np.concatenate([x.numpy() for x, _ in streaming.image_dataset(files, **options)])
    later = streaming.image_dataset(files, **options)  # another run: a new pipeline on the same files
    shutil.rmtree(root)
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in later]), first)


def test_a_writer_killed_midway_never_blocks_the_next_run(tmp_path):
    root = make_image_folder(tmp_path / "imgs", classes=("circle", "square"), per_class=4, size=40, fmt="png")
    _, files = _files(root)
    key = streaming.cache_key(files, image_size=[16, 16], resize="crop", crop_fraction=1.0,
                              max_pixels=streaming.MAX_PIXELS)
    folder = tmp_path / "cache" / key
    folder.mkdir(parents=True)
    # What a process killed while writing leaves: a lock file and temporary state, under a dead pid.
    dead = 2**22 + 12345
    (folder / f"data-{dead}-1_0.lockfile").write_text("")
    (folder / f"data-{dead}-1_0.data-00000-of-00001.tempstate1").write_text("")
    options = dict(image_size=(16, 16), resize="crop", batch_size=4, cache="disk", cache_dir=tmp_path / "cache")
    assert sum(int(x.shape[0]) for x, _ in streaming.image_dataset(files, **options)) == 8
    names = sorted(p.name for p in folder.iterdir())
    assert not any(str(dead) in name for name in names)
    assert len([n for n in names if n.endswith(".index")]) == 1


def test_a_disk_cache_larger_than_the_buffer_is_written_in_a_seeded_random_order(tmp_path):
    root = make_image_folder(tmp_path / "imgs", classes=("circle", "square", "triangle"), per_class=150, size=8)
    samples, _ = data_lib.list_samples(root)
    index = {"circle": 0, "square": 1, "triangle": 2}
    files = streaming.check_image_files([s.path for s in samples], [index[s.label] for s in samples])
    assert len(files) > streaming.SHUFFLE_BUFFER
    options = dict(image_size=(8, 8), resize="crop", batch_size=32, cache="disk", cache_dir=tmp_path / "cache",
                   shuffle=True, seed=0)
    epochs = [[y.numpy() for _, y in streaming.image_dataset(files, **options)] for _ in range(2)]
    # Files are listed class by class: a buffer of 256 over that order holds only the first 256 + 32 files
    # while it gives the first batch, none of the third class. Written in a seeded random order, it mixes all three.
    assert set(epochs[0][0].tolist()) == {0, 1, 2}
    assert sorted(np.concatenate(epochs[1]).tolist()) == sorted(files.labels.tolist())  # read back, all of them


def _labels_and_images(dataset):
    batches = list(dataset)
    return np.concatenate([x.numpy() for x, _ in batches]), np.concatenate([y.numpy() for _, y in batches])


def test_random_resized_crops_are_cut_from_the_photo(tmp_path):
    root = make_image_folder(tmp_path / "imgs", classes=("circle", "square"), per_class=3, size=48)
    for path in root.rglob("*.png"):  # photos larger than the model and not square: 60x40
        Image.open(path).resize((60, 40)).save(path)
    _, files = _files(root)
    options = dict(image_size=(16, 16), resize="crop", batch_size=8, interpolation="area")
    # The whole photo at its own aspect (60/40): the crop is the photo, stretched as the resize does.
    whole, labels = _labels_and_images(streaming.image_dataset(files, random_crop=((1.0, 1.0), (1.5, 1.5)),
                                                               **options))
    for image, label, path in zip(whole, labels, files.paths):
        assert label == files.labels[files.paths.index(path)]
        np.testing.assert_array_equal(image, data_lib.decode_image(path, (16, 16), "stretch", interpolation="area"))
    # Small crops: new every epoch, the same for the same seed.
    crops = dict(random_crop=((0.1, 0.3), (0.75, 1.33)), shuffle=True, seed=5, **options)
    dataset = streaming.image_dataset(files, **crops)
    first, second = _labels_and_images(dataset)[0], _labels_and_images(dataset)[0]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, _labels_and_images(streaming.image_dataset(files, **crops))[0])
    with pytest.raises(ValueError, match="need cache='none'"):
        streaming.image_dataset(files, cache="disk", cache_dir=tmp_path / "c", random_crop=((0.5, 1.0), (1, 1)),
                                **options)


def test_crop_scale_trains_from_photos_when_streamed_and_from_cached_images_otherwise(tmp_path):
    from transferkit.plugins.image_classification.task import _cached_crop

    shapes = make_image_folder(tmp_path / "shapes", per_class=6, size=40)
    for mode in ("none", "memory"):
        config = build_run_config(tiny_config(shapes, data={"cache": mode}, augment={"crop_scale": [0.5, 1.0]},
                                              stages=[{"name": "s", "freeze": {"all": True}, "epochs": 1}]))
        history = json.loads((train(config, tmp_path / mode) / "history.json").read_text())
        assert np.isfinite(history[0]["loss"])
    # The whole-image crop of a cached batch is the batch itself.
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype(np.float32)
    out, targets = _cached_crop(((1.0, 1.0), (1.0, 1.0)), (16, 16))((images, "targets"), np.int64(7))
    np.testing.assert_array_equal(out.numpy(), images)
    assert targets == "targets"


def test_usable_cpus_follow_a_cgroup_quota(monkeypatch, tmp_path):
    from pathlib import Path

    real_read = Path.read_text
    quota = {"text": "150000 100000\n"}

    def read_text(self, *args, **kwargs):
        return quota["text"] if str(self) == "/sys/fs/cgroup/cpu.max" else real_read(self, *args, **kwargs)

    monkeypatch.setattr(core_streaming.os, "sched_getaffinity", lambda _: set(range(16)))
    monkeypatch.setattr(Path, "read_text", read_text)
    assert core_streaming.usable_cpus() == 2  # 1.5 CPUs of quota
    quota["text"] = "max 100000\n"
    assert core_streaming.usable_cpus() == 16


def test_autotune_is_off_by_default_on_few_cpus_and_can_be_set(monkeypatch):
    monkeypatch.setattr(core_streaming, "usable_cpus", lambda: 2)
    assert core_streaming.pipeline_options(None).autotune.enabled is False
    monkeypatch.setattr(core_streaming, "usable_cpus", lambda: 16)
    assert core_streaming.pipeline_options(None).autotune.enabled is True
    assert core_streaming.pipeline_options(False).autotune.enabled is False
    monkeypatch.setattr(core_streaming, "usable_cpus", lambda: 2)
    assert core_streaming.pipeline_options(True).autotune.enabled is True


@pytest.mark.parametrize("autotune", [False, True])
def test_a_run_sets_its_pipeline_options_on_every_dataset(folder, autotune):
    from transferkit.runner import prepare_run

    config = build_run_config(tiny_config(folder, augment={"flip": "horizontal"},
                                          training={"data_autotune": autotune, "verbose": 0}))
    _, data, _, _ = prepare_run(config)
    for name in ("train", "val", "train_plain", "train_unaugmented"):
        assert getattr(data, name).options().autotune.enabled is autotune, name


def test_evaluation_names_and_reports_a_streamed_file_that_did_not_decode(folder, tmp_path):
    """The stream drops a file whose body does not decode; the batches' rows say which, names stay aligned."""
    import dataclasses

    import keras
    import tensorflow as tf

    from transferkit.evaluation import run_evaluation
    from transferkit.classification.evaluation import ClassificationEvaluation
    from transferkit.plugins.image_classification.report import decode_error

    png = (folder / "circle" / "circle_001.png").read_bytes()
    (folder / "circle" / "circle_0015.png").write_bytes(png[:60])  # a valid header, no pixels; sorts mid-list
    _, files = _files(folder)
    labels = tf.constant(files.labels)
    by_row = dataclasses.replace(files, labels=np.arange(len(files), dtype=np.int32))
    batches = streaming.image_dataset(by_row, (16, 16), "crop", 4).map(
        lambda x, rows: (tf.cast(x, tf.float32), tf.one_hot(tf.gather(labels, rows), 2), rows))
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    shown = {}
    evaluation = ClassificationEvaluation(
        ["circle", "square"], top_k=1, records=list(files.paths), worst_count=64,
        write_worst=lambda folder, worst, names: shown.update(names=[names[row] for row, *_ in worst]),
        explain_missing=lambda path: decode_error(path, 10**7))
    metrics = run_evaluation(model, batches, evaluation, tmp_path / "report")
    broken = str(folder / "circle" / "circle_0015.png")
    assert metrics["num_examples"] == len(files.paths) - 1
    assert [item["path"] for item in metrics["skipped_in_evaluation"]] == [broken]
    assert metrics["skipped_in_evaluation"][0]["reason"].startswith("did not decode")
    assert sorted(shown["names"]) == sorted(p for p in files.paths if p != broken)  # each name is its own image
