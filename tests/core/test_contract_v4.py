"""Contract v4 (issue 33): core asks the task, not a list of task names."""

import json

import numpy as np
import pytest


def test_the_summary_closes_on_the_score_the_task_names(tmp_path):
    from transferkit.summary import run_summary

    (tmp_path / "info.json").write_text(json.dumps({"task": "some_task", "class_names": ["a", "b"]}))
    (tmp_path / "metrics.json").write_text(json.dumps({"map": 0.3, "accuracy": 0.5, "score": "accuracy"}))
    assert run_summary(tmp_path).splitlines()[-1].startswith("done: accuracy 0.5000")
    (tmp_path / "metrics.json").write_text(json.dumps({"map": 0.3, "accuracy": 0.5}))  # an older run
    assert run_summary(tmp_path).splitlines()[-1].startswith("done: map 0.3000")


def test_classifier_edge_outputs_decode_to_ranked_records():
    from transferkit.classification.records import ClassifierRecords

    records = ClassifierRecords.decode_edge({"probabilities": np.array([[0.1, 0.7, 0.2]])}, ["a", "b", "c"], 2)
    assert records == [[("b", pytest.approx(0.7)), ("c", pytest.approx(0.2))]]
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        ClassifierRecords.decode_edge({"probabilities": np.zeros((1, 3))}, ["a", "b"])


def test_detector_edge_outputs_decode_to_detections():
    from transferkit.plugins.object_detection.records import Detection
    from transferkit.registry import get_task

    outputs = {"boxes": np.array([[[1, 2, 3, 4], [0, 0, 0, 0]]], np.float32), "scores": np.array([[0.9, 0.0]]),
               "class_ids": np.array([[1, 0]]), "num_detections": np.array([1])}
    records = get_task("object_detection").decode_edge(outputs, ["cat", "dog"])
    assert records == [[Detection(label="dog", class_id=1, score=pytest.approx(0.9), box=(1.0, 2.0, 3.0, 4.0))]]


def test_image_input_keys_are_declared_once_and_named_as_the_preprocessors():
    import dataclasses

    from transferkit.plugins.image_classification.config import DataConfig
    from transferkit.plugins.multilabel_classification.config import MultiLabelDataConfig
    from transferkit.vision.input_section import ImageInputSection
    from transferkit.vision.preprocessor import ImagePreprocessor

    assert {f.name for f in dataclasses.fields(ImageInputSection)} == {f.name for f in dataclasses.fields(ImagePreprocessor)}
    for config_class in (DataConfig, MultiLabelDataConfig):
        assert issubclass(config_class, ImageInputSection)
        config = config_class(train="x.csv", image_size=(40, 48), resize="pad", crop_fraction=0.5,
                              interpolation="bilinear", max_pixels=10_000)
        assert config.preprocessor() == ImagePreprocessor(image_size=(40, 48), resize="pad", crop_fraction=0.5,
                                                          interpolation="bilinear", max_pixels=10_000)


def test_audio_data_keys_are_the_preprocessors_with_its_defaults():
    import dataclasses

    from transferkit.plugins.audio_classification.config import AudioDataConfig
    from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor

    section = {f.name: f.default for f in dataclasses.fields(AudioDataConfig)}
    for field in dataclasses.fields(AudioPreprocessor):
        assert field.name in section and section[field.name] == field.default, field.name
    assert AudioDataConfig(train="x").preprocessor() == AudioPreprocessor()


def test_the_foundation_names_no_text_or_audio_input():
    """Code (not prose) in transferkit/, models/ and serving/ never branches on a task's input names: the
    task says what its inputs need (`Task.edge_model`, its preprocessor)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    names = {"token_ids", "padding_mask", "segment_ids", "audio", "waveform"}
    found = []
    for folder in ("transferkit", "models", "serving"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "testing.py":  # the test kit builds tiny backbones of every kind
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
            found += [f"{path.relative_to(root)}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and node.value in names and id(node) not in prose]
    assert not found, found


def test_edge_input_facts_come_from_the_task_not_from_the_exporter():
    from transferkit.serving.edge_export import _described_inputs

    # One input: written flat with its name and the task's notes; nothing assumes an image.
    assert _described_inputs({"waveform": {"shape": [None, 16000], "dtype": "float32"}},
                             {"waveform": {"sample_rate": 16000}}) == {
        "name": "waveform", "shape": [None, 16000], "dtype": "float32", "sample_rate": 16000}
    assert _described_inputs({"pixels": {"shape": [1, 32, 32, 3], "dtype": "uint8"}}, {}) == {
        "name": "pixels", "shape": [1, 32, 32, 3], "dtype": "uint8"}
    two = {"token_ids": {"shape": [None, 8], "dtype": "int32"}, "padding_mask": {"shape": [None, 8], "dtype": "int32"}}
    assert _described_inputs(two, None) == two
