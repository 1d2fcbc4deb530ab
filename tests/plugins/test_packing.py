"""`transferkit data pack`: sharded TFRecords that train like the files they came from."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transferkit.cli import main
from transferkit.config import build_run_config
from transferkit.errors import DataError
from transferkit.plugins.image_classification import data as data_lib
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import train
from transferkit.vision import streaming
from transferkit.vision.pack_records import parse_record
from transferkit.vision.packing import MANIFEST, Pack, pack_images


@pytest.fixture()
def shapes(tmp_path):
    root = make_image_folder(tmp_path / "shapes", per_class=8, size=32)
    Image.open(root / "circle" / "circle_000.png").convert("RGB").save(root / "circle" / "as_tiff.tif")
    (root / "square" / "broken.png").write_bytes(b"not an image")
    return root


def _records(pack, split):
    out = []
    for shard in pack.splits[split].shards:
        for serialized in tf.data.TFRecordDataset(shard):
            encoded, label, path = parse_record(serialized)
            out.append((encoded.numpy(), int(label), path.numpy().decode()))
    return out


def test_pack_holds_every_good_file_once_with_its_label(shapes, tmp_path, capsys):
    assert main(["data", "pack", str(shapes), str(tmp_path / "pack"), "--val-split", "0.25",
                 "--shard-mb", "0.004"]) == 0
    printed = capsys.readouterr().out
    assert "left out 1 file(s)" in printed and "broken.png" in printed
    pack = Pack.open(tmp_path / "pack")
    assert pack.class_names == ("circle", "square", "triangle")
    assert len(pack.splits["train"].shards) > 1  # a tiny --shard-mb: several shards
    records = _records(pack, "train") + _records(pack, "val")
    paths = [path for _, _, path in records]
    good = sorted(str(p) for p in shapes.rglob("*") if p.is_file() and p.name != "broken.png")
    assert sorted(paths) == good  # each good file once, across the splits
    for encoded, label, path in records:
        assert pack.class_names[label] == path.split("/")[-2]
        if path.endswith(".png"):
            assert encoded == open(path, "rb").read()  # kept as it was
        else:  # TIFF: TensorFlow cannot decode it, so it was stored as PNG of the same pixels
            assert encoded[:4] == b"\x89PNG"
            np.testing.assert_array_equal(tf.io.decode_png(encoded, channels=3).numpy(),
                                          np.asarray(Image.open(path).convert("RGB")))
    # --val-split holds out a share of every class.
    assert pack.splits["train"].count + pack.splits["val"].count == 25
    assert all(count >= 1 for count in pack.splits["val"].class_counts)
    assert [p["path"] for p in pack.problems] == [str(shapes / "square" / "broken.png")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_packed_pixels_equal_the_files(shapes, tmp_path):
    pack = pack_images(shapes, tmp_path / "pack", val_split=0.25)
    batches = streaming.pack_dataset(pack.splits["train"], (24, 24), "crop", batch_size=5, crop_fraction=0.875,
                                     interpolation="area")
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    for image, label, (_, record_label, path) in zip(images, labels, _records(pack, "train")):
        assert label == record_label
        np.testing.assert_array_equal(image, data_lib.decode_image(path, (24, 24), "crop", 0.875,
                                                                   interpolation="area"))


def test_a_run_on_a_pack_trains_like_the_folder(tmp_path):
    shapes = make_image_folder(tmp_path / "shapes", per_class=8, size=32)
    val = make_image_folder(tmp_path / "val", per_class=3, size=32, seed=1)
    pack_images(shapes, tmp_path / "pack", val=val)
    histories = {}
    for name, source in (("files", {"train": str(shapes), "val": str(val)}),
                         ("pack", {"train": str(tmp_path / "pack")})):
        config = build_run_config(tiny_config(source["train"], data={**source, "cache": "none"},
                                              head={"dropout": 0.0}))
        run = train(config, tmp_path / f"run-{name}")
        histories[name] = json.loads((run / "history.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["num_examples"] == 9
    # Records come in another order than the files, so the losses differ; validation is the same set.
    assert len(histories["files"]) == len(histories["pack"]) == 2
    for row in histories["pack"]:
        assert np.isfinite(row["loss"]) and 0.0 <= row["val_accuracy"] <= 1.0


def test_pack_errors_name_what_is_wrong(shapes, tmp_path):
    pack_images(shapes, tmp_path / "pack")
    with pytest.raises(DataError, match="already exists; pass --force"):
        pack_images(shapes, tmp_path / "pack")
    with pytest.raises(DataError, match=r"--val-split: expected a number in \[0, 1\). Received: 1.5"):
        pack_images(shapes, tmp_path / "other", val_split=1.5)
    config = build_run_config(tiny_config(str(tmp_path / "pack")))
    with pytest.raises(DataError, match="the pack has no val split; pack it with --val or --val-split"):
        train(config, tmp_path / "run")
    manifest = tmp_path / "pack" / MANIFEST
    spec = json.loads(manifest.read_text())
    (tmp_path / "pack" / spec["splits"]["train"]["shards"][0]).unlink()
    with pytest.raises(DataError, match="is missing; the pack is incomplete"):
        Pack.open(tmp_path / "pack")
    pack_images(shapes, tmp_path / "pack", val_split=0.25, force=True)  # --force replaces it whole
    assert Pack.open(tmp_path / "pack").splits["val"].count >= 3


def test_packed_photos_take_random_resized_crops(shapes, tmp_path):
    pack = pack_images(shapes, tmp_path / "pack", val_split=0.25)
    whole = streaming.pack_dataset(pack.splits["train"], (16, 16), "crop", batch_size=8, interpolation="area",
                                   random_crop=((1.0, 1.0), (1.0, 1.0)))  # the shapes are square: the whole photo
    images = np.concatenate([b[0].numpy() for b in whole])
    for image, (_, _, path) in zip(images, _records(pack, "train")):
        np.testing.assert_array_equal(image, data_lib.decode_image(path, (16, 16), "stretch", interpolation="area"))
    crops = streaming.pack_dataset(pack.splits["train"], (16, 16), "crop", batch_size=8, seed=1,
                                   random_crop=((0.1, 0.2), (1.0, 1.0)))
    assert not np.array_equal(np.concatenate([b[0].numpy() for b in crops]), images)


def test_another_pack_replaces_the_val_split_and_workers_share_records(shapes, tmp_path):
    pack_images(shapes, tmp_path / "pack", val_split=0.25)
    other = make_image_folder(tmp_path / "other", per_class=2, size=32, seed=4)
    pack_images(other, tmp_path / "other_pack")
    config = build_run_config(tiny_config(str(tmp_path / "pack"), data={"val": str(tmp_path / "other_pack")},
                                          stages=[{"name": "s", "freeze": {"backbone": True}, "epochs": 1}]))
    run = train(config, tmp_path / "run")
    assert json.loads((run / "metrics.json").read_text())["num_examples"] == 6  # the other pack's images
    dataset = streaming.pack_dataset(Pack.open(tmp_path / "pack").splits["val"], (16, 16), "crop", batch_size=4)
    assert dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    with pytest.raises(DataError, match="so data.val must be one too"):
        bad = build_run_config(tiny_config(str(tmp_path / "pack"), data={"val": str(other)}))
        train(bad, tmp_path / "bad")
