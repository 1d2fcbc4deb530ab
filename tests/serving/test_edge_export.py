"""LiteRT and ONNX export: every file scored on the validation set, kept only within tolerance."""

import json

import numpy as np
import pytest

from transferkit.cli import main
from transferkit.plugins.text_classification.edge import TRANSFORMER_INT8_FLOAT_OPS
from transferkit.serving import edge_export
from transferkit.serving.edge_export import EdgeExportError, EdgeExportOptions, export_edge, predict_edge


@pytest.mark.parametrize("fmt, quantize", [("tflite", "none"), ("tflite", "float16"), ("tflite", "int8"),
                                           ("onnx", "none")])
def test_export_scores_the_file_and_writes_its_signature(trained_run, tmp_path, fmt, quantize):
    from transferkit.runner import load_run, predict_files

    output = tmp_path / f"model.{fmt}"
    report = export_edge(trained_run, output, EdgeExportOptions(format=fmt, quantize=quantize,
                                                                calibration_images=16))
    assert output.is_file() and report["bytes"] == output.stat().st_size and report["examples"] > 0
    assert report["drop_points"] <= report["tolerance_points"]
    assert report["drop_points"] == pytest.approx(
        100 * (report["keras"]["accuracy"] - report["exported"]["accuracy"]), abs=1e-3)
    saved = json.loads((tmp_path / "model.export_report.json").read_text())
    assert saved == report
    signature = json.loads((tmp_path / "model.signature.json").read_text())
    _, _, _, info = load_run(trained_run)
    assert signature["labels"] == info["class_names"]
    assert signature["preprocessor"] == info["preprocessor"]
    if quantize == "int8":
        assert signature["input"]["dtype"] == "uint8" and signature["input"]["quantization"]["scale"] > 0
        assert report["bytes"] < report["saved_model_bytes"] / 3
        assert report["float_ops"] == {}  # full integer
    else:
        assert signature["input"]["dtype"] == "float32" and report["max_abs_diff"] < (1e-4 if quantize == "none"
                                                                                       else 2e-2)
    # The file predicts the run's images as the run does (same preprocessing, from the signature).
    images = info["examples"][:3]
    from_file = [labels for _, labels in predict_edge(output, images, top_k=1)]
    from_run = [prediction for _, prediction, _ in predict_files(trained_run, images, top_k=1)]
    if quantize in ("none", "float16"):
        assert [row[0][0] for row in from_file] == [row[0][0] for row in from_run]
        np.testing.assert_allclose([row[0][1] for row in from_file], [row[0][1] for row in from_run], atol=2e-2)


def test_a_drop_beyond_the_tolerance_fails_with_the_numbers_and_writes_nothing(trained_run, tmp_path, monkeypatch):
    real_score = edge_export._score

    def worse(*args, **kwargs):
        report = real_score(*args, **kwargs)
        return {**report, "exported": {"accuracy": report["keras"]["accuracy"] - 0.05}, "drop_points": 5.0}

    monkeypatch.setattr(edge_export, "_score", worse)
    output = tmp_path / "model.tflite"
    with pytest.raises(EdgeExportError, match=r"a drop of 5.00 points, beyond the tolerance of 0.5"):
        export_edge(trained_run, output, EdgeExportOptions(quantize="float16"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--format", "onnx", "--quantize", "int8", "--output", "{tmp}/m.onnx"], "ONNX files are exported in float32"),
    (["--format", "tflite"], "give --output FILE"),
    (["--format", "tflite", "--output", "{tmp}"], "is a folder"),
    (["--format", "tflite", "--max-drop", "-1", "--output", "{tmp}/m.tflite"], "--max-drop: expected a number"),
    ([], "a SavedModel needs --model-base BASE and --name NAME"),
])
def test_bad_export_options_are_one_line_errors(trained_run, tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["export", str(trained_run), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_export_and_predict_from_the_file(trained_run, tmp_path, capsys):
    output = tmp_path / "shapes.tflite"
    assert main(["export", str(trained_run), "--format", "tflite", "--quantize", "float16", "--output",
                 str(output)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy on " in printed and "tolerance 0.5" in printed and "shapes.signature.json" in printed
    image = json.loads((trained_run / "info.json").read_text())["examples"][0]
    assert main(["predict", str(output), image, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == image and len(lines) == 3
    (tmp_path / "shapes.signature.json").unlink()
    assert main(["predict", str(output), image]) == 2
    assert "shapes.signature.json: missing" in capsys.readouterr().err


def test_evaluate_scores_an_exported_file_next_to_the_keras_model(trained_run, tmp_path, capsys):
    output = tmp_path / "m.onnx"
    report = export_edge(trained_run, output, EdgeExportOptions(format="onnx"))
    assert main(["evaluate", str(trained_run), "--model", str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {report['exported']['accuracy']:.4f} on {report['examples']} examples" in printed
    assert "(onnxruntime)" in printed


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from transferkit.config import build_run_config
    from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config
    from transferkit.runner import train

    root = tmp_path_factory.mktemp("edge_text")
    make_text_dataset(root / "data", count=48)
    return train(build_run_config(tiny_text_config(root / "data")), root / "run")


def _op_output_dtypes(path) -> dict[str, set[str]]:
    """A LiteRT file's op types and the dtypes of their outputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    kinds: dict[str, set[str]] = {}
    for op in interpreter._get_ops_details():
        kinds.setdefault(op["op_name"], set()).update(tensors[i]["dtype"].__name__ for i in op["outputs"])
    return kinds


@pytest.mark.parametrize("fmt, quantize, io_type", [("tflite", "none", "uint8"), ("tflite", "dynamic", "uint8"),
                                                    ("tflite", "int8", "uint8"), ("tflite", "int8", "int8"),
                                                    ("onnx", "none", "uint8")])
def test_a_text_classifier_exports_with_token_inputs_and_predicts_texts(text_run, tmp_path, fmt, quantize, io_type,
                                                                        capsys):
    from transferkit.runner import load_run, predict_texts

    output = tmp_path / f"text.{fmt}"
    # int8 on a 2-layer model trained for seconds: the tolerance is not the point here (BBC's is measured)
    report = export_edge(text_run, output, EdgeExportOptions(format=fmt, quantize=quantize, io_type=io_type,
                                                             max_drop=100 if quantize == "int8" else None))
    assert output.is_file() and report["examples"] > 0 and report["drop_points"] <= report["tolerance_points"]
    if quantize == "none":
        assert report["max_abs_diff"] < 1e-4
    signature = json.loads((tmp_path / "text.signature.json").read_text())
    _, _, _, info = load_run(text_run)
    length = info["preprocessor"]["sequence_length"]
    assert signature["input"] == {"padding_mask": {"shape": [None, length], "dtype": "int32"},
                                  "token_ids": {"shape": [None, length], "dtype": "int32"}}
    if quantize == "int8":  # dense layers in integer; attention matmuls, softmax, GELU, layer norms in float
        kinds = _op_output_dtypes(output)
        assert kinds["FULLY_CONNECTED"] == {"int8"} and kinds["BATCH_MATMUL"] == {"float32"}
        assert kinds["RSQRT"] == {"float32"} and report["float_ops"]["BATCH_MATMUL"] == 4  # 2 layers x 2
        assert set(report["float_ops"]) >= set(TRANSFORMER_INT8_FLOAT_OPS)
        assert not {"FULLY_CONNECTED", "GATHER"} & set(report["float_ops"])
        assert signature["output"]["probabilities"]["dtype"] == io_type  # the file's output, integer as asked
    assert signature["preprocessor"]["class_name"] == "TextPreprocessor" and "WordPiece" in " ".join(
        signature["app_steps"])
    texts = ["alpha beta gamma", "delta epsilon", "zeta"]
    from_file = [labels[0][0] for _, labels in predict_edge(output, texts, top_k=1, texts=True)]
    from_run = [description for _, description in predict_texts(text_run, texts, top_k=1)]
    assert all(label in description for label, description in zip(from_file, from_run))
    assert main(["predict", str(output), "--text", "alpha beta gamma"]) == 0
    assert from_file[0] in capsys.readouterr().out
    assert main(["evaluate", str(text_run), "--model", str(output)]) == 0
    assert f"{report['exported']['accuracy']:.4f}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    from transferkit.config import build_run_config
    from transferkit.plugins.object_detection.testing import make_detection_dataset, tiny_detection_config
    from transferkit.runner import train

    root = tmp_path_factory.mktemp("edge_det")
    labels = make_detection_dataset(root / "data", count=12, size=64)
    return train(build_run_config(tiny_detection_config(labels)), root / "run")


@pytest.mark.parametrize("fmt, quantize", [("tflite", "none"), ("tflite", "int8"), ("onnx", "none")])
def test_a_detector_exports_with_nms_in_the_file_and_is_scored_by_map(detection_run, tmp_path, fmt, quantize,
                                                                      capsys):
    output = tmp_path / f"det.{fmt}"
    report = export_edge(detection_run, output, EdgeExportOptions(format=fmt, quantize=quantize, max_drop=100,
                                                                  calibration_images=8))
    assert report["metric"] == "map50" and set(report["keras"]) == {"map50", "map"}
    if quantize == "none":  # the same graph, NMS included, in another runtime
        assert report["drop_points"] == pytest.approx(0.0, abs=0.5) and report["max_abs_diff"] < 1e-3
    if quantize == "int8":  # the network in integer; box decoding and NMS in float (quantised whole, boxes collapse)
        kinds = _op_output_dtypes(output)
        assert kinds["CONV_2D"] == {"int8"} and kinds["EXP"] == {"float32"}
        assert "CONV_2D" not in report["float_ops"] and report["float_ops"]["NON_MAX_SUPPRESSION_V5"] >= 1  # one per class
        assert kinds["NON_MAX_SUPPRESSION_V5"] <= {"int32", "float32"}
    signature = json.loads((tmp_path / "det.signature.json").read_text())
    assert sorted(signature["output"]) == ["boxes", "class_ids", "num_detections", "scores"]
    assert signature["input"]["shape"][0] == 1 and "num_detections" in signature["app_steps"][-1]
    from transferkit.runner import load_run

    _, _, _, info = load_run(detection_run)
    image = sorted((detection_run.parent / "data" / "images").iterdir())[0]
    records = next(predict_edge(output, [str(image)]))[1]
    assert records and all(d.label in info["class_names"] and 0 <= d.score <= 1 and len(d.box) == 4
                           for d in records)
    assert main(["predict", str(output), str(image)]) == 0
    assert str(records[0]) in capsys.readouterr().out  # described by the detection task, as `predict RUN` is
    assert main(["evaluate", str(detection_run), "--model", str(output)]) == 0
    assert "map50" in capsys.readouterr().out


def test_an_int8_file_whose_output_kept_float_is_refused_with_its_name():
    """`modify_model_io_type` only logs when it cannot make an output integer; the export checks."""
    import tensorflow as tf

    doubled = tf.function(lambda x: {"probabilities": x * 2.0},
                          input_signature=[tf.TensorSpec([1, 3], tf.float32, name="x")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([doubled.get_concrete_function()], doubled)
    float_file = converter.convert()
    edge_export._check_io_types(float_file, tf.float32, tf.float32)  # nothing asked: nothing to check
    with pytest.raises(EdgeExportError, match=r"output .* as float32; expected uint8 \(--io-type\)"):
        edge_export._check_io_types(float_file, tf.float32, tf.uint8)
    with pytest.raises(EdgeExportError, match=r"input .* as float32; expected int8"):
        edge_export._check_io_types(float_file, tf.int8, tf.float32)
