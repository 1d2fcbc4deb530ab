"""The closing summary reads like a report: counts as integers at the end of their line, COCO's -1
placeholders left out, per-class training counts shown (issue 35, item 4)."""

import json

from transferkit.summary import run_summary


def test_detection_figures_counts_and_placeholders(tmp_path):
    info = {"task": "object_detection", "backbone": "yolov4-tiny-coco", "class_names": ["raccoon"],
            "num_train": 136, "num_val": 24, "num_train_boxes": 148, "num_val_boxes": 25, "train_class_counts": [148]}
    test = {"num_images": 40, "num_boxes": 44.0, "map": 0.44, "map50": 0.94, "map_small": -1.0}
    metrics = {"num_images": 24.0, "num_boxes": 25.0, "num_detections": 57.0, "map": 0.47, "map50": 0.95,
               "map_small": -1.0, "map_medium": 0.55, "score": "map", "test": test,
               "per_class": {"raccoon": {"ap": 0.47, "ap50": 0.95, "support": 25}}}
    (tmp_path / "info.json").write_text(json.dumps(info))
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = run_summary(tmp_path)
    assert "result    map 0.4700 · map50 0.9500 · map_medium 0.5500 on 24 images, 25 boxes, 57 detections" in text
    assert "test      map 0.4400 · map50 0.9400 on 40 images, 44 boxes" in text
    figures = [line for line in text.splitlines() if line.startswith(("result", "test"))]
    assert not any(" -1" in line or ".0000 " in line.split(" on ")[-1] or "map_small" in line for line in figures)
    assert any(line.split()[:3] == ["raccoon", "148", "25"] for line in text.splitlines())
    info["summary_figures"] = ["map50", "map", "mar100"]  # what the detection task records
    (tmp_path / "info.json").write_text(json.dumps(info))
    text = run_summary(tmp_path)
    assert "result    map50 0.9500 · map 0.4700 on 24 images" in text and "map_medium" not in text
    assert "test      map50 0.9400 · map 0.4400 on 40 images" in text


def test_classification_counts_its_examples(tmp_path):
    (tmp_path / "info.json").write_text(json.dumps({"task": "image_classification", "class_names": ["a", "b"]}))
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "num_examples": 10, "loss": 0.3}))
    assert "result    accuracy 0.9000 · loss 0.3000 on 10 validation examples" in run_summary(tmp_path)


def test_problem_kinds_never_end_in_an_open_parenthesis():
    from transferkit.summary import problem_kind

    assert problem_kind("cannot decode (truncated JPEG: 12 bytes") == "cannot decode"
    long = "x" * 60 + " (the rest of a long reason that the cut ends inside)"
    assert "(" not in problem_kind(long)
    assert problem_kind("unknown class 'cat' (not in class_names)") == "unknown class … (not in class_names)"
