"""The YOLOv4-tiny detector architecture: weights transferred from the source detector, Darknet decoding,
the loss's assignment, config refusals, and one tiny end-to-end run (fit, reload, export, parity)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from transferkit.errors import ConfigError
from transferkit.models.families.yolov4_tiny import model as yt
from transferkit.plugins.object_detection import yolo_v4_tiny
from transferkit.plugins.object_detection.testing import (
    TINY_YOLO_CFG,
    make_detection_dataset,
    make_tiny_yolo_preset,
    tiny_detection_config,
)

SHAPES = {"P4": (4, 4, 8), "P5": (2, 2, 16)}


def _on_preset(config: dict, preset) -> dict:
    config["backbone"] = {"preset": str(preset)}
    return config


def _scales():
    return [{"name": s.name, "stride": s.stride, "anchors": [list(a) for a in s.anchors], "scale_x_y": s.scale_x_y}
            for s in yt.yolo_scales(TINY_YOLO_CFG).values()]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return make_tiny_yolo_preset(tmp_path_factory.mktemp("yolo") / "tiny_yolo")


@pytest.fixture(scope="module")
def shapes_csv(tmp_path_factory):
    return make_detection_dataset(tmp_path_factory.mktemp("shapes"), count=16, size=64)


def test_box_and_objectness_rows_come_from_the_source_and_init_from_picks_class_rows():
    source = yt.build_yolov4_tiny(TINY_YOLO_CFG, 64)  # 3 source classes: 8 values per anchor
    head = yolo_v4_tiny.yolo_v4_tiny_head(TINY_YOLO_CFG, SHAPES, num_classes=2)
    copied = yt.transfer_detector_weights(source, head, class_rows=[2, None], source_classes=3)
    assert {"neck_conv_9", "head_p5_conv_10", "head_p5_output", "head_p4_output"} <= set(copied)
    for name in ("head_p5_output", "head_p4_output"):
        old_kernel, old_bias = source.get_layer(name).get_weights()
        kernel, bias = head.get_layer(name).get_weights()
        assert kernel.shape[-1] == 3 * (5 + 2)
        for a in range(3):
            np.testing.assert_array_equal(kernel[..., a * 7:a * 7 + 5], old_kernel[..., a * 8:a * 8 + 5])
            np.testing.assert_array_equal(bias[a * 7:a * 7 + 5], old_bias[a * 8:a * 8 + 5])
            np.testing.assert_array_equal(kernel[..., a * 7 + 5], old_kernel[..., a * 8 + 5 + 2])  # "dog"'s rows
            assert bias[a * 7 + 6] == 0.0 and np.abs(kernel[..., a * 7 + 6]).std() < 0.05  # a new class: small
    np.testing.assert_array_equal(head.get_layer("neck_conv_9").get_weights()[0],
                                  source.get_layer("neck_conv_9").get_weights()[0])


def test_decoding_matches_the_family_numpy_decoder():
    """The graph decoder against the importer's independent numpy one, on the same raw outputs."""
    source = yt.build_yolov4_tiny(TINY_YOLO_CFG, 64)
    raw = source(np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype("float32"))
    reference_boxes, reference_scores = yt.YoloV4TinyDecoder(yt.yolo_scales(TINY_YOLO_CFG), 64).decode(raw)
    predictions = tf.concat([tf.reshape(raw[name], (2, -1, 8)) for name in ("p5", "p4")], axis=1)
    grid = yolo_v4_tiny.YoloGrid((64, 64), tuple(_scales()))
    assert grid.total == predictions.shape[1] == 60
    np.testing.assert_allclose(yolo_v4_tiny.decode_boxes(grid, predictions).numpy(), reference_boxes, atol=1e-3)
    out = yolo_v4_tiny.decode_detections(grid, predictions, score_threshold=0.0, iou_threshold=1.0,
                                         max_detections=180, pre_nms_top_k=60)
    assert np.isclose(out["scores"].numpy()[0, 0], reference_scores[0].max(), atol=1e-5)


def test_loss_is_lowest_for_the_true_box_and_finite_without_boxes():
    grid = yolo_v4_tiny.YoloGrid((64, 64), tuple(_scales()))
    loss = yolo_v4_tiny.YoloV4TinyLoss((64, 64), _scales(), num_classes=2)
    truth = np.full((1, 2, 5), -1.0, np.float32)
    truth[0, 0] = [36, 36, 60, 60, 1]  # 24 x 24 centred on (48, 48): the middle of stride-32 cell (1, 1)
    good = np.full((1, grid.total, 7), -8.0, np.float32)
    table = grid.anchor_table()
    inter = np.minimum(24, table["w"]) * np.minimum(24, table["h"])
    shape = int(np.argmax(inter / (576 + table["w"] * table["h"] - inter)))
    assert (table["w"][shape], table["h"][shape], table["stride"][shape]) == (20, 22, 32)  # best-shaped anchor
    index = int(table["offset"][shape] + (1 * table["cols"][shape] + 1) * table["per_cell"][shape]
                + table["position"][shape])
    good[0, index, :4] = [0.0, 0.0, np.log(24 / 20), np.log(24 / 22)]  # centre offset 0.5: tx = ty = 0
    good[0, index, 4] = 8.0
    good[0, index, 5 + 1] = 8.0
    shifted = good.copy()
    shifted[0, index, 4], shifted[0, index + 1, 4] = -8.0, 8.0  # objectness on the wrong anchor
    perfect, wrong = float(tf.reduce_sum(loss(truth, good))), float(tf.reduce_sum(loss(truth, shifted)))
    assert perfect < 0.05 < wrong, (perfect, wrong)
    empty = float(tf.reduce_sum(loss(np.full((1, 2, 5), -1.0, np.float32), good)))
    assert np.isfinite(empty) and empty > 0


def test_config_refusals_name_the_field(preset, shapes_csv, tmp_path):
    from transferkit.config import build_run_config

    with pytest.raises(ConfigError, match="model.init_from"):
        build_run_config(tiny_detection_config(shapes_csv, model={"init_from": {"circle": "cat"}}))
    with pytest.raises(ConfigError, match="model.init_from"):
        build_run_config(tiny_detection_config(shapes_csv, model={"architecture": "yolov4_tiny", "init_from": {}}))

    from transferkit.plugins.object_detection.architectures import detector_facts

    with pytest.raises(ConfigError, match="backbone.config"):  # built from a config: no detector to transfer
        build_run_config(tiny_detection_config(shapes_csv, model={"architecture": "yolov4_tiny"}))
    (tmp_path / "config.json").write_text("{}")  # a KerasHub-style preset, not a YOLOv4-tiny one
    config = build_run_config(_on_preset(tiny_detection_config(shapes_csv, model={"architecture": "yolov4_tiny"}),
                                         tmp_path))
    with pytest.raises(ConfigError, match="backbone.preset"):
        detector_facts(config.task_config.model, config.backbone, ["circle", "square"])
    config = build_run_config(_on_preset(tiny_detection_config(
        shapes_csv, model={"architecture": "yolov4_tiny", "init_from": {"circle": "cta", "square": "dog"}}), preset))
    with pytest.raises(ConfigError, match=r"\['cta'\].*closest.*cat"):
        detector_facts(config.task_config.model, config.backbone, ["circle", "square"])
    with pytest.raises(ConfigError, match=r"\['square'\] are not classes"):
        detector_facts(config.task_config.model, config.backbone, ["circle", "triangle"])


@pytest.fixture(scope="module")
def trained(preset, shapes_csv, tmp_path_factory):
    from transferkit.testing import run_task_test

    config = _on_preset(tiny_detection_config(
        shapes_csv, model={"architecture": "yolov4_tiny", "init_from": {"circle": "cat"}},
        stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 1, "learning_rate": 1e-3},
                {"name": "all", "freeze": {"all": True}, "epochs": 1, "learning_rate": 1e-4}]), preset)
    run_dir = tmp_path_factory.mktemp("yolo_run") / "run"
    return run_dir, run_task_test("object_detection", config, run_dir)


def test_run_task_test_yolov4_tiny(trained):
    """The whole tiny detector through the one-call check: fit (head on cached features, then all),
    reload, export with NMS, parity; a class started from a source class's rows."""
    run_dir, result = trained
    assert all(np.isfinite(row["loss"]) for row in result["history"])
    assert result["history"][0].get("feature_cache") and not result["history"][1].get("feature_cache")
    assert result["export_report"]["max_abs_diff"]["raw_outputs.predictions"] < 1e-4
    info = json.loads((run_dir / "info.json").read_text())
    assert info["detector"]["class_rows"] == [1, None]  # circle from "cat", square new
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["map"] <= metrics["map50"] <= 1.0


@pytest.mark.parametrize("fmt, quantize", [("tflite", "int8"), ("onnx", "none")])
def test_edge_files_hold_decoding_and_nms(trained, tmp_path, fmt, quantize):
    from transferkit.serving.edge_export import EdgeExportOptions, export_edge

    run_dir, _ = trained
    report = export_edge(run_dir, tmp_path / f"det.{fmt}", EdgeExportOptions(format=fmt, quantize=quantize,
                                                                             max_drop=100, calibration_images=8))
    assert report["metric"] == "map50"
    if quantize == "none":
        assert report["drop_points"] == pytest.approx(0.0, abs=0.5) and report["max_abs_diff"] < 1e-3
    else:
        assert report["float_ops"].get("NON_MAX_SUPPRESSION_V5", 0) >= 1
        # Only the two output convolutions stay float (box offsets and logits share their tensor).
        assert report["float_ops"]["CONV_2D"] == 2, report["float_ops"]


def test_a_fresh_process_predicts_with_the_saved_detector(trained, shapes_csv):
    """The family's own layers (its channel-group split) register from the run's info.json, not the preset."""
    import subprocess
    import sys

    run_dir, _ = trained
    assert json.loads((run_dir / "info.json").read_text())["backbone_module"] == yt.IMPORTER
    image = sorted((shapes_csv.parent / "images").iterdir())[0]
    done = subprocess.run([sys.executable, "-m", "transferkit", "predict", str(run_dir), str(image)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(image) in done.stdout


def test_a_preset_cannot_point_outside_itself_and_its_texts_are_size_checked(preset, shapes_csv, tmp_path):
    """transferkit.json's cfg is a bare name inside the folder; an empty or huge cfg is refused unread."""
    import shutil

    from transferkit.config import build_run_config
    from transferkit.plugins.object_detection.architectures import detector_facts

    copy = tmp_path / "copy"
    shutil.copytree(preset, copy)
    facts_file = copy / yt.PROVENANCE_FILE
    facts = json.loads(facts_file.read_text())
    config = build_run_config(_on_preset(tiny_detection_config(shapes_csv, model={"architecture": "yolov4_tiny"}),
                                         copy))
    model, backbone = config.task_config.model, config.backbone
    for outside in ("../outside.cfg", str(tmp_path / "outside.cfg")):
        (tmp_path / "outside.cfg").write_text(TINY_YOLO_CFG)
        facts_file.write_text(json.dumps({**facts, "cfg": outside}))
        with pytest.raises(ConfigError, match="backbone.preset"):
            detector_facts(model, backbone, ["circle", "square"])
    facts_file.write_text(json.dumps(facts))
    for content in ("", "#" * (yt.MAX_TEXT_BYTES + 1)):
        (copy / yt.CFG_FILE).write_text(content)
        with pytest.raises(ConfigError, match="a text file of 1 to"):
            detector_facts(model, backbone, ["circle", "square"])
    (copy / yt.CFG_FILE).write_text(TINY_YOLO_CFG)
    (copy / "class_names.txt").unlink()
    with pytest.raises(ConfigError, match="class_names.txt: missing"):
        detector_facts(model, backbone, ["circle", "square"])
