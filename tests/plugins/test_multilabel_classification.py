"""Multi-label image classification: its readers (and their hostile inputs), thresholds, metrics, records,
and one trained run through predict, SavedModel serving and an edge file."""

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from transferkit.errors import ConfigError, DataError
from transferkit.plugins.multilabel_classification.config import MultiLabelDataConfig, MultiLabelHeadConfig
from transferkit.plugins.multilabel_classification.data import MAX_LABEL_FILE_BYTES, list_labelled_images
from transferkit.plugins.multilabel_classification.evaluation import multilabel_metrics, tuned_thresholds
from transferkit.plugins.multilabel_classification.records import (
    LabelScore,
    MultiLabelRecords,
    records_from_scores,
)
from transferkit.plugins.multilabel_classification.testing import make_multilabel_folder, tiny_config


def _image(path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    return path


# -- readers ---------------------------------------------------------------------------------------------


def test_three_layouts_give_the_same_label_sets(tmp_path):
    for name in ("a", "b", "c"):
        _image(tmp_path / f"{name}.png")
    (tmp_path / "labels.csv").write_text("path,labels\na.png,cat;dog\nb.png,dog\nc.png,\n")
    (tmp_path / "columns.csv").write_text("path,cat,dog\na.png,1,1\nb.png,0,1\nc.png,0,0\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, labels in (("a", "cat\ndog\n"), ("b", "dog"), ("c", "")):
        _image(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(labels)
    expected = {"a.png": ("cat", "dog"), "b.png": ("dog",), "c.png": ()}
    for source, columns in ((tmp_path / "labels.csv", None), (tmp_path / "columns.csv", ["cat", "dog"]),
                            (folder, None)):
        images, problems, found_columns = list_labelled_images(source)
        assert {image.path.rsplit("/", 1)[1]: image.labels for image in images} == expected, source
        assert problems == [] and found_columns == columns


def test_compressed_csv_and_another_separator(tmp_path):
    _image(tmp_path / "a.png")
    with gzip.open(tmp_path / "labels.csv.gz", "wt") as file:
        file.write("path,labels\na.png,cat|cat| dog \n")
    images, _, _ = list_labelled_images(tmp_path / "labels.csv.gz", separator="|")
    assert images[0].labels == ("cat", "dog")  # stripped, each once


@pytest.mark.parametrize("content, message", [
    (b"", "expected a header with a 'path' column"),
    (b"path,labels\n", "no usable rows"),
    (b"path,label\nx.png,cat\n", "task image_classification"),  # another task's CSV
    (b"file,tags\nx.png,cat\n", "'path' column"),
    (b"path\nx.png\n", "'labels' column or one 0/1 column"),
    (b"path,labels\n\xff\xfe,cat\n", "not a UTF-8 text CSV"),
    (b"path,labels\nx.png,c\x00at\n", "NUL bytes"),
])
def test_hostile_csv_files_name_the_file_and_what_was_expected(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        list_labelled_images(path)
    assert str(path) in str(error.value)


def test_bad_rows_become_problems_with_their_line(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    (tmp_path / "columns.csv").write_text("path,cat,dog\na.png,1,2\nb.png,0,1\nmissing.png,1,0\n,1,1\n")
    images, problems, _ = list_labelled_images(tmp_path / "columns.csv")
    assert [image.labels for image in images] == [("dog",)]
    reasons = {p["path"].rsplit(":", 1)[1]: p["reason"] for p in problems}
    assert "'dog' is '2'; expected 0 or 1" in reasons["2"]
    assert "file not found" in reasons["4"] and "empty path" in reasons["5"]


def test_hostile_label_files_are_problems_not_crashes(tmp_path):
    for name in ("ok", "none", "huge", "binary", "nul"):
        _image(tmp_path / f"{name}.png")
    (tmp_path / "ok.txt").write_text("cat\n")
    (tmp_path / "huge.txt").write_text("x" * (MAX_LABEL_FILE_BYTES + 1))
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "nul.txt").write_text("c\x00at")
    images, problems, _ = list_labelled_images(tmp_path)
    assert [image.labels for image in images] == [("cat",)]
    reasons = " | ".join(f"{p['path']}: {p['reason']}" for p in problems)
    for expected in ("no label file none.txt", "at most", "not UTF-8", "NUL bytes"):
        assert expected in reasons
    (tmp_path / "ok.txt").unlink()
    with pytest.raises(DataError, match="no image has a usable label file"):
        list_labelled_images(tmp_path)
    with pytest.raises(DataError, match="not found"):
        list_labelled_images(tmp_path / "absent")


def test_config_refuses_bad_values_and_says_what_it_received():
    with pytest.raises(ConfigError, match="data.label_separator"):
        MultiLabelDataConfig(train="x.csv", label_separator=",")
    with pytest.raises(ConfigError, match="data.train: required"):
        MultiLabelDataConfig()
    with pytest.raises(ConfigError, match="head.threshold"):
        MultiLabelHeadConfig(threshold=1.0)


# -- thresholds, metrics, records --------------------------------------------------------------------------


def test_tuned_thresholds_maximise_each_labels_f1():
    truth = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], np.float32)
    scores = np.array([[0.3, 0.9], [0.25, 0.1], [0.2, 0.2], [0.1, 0.3]], np.float32)
    cuts = tuned_thresholds(truth, scores, default=0.5)
    # Label 0: scores 0.3 and 0.25 are the positives, so a cut at 0.25 gives F1 1; the threshold sits halfway
    # to the next lower score (0.2). Label 1 has no positive.
    assert cuts[0] == pytest.approx(0.225) and cuts[1] == pytest.approx(0.5)
    metrics = multilabel_metrics(truth, scores, cuts, ["a", "b"])
    assert metrics["per_label"]["a"]["f1"] == 1.0 and metrics["per_label"]["a"]["average_precision"] == 1.0
    assert "average_precision" not in metrics["per_label"]["b"]  # no positive: not in the mAP
    assert metrics["map"] == 1.0
    # Label b predicted once (0.9 >= 0.5) but never true: one wrong label of eight, one image not exact.
    assert metrics["hamming_loss"] == pytest.approx(1 / 8) and metrics["exact_match"] == pytest.approx(3 / 4)
    assert metrics["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1))


def test_records_keep_every_applying_label_then_fill_to_top_k():
    scores = np.array([[0.9, 0.8, 0.1, 0.05]], np.float32)
    cuts = np.array([0.5, 0.5, 0.5, 0.01], np.float32)
    record = records_from_scores(scores, cuts, ["a", "b", "c", "d"], top_k=1)[0]
    # d applies (0.05 >= 0.01) although c scores higher: every applying label is shown, in score order.
    assert [(item.label, item.applies) for item in record] == [("a", True), ("b", True), ("d", True)]
    record = records_from_scores(scores, cuts, ["a", "b", "c", "d"], top_k=4)[0]
    assert [item.label for item in record] == ["a", "b", "c", "d"]
    text = MultiLabelRecords.describe(record)
    assert "labels: a, b, d" in text and "c  (threshold 0.50, below)" in text
    assert "labels: (none" in MultiLabelRecords.describe([LabelScore("x", 0.1, 0.5)])


def test_decode_edge_refuses_outputs_that_do_not_fit():
    with pytest.raises(ValueError, match="probabilities and thresholds"):
        MultiLabelRecords.decode_edge({"probabilities": np.zeros((1, 2))}, ["a", "b"])
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        MultiLabelRecords.decode_edge({"probabilities": np.zeros((1, 3)), "thresholds": np.zeros((1, 3))},
                                      ["a", "b"])


# -- one trained run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from transferkit.config import build_run_config
    from transferkit.runner import train

    root = tmp_path_factory.mktemp("multilabel")
    csv = make_multilabel_folder(root / "data", count=24, size=32, csv=True)
    config = tiny_config(csv)
    config["stages"] = [{"name": "head", "freeze": {"backbone": True}, "epochs": 2, "learning_rate": 3e-2}]
    return train(build_run_config(config), root / "run"), csv


def test_the_run_tunes_thresholds_and_reports_per_label(trained_run):
    from transferkit.runner import load_run
    from transferkit.plugins.multilabel_classification.layers import thresholds_of

    run_dir, _ = trained_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["score"] == "map" and 0.0 <= metrics["map"] <= 1.0
    assert set(metrics["per_label"]) == {"circle", "square", "triangle"}
    assert (run_dir / "report" / "training_curves.png").is_file()
    assert (run_dir / "report" / "worst_labelled.png").is_file() == (metrics["exact_match"] < 1.0)
    _, _, model, _ = load_run(run_dir)
    carried = thresholds_of(model)
    reported = [metrics["per_label"][name]["threshold"] for name in ("circle", "square", "triangle")]
    assert np.allclose(carried, reported) and not np.allclose(carried, 0.5)  # tuned, and saved in model.keras


def test_predict_served_answer_and_edge_file_agree(trained_run, tmp_path):
    import tensorflow as tf

    from transferkit.registry import task_for_outputs
    from transferkit.runner import load_run, predict_files
    from transferkit.serving.export import export_run

    run_dir, csv = trained_run
    image = str(csv.parent / "image_000.png")
    (_, local, _), = predict_files(run_dir, [image], top_k=3)
    export_dir = export_run(run_dir, tmp_path / "models", "ml")
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"](
        images=tf.constant([open(image, "rb").read()]))
    served = {key: value.numpy() for key, value in served.items()}
    task = task_for_outputs(served)
    assert task.name == "multilabel_classification"
    (remote,) = task.decode(served, top_k=3)
    assert [item.label for item in remote] == [item.label for item in local]
    assert np.allclose([item.score for item in remote], [item.score for item in local], atol=1e-4)
    assert np.allclose([item.threshold for item in remote], [item.threshold for item in local])
    _, task_obj, model, info = load_run(run_dir)
    edge = task_obj.edge_model(model, info)
    pixels = task_obj.read_input(image, info)[None]
    outputs = {k: np.asarray(v) for k, v in edge.function(tf.constant(pixels)).items()}
    (from_edge,) = task_obj.decode_edge(outputs, list(info["class_names"]), top_k=3)
    assert [item.label for item in from_edge] == [item.label for item in local]


def _task(config):
    from transferkit.config import build_run_config
    from transferkit.registry import get_task

    run_config = build_run_config(config)
    return get_task(run_config.task)(run_config)


def test_datasets_report_unknown_labels_and_refuse_what_does_not_fit(tmp_path):
    from transferkit.plugins.image_classification.testing import make_image_folder

    train = make_multilabel_folder(tmp_path / "train", count=12, size=32, csv=True)
    val = tmp_path / "val.csv"
    val.write_text(f"path,labels\n{train.parent / 'image_000.png'},circle;unicorn\n"
                   f"{train.parent / 'image_001.png'},square\n")
    data = _task(tiny_config(train, data={"val": str(val)})).datasets()
    assert data.info["num_val"] == 1 and data.info["class_names"] == ["circle", "square", "triangle"]
    assert any("'unicorn' is not one of" in p["reason"] for p in data.problems)
    pixels, targets, rows = next(iter(data.val_indexed))
    assert pixels.shape == (1, 32, 32, 3) and targets.numpy().tolist() == [[0.0, 1.0, 0.0]]
    with pytest.raises(DataError, match="unicorn"):
        _task(tiny_config(train, data={"val": str(val), "on_bad_image": "error"})).datasets()
    with pytest.raises(DataError, match="over data.cache_memory_mb=1"):
        _task(tiny_config(train, image_size=512, data={"cache_memory_mb": 1})).datasets()
    # Another task's data: class folders have no label files beside the images.
    folders = make_image_folder(tmp_path / "classes", per_class=2, size=16)
    with pytest.raises(DataError, match="no label file"):
        _task(tiny_config(folders)).datasets()


def test_an_onnx_file_carries_the_thresholds_and_predicts_as_the_run(trained_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from transferkit.runner import predict_files
    from transferkit.serving.edge_export import EdgeExportOptions, export_edge, predict_edge

    run_dir, csv = trained_run
    image = str(csv.parent / "image_001.png")
    report = export_edge(run_dir, tmp_path / "multilabel.onnx", EdgeExportOptions(format="onnx"))
    assert report["drop_points"] == pytest.approx(0.0, abs=1e-6)
    ((_, from_file),) = list(predict_edge(tmp_path / "multilabel.onnx", [image], top_k=3))
    ((_, local, _),) = predict_files(run_dir, [image], top_k=3)
    assert [(i.label, round(i.threshold, 5)) for i in from_file] == [(i.label, round(i.threshold, 5)) for i in local]
