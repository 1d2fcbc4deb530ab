import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.config import build_run_config
from transferkit.plugins.object_detection.testing import make_detection_dataset, tiny_detection_config
from transferkit.runner import load_run, train
from transferkit.testing import run_task_test

FROZEN_ONLY = [{"name": "head", "freeze": {"backbone": True}, "epochs": 3, "learning_rate": 3e-3}]


@pytest.fixture(scope="module")
def shapes_csv(tmp_path_factory):
    return make_detection_dataset(tmp_path_factory.mktemp("det"), count=24, size=64)


@pytest.fixture(scope="module")
def trained(shapes_csv, tmp_path_factory):
    """One tiny detector, trained through run_task_test (fit, reload, export, parity)."""
    run_dir = tmp_path_factory.mktemp("det_run") / "run"
    result = run_task_test("object_detection", tiny_detection_config(shapes_csv), run_dir)
    return result


def test_run_task_test_object_detection(trained):
    run_dir = trained["run_dir"]
    assert [row["stage"] for row in trained["history"]] == ["head", "finetune"]
    assert all(np.isfinite(row["loss"]) for row in trained["history"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("map", "map50", "map75", "map_small", "per_class_ap"):
        assert key in metrics
    assert 0.0 <= metrics["map"] <= metrics["map50"] <= 1.0
    assert set(metrics["per_class_ap"]) == {"circle", "square"}
    assert metrics["num_images"] == 5 and metrics["num_boxes"] >= 5
    for name in ("precision_recall.png", "worst_detections.png", "training_curves.png"):
        assert (run_dir / "report" / name).stat().st_size > 1000
    assert (run_dir / "labels.txt").read_text().split() == ["circle", "square"]
    # Parity on the raw head outputs and on decoded detections that are not empty.
    report = trained["export_report"]["max_abs_diff"]
    assert report["raw_outputs.box_deltas"] < 1e-4 and report["raw_outputs.class_logits"] < 1e-4
    assert "serving_thresholds.boxes" in report


def test_run_task_test_yolo_v8(shapes_csv, tmp_path):
    """The second architecture through the same one-call check: fit, reload, export, parity."""
    config = tiny_detection_config(shapes_csv, model={"architecture": "yolo_v8", "fpn_channels": 16,
                                                      "head_convs": 2, "min_level": 3, "max_level": 5})
    result = run_task_test("object_detection", config, tmp_path / "run")
    assert all(np.isfinite(row["loss"]) for row in result["history"])
    assert set(result["predictions"]) == {"predictions"}
    assert result["export_report"]["max_abs_diff"]["raw_outputs.predictions"] < 1e-4
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["map"] <= metrics["map50"] <= 1.0


def test_yolo_v8_needs_levels_3_to_5(shapes_csv):
    from transferkit.errors import ConfigError

    with pytest.raises(ConfigError, match="yolo_v8"):
        build_run_config(tiny_detection_config(shapes_csv, model={"architecture": "yolo_v8", "max_level": 7}))


def test_exported_signatures_and_thresholds_per_request(trained, shapes_csv):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(trained["export_dir"]))
    assert {"serving_default", "serving_thresholds", "raw_outputs"} <= set(loaded.signatures)
    images = tf.constant([p.read_bytes() for p in sorted((shapes_csv.parent / "images").glob("*.png"))[:3]])
    out = loaded.signatures["serving_thresholds"](images=images, score_threshold=tf.constant(0.0),
                                                  iou_threshold=tf.constant(0.5), max_detections=tf.constant(7))
    assert out["boxes"].shape == (3, 7, 4) and out["boxes"].dtype == tf.float32
    assert out["class_ids"].dtype == tf.int32 and out["num_detections"].dtype == tf.int32
    assert np.all(out["num_detections"].numpy() == 7)  # threshold 0: every image fills K
    scores = out["scores"].numpy()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # sorted best first
    boxes = out["boxes"].numpy()
    assert np.all(boxes[..., 2] >= boxes[..., 0]) and np.all(boxes <= 64.0 + 1e-3)
    assert set(out["labels"].numpy().reshape(-1)) <= {b"circle", b"square"}
    default = loaded.signatures["serving_default"](images=images)
    assert default["boxes"].shape[1] == 100  # K from the config's detect section
    count = default["num_detections"].numpy()
    assert np.all(default["labels"].numpy()[0, count[0]:] == b"")  # padding rows carry no label


def test_feature_cache_trains_the_same_detector_as_full_passes(shapes_csv, tmp_path):
    def config(cache):
        return build_run_config(tiny_detection_config(
            shapes_csv, stages=FROZEN_ONLY, training={"verbose": 0, "tensorboard": False, "feature_cache": cache}))

    fast = train(config("memory"), tmp_path / "fast")
    slow = train(config("off"), tmp_path / "slow")
    _, task, fast_model, _ = load_run(fast)
    _, _, slow_model, _ = load_run(slow)
    images = np.concatenate([x for x, _ in task.datasets().val])
    fast_out, slow_out = fast_model(images, training=False), slow_model(images, training=False)
    history = json.loads((fast / "history.json").read_text())
    assert history[-1]["loss"] < history[0]["loss"]
    for key in ("box_deltas", "class_logits"):
        np.testing.assert_allclose(np.asarray(fast_out[key]), np.asarray(slow_out[key]), atol=2e-4)


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_every_format_gives_the_same_training_boxes(tmp_path, fmt):
    from transferkit.registry import get_task

    def boxes_of(source):
        config = build_run_config(tiny_detection_config(source, data={"val_split": 0.25}))
        task = get_task("object_detection")(config)
        val = task.datasets().val_records
        return {Path(p).name: val.ground_truth(i) for i, p in enumerate(val.paths)}

    reference = boxes_of(make_detection_dataset(tmp_path / "csv", count=12, fmt="csv"))
    other = boxes_of(make_detection_dataset(tmp_path / fmt, count=12, fmt=fmt))
    assert sorted(reference) == sorted(other)
    for name, (boxes, ids) in reference.items():
        np.testing.assert_allclose(other[name][0], boxes, atol=0.02)
        np.testing.assert_array_equal(other[name][1], ids)


def test_augmented_boxes_still_cover_their_objects(shapes_csv):
    """Flip, zoom and translation move the boxes with the pixels (objects are bright, the background dark)."""
    import tensorflow as tf

    from transferkit.registry import get_task

    config = build_run_config(tiny_detection_config(
        shapes_csv, augment={"flip": "horizontal", "zoom": 0.2, "translation": 0.1}))
    task = get_task("object_detection")(config)
    val = task.datasets().val_records
    augment = task._augmenter(seed=3)
    tf.random.set_seed(3)

    def bright_share(image, box):
        x0, y0, x1, y1 = np.round(box).astype(int)
        return (image.max(axis=-1) > 120)[max(y0, 0):y1, max(x0, 0):x1].mean()

    # Shapes have random colours: only those drawn bright before augmentation can be followed by brightness.
    followed = [[bright_share(image, box) for box in image_boxes] for image, image_boxes in zip(val.images, val.boxes)]
    checked = 0
    for _ in range(3):
        images, boxes, ids = augment(tf.constant(val.images), tf.constant(val.boxes), tf.constant(val.class_ids))
        images, boxes, ids = images.numpy(), boxes.numpy(), ids.numpy()
        for image, image_boxes, image_ids, image_followed in zip(images, boxes, ids, followed):
            bright = image.max(axis=-1) > 120
            for box, class_id, before in zip(image_boxes, image_ids, image_followed):
                if class_id < 0 or before < 0.2:
                    continue
                x0, y0, x1, y1 = np.round(box).astype(int)
                inside = bright[max(y0, 0):y1, max(x0, 0):x1]
                outside = bright.copy()
                outside[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = False
                assert inside.mean() > 0.5 * before, f"box {box} does not cover its object"
                checked += 1
            # Every bright object pixel lies inside some box (nothing moved away from its box).
            covered = np.zeros_like(bright)
            for box, class_id in zip(image_boxes, image_ids):
                if class_id >= 0:
                    x0, y0, x1, y1 = np.round(box).astype(int)
                    covered[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = True
            assert (bright & ~covered).sum() <= 0.02 * bright.sum() + 3
    assert checked > 10


def test_predict_prints_detections_and_saves_annotated_copies(trained, shapes_csv, tmp_path, capsys):
    from transferkit.cli import main

    image = sorted((shapes_csv.parent / "images").glob("*.png"))[0]
    out_dir = tmp_path / "annotated"
    assert main(["predict", str(trained["run_dir"]), str(image), "--save", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == str(image)
    assert (out_dir / f"{image.stem}.png").stat().st_size > 200


def test_fault_24_13_predict_save_gives_files_of_the_same_name_their_own_copies(trained, shapes_csv, tmp_path):
    import shutil

    from transferkit.cli import main

    images = sorted((shapes_csv.parent / "images").glob("*.png"))[:2]
    for folder, image in zip("ab", images):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / "x.png")
    out_dir = tmp_path / "annotated"
    assert main(["predict", str(trained["run_dir"]), str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"),
                 "--save", str(out_dir)]) == 0
    saved = sorted(p.name for p in out_dir.iterdir())
    assert saved == ["x-2.png", "x.png"]
    assert (out_dir / "x.png").read_bytes() != (out_dir / "x-2.png").read_bytes()


def test_a_fresh_process_evaluates_and_predicts_a_saved_detector(trained, shapes_csv):
    """The CLI in a new process must find the task's custom Keras objects before loading model.keras."""
    import subprocess
    import sys

    image = sorted((shapes_csv.parent / "images").glob("*.png"))[0]
    for args in (["evaluate", str(trained["run_dir"])], ["predict", str(trained["run_dir"]), str(image)]):
        result = subprocess.run([sys.executable, "-m", "transferkit", *args], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == str(image)


def test_served_detector_answers_grpc_and_rest_with_typed_detections(trained, shapes_csv, capsys):
    import tensorflow as tf

    from transferkit.plugins.object_detection.records import Detection
    from transferkit.serving.client import GrpcClient, RestClient
    from transferkit.serving.server import EmbeddedServer

    base = trained["export_dir"].parent.parent
    name = trained["export_dir"].parent.name
    images = [p.read_bytes() for p in sorted((shapes_csv.parent / "images").glob("*.png"))[:2]]
    expected = tf.saved_model.load(str(trained["export_dir"])).signatures["serving_thresholds"](
        images=tf.constant(images), score_threshold=tf.constant(0.0), iou_threshold=tf.constant(0.5),
        max_detections=tf.constant(5))
    server = EmbeddedServer(base, grpc_port=0, rest_port=0).start()
    try:
        inputs = {"score_threshold": np.float32(0.0), "iou_threshold": np.float32(0.5), "max_detections": np.int32(5)}
        with GrpcClient(server.grpc_address) as client:
            found = client.detect(name, images, signature="serving_thresholds", extra_inputs=inputs)
        assert len(found) == 2 and all(len(f) == 5 for f in found)
        assert all(isinstance(d, Detection) for d in found[0])
        np.testing.assert_allclose([d.box for d in found[0]], expected["boxes"].numpy()[0], atol=1e-4)
        assert [d.label for d in found[1]] == [b.decode() for b in expected["labels"].numpy()[1]]
        rest = RestClient(server.rest_address)
        rest_found = rest.detect(name, images)
        default = tf.saved_model.load(str(trained["export_dir"])).signatures["serving_default"](
            images=tf.constant(images))
        assert [len(f) for f in rest_found] == default["num_detections"].numpy().tolist()
        # The CLI asks the served detector and prints typed detections.
        from transferkit.cli import main

        image = sorted((shapes_csv.parent / "images").glob("*.png"))[0]
        for flag, address in (("--server", server.grpc_address), ("--rest", server.rest_address)):
            assert main(["predict", flag, address, "--model", name, str(image)]) == 0
            lines = capsys.readouterr().out.splitlines()
            assert lines[0].startswith("# ") and lines[1] == str(image)
            # Served detections print as `predict RUN_DIR` prints them (Task.describe), none included.
            assert lines[2:] == ["  (no detections)"] or all(
                "[" in line and line.strip().split()[1] in ("circle", "square") for line in lines[2:])
    finally:
        server.stop()


RACCOON = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "raccoon"


@pytest.mark.integration
@pytest.mark.skipif(not RACCOON.is_dir(), reason=f"the raccoon dataset is not at {RACCOON}")
def test_raccoon_smoke_reaches_map50(tmp_path):
    """A short real run: imported EfficientNet-Lite0 pyramid, CSV split, about two minutes on 2 cores."""
    config = build_run_config({
        "task": "object_detection",
        "data": {"train": str(RACCOON / "train_labels.csv"), "val": str(RACCOON / "test_labels.csv"),
                 "image_size": [256, 256], "batch_size": 8},
        "model": {"min_level": 4, "max_level": 7, "fpn_channels": 64, "head_convs": 2},
        "backbone": {"preset": "efficientnet-lite0"},
        "stages": [{"name": "head", "freeze": {"backbone": True}, "epochs": 12, "learning_rate": 1e-3},
                   {"name": "finetune", "freeze": {"top_blocks": 3}, "epochs": 4, "learning_rate": 3e-4,
                    "decay": "cosine"}],
        "training": {"seed": 0, "verbose": 0, "tensorboard": False},
    })
    run_dir = train(config, tmp_path / "run")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_images"] == 40 and metrics["num_boxes"] == 44
    assert metrics["map50"] >= 0.6, metrics


def test_streamed_detection_trains_and_evaluates_as_in_memory(shapes_csv, tmp_path):
    results = {}
    for cache in ("memory", "none", "disk"):
        config = build_run_config(tiny_detection_config(
            shapes_csv, data={"cache": cache, "cache_dir": str(tmp_path / "cache")}, stages=FROZEN_ONLY[:1]))
        run = train(config, tmp_path / cache)
        results[cache] = (json.loads((run / "history.json").read_text()),
                          json.loads((run / "metrics.json").read_text()))
    for cache in ("none", "disk"):
        # The same decode, resize and box scaling, and the same shuffled order: the same training.
        for a, b in zip(results["memory"][0], results[cache][0]):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
            assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert results[cache][1]["map"] == pytest.approx(results["memory"][1]["map"], abs=1e-6)
        assert results[cache][1]["num_images"] == results["memory"][1]["num_images"]


def test_streamed_ground_truth_uses_the_upright_size(tmp_path):
    from PIL import Image

    from transferkit.plugins.object_detection.annotations import ImageAnnotation
    from transferkit.plugins.object_detection.data import check_detections, load_detections

    # Stored 40 wide and 20 high, with EXIF "rotate 90": upright it is 20 wide and 40 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (90, 90, 90)).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    annotation = ImageAnnotation(path=str(tmp_path / "phone.jpg"), width=20, height=40,
                                 boxes=np.array([[2.0, 4.0, 10.0, 30.0]], np.float32), labels=["cat"])
    streamed = check_detections([annotation], ["cat"], (32, 32), max_boxes=2)
    loaded = load_detections([annotation], ["cat"], (32, 32), max_boxes=2)
    np.testing.assert_array_equal(streamed.original_sizes, [[40, 20]])
    np.testing.assert_array_equal(streamed.original_sizes, loaded.original_sizes)
    np.testing.assert_allclose(streamed.boxes, loaded.boxes)
    boxes, ids = streamed.ground_truth(0)
    np.testing.assert_allclose(boxes, [[2.0, 4.0, 10.0, 30.0]], rtol=1e-6)


def test_image_errors_count_missed_false_and_wrong_class_boxes():
    from transferkit.plugins.object_detection.report import image_errors

    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    gt_ids = np.array([0, 1, 0])
    pred = np.array([[0, 0, 10, 11], [20, 20, 30, 30], [60, 60, 70, 70], [0, 0, 10, 10]], np.float32)
    pred_ids = np.array([0, 0, 1, 0])  # right; wrong class on the second box; nothing there; a duplicate
    errors = image_errors(gt, gt_ids, pred, pred_ids)
    assert errors == {"missed": 1, "false_positives": 2, "wrong_class": 1, "errors": 4,
                      "mean_iou": pytest.approx((100 / 110 + 1.0) / 2)}
    assert image_errors(gt[:0], gt_ids[:0], pred[:0], pred_ids[:0])["errors"] == 0


def test_labels_are_sized_to_the_image():
    from PIL import Image

    from transferkit.plugins.object_detection.report import draw_boxes

    def label_rows(size):
        """Rows of the label's black background, drawn on a white photo of `size` pixels."""
        picture = draw_boxes(Image.new("RGB", (size, size), "white"), [[0, 0, size / 2, size / 2]],
                             ["raccoon 0.91"], (255, 0, 0))
        black = (np.asarray(picture) == 0).all(axis=2)
        return int(black.any(axis=1).sum())

    small, large = label_rows(256), label_rows(4000)
    assert 8 <= small <= 20  # a small photo keeps a small, readable label
    assert large >= 6 * small  # an 11-pixel font on a 4000-pixel photo would be unreadable once shrunk
