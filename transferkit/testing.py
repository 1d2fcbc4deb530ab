"""Helpers for testing tasks: tiny backbones, generated data, one-call checks.

A plugin author checks a new task with one call:

```python
from transferkit.testing import run_task_test

def test_my_task(tmp_path):
    run_task_test("my_task", {"data": {...}}, tmp_path)
```

`run_task_test` builds the task on a tiny randomly initialised backbone, fits
a step of each stage, saves and reloads the model and checks the reloaded
model predicts the same.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

# A tiny EfficientNet (about 25k parameters) built from config: no weights to
# download, seconds to train on a CPU.
TINY_EFFICIENTNET = {
    "architecture": "efficientnet",
    "preset": None,
    "config": {
        "stackwise_width_coefficients": [1.0, 1.0, 1.0],
        "stackwise_depth_coefficients": [1.0, 1.0, 1.0],
        "stackwise_kernel_sizes": [3, 3, 3],
        "stackwise_num_repeats": [1, 1, 1],
        "stackwise_input_filters": [8, 8, 16],
        "stackwise_output_filters": [8, 16, 16],
        "stackwise_expansion_ratios": [1, 2, 2],
        "stackwise_squeeze_and_excite_ratios": [0.0, 0.0, 0.0],
        "stackwise_strides": [1, 2, 2],
        "stackwise_block_types": ["v1", "v1", "v1"],
        "stackwise_force_input_filters": [0, 0, 0],
        "stackwise_nores_option": [False, False, False],
        "activation": "relu6",
        "num_features": 1280,  # KerasHub 0.32 get_config drops num_features: keep the default
        "dropout": 0.0,
    },
}

# A tiny EfficientNet with a feature pyramid (P1..P5, strides 2..32) for
# detection tests: about 60k parameters, seconds per epoch at 64-128 px.
TINY_PYRAMID_EFFICIENTNET = {
    "architecture": "efficientnet",
    "preset": None,
    "config": {
        **TINY_EFFICIENTNET["config"],
        "stackwise_width_coefficients": [1.0] * 5,
        "stackwise_depth_coefficients": [1.0] * 5,
        "stackwise_kernel_sizes": [3] * 5,
        "stackwise_num_repeats": [1] * 5,
        "stackwise_input_filters": [8, 8, 16, 16, 24],
        "stackwise_output_filters": [8, 16, 16, 24, 32],
        "stackwise_expansion_ratios": [1, 2, 2, 2, 2],
        "stackwise_squeeze_and_excite_ratios": [0.0] * 5,
        "stackwise_strides": [1, 2, 2, 2, 2],
        "stackwise_block_types": ["v1"] * 5,
        "stackwise_force_input_filters": [0] * 5,
        "stackwise_nores_option": [False] * 5,
        "num_features": 64,
    },
}

# A tiny BERT (2 layers, 16 wide) built from config, for text tasks.
TINY_BERT = {
    "architecture": "bert",
    "preset": None,
    "config": {"vocabulary_size": 128, "num_layers": 2, "num_heads": 2, "hidden_dim": 16,
               "intermediate_dim": 32, "max_sequence_length": 32},
}

SHAPES = ("circle", "square", "triangle", "cross")


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image of one shape on a noisy background."""
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = rng.uniform(0, 255, size=3)
    image += rng.normal(0, 12, size=image.shape)
    color = rng.uniform(0, 255, size=3)
    while np.abs(color - image.mean(axis=(0, 1))).max() < 80:
        color = rng.uniform(0, 255, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65, size=2) * size
    radius = rng.uniform(0.2, 0.32) * size
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    elif shape == "square":
        mask = (np.abs(yy - cy) <= radius * 0.85) & (np.abs(xx - cx) <= radius * 0.85)
    elif shape == "triangle":
        top = cy - radius
        mask = (yy >= top) & (yy <= cy + radius) & (np.abs(xx - cx) <= (yy - top) * 0.6)
    elif shape == "cross":
        width = radius * 0.3
        mask = ((np.abs(yy - cy) <= width) & (np.abs(xx - cx) <= radius)) | (
            (np.abs(xx - cx) <= width) & (np.abs(yy - cy) <= radius))
    else:
        raise ValueError(f"draw_shape: unknown shape. Received: shape={shape!r}; expected one of {SHAPES}")
    image[mask] = color
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folder(root: str | os.PathLike, classes: tuple[str, ...] = SHAPES[:3], per_class: int = 8,
                      size: int = 32, seed: int = 0, fmt: str = "png") -> Path:
    """Writes `root/<class>/<i>.<fmt>` images of generated shapes."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw_shape(name, size, rng)).save(folder / f"{name}_{i:03d}.{fmt}")
    return root


def tiny_config(train: str | os.PathLike, image_size: int = 32, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for image classification on the tiny backbone."""
    data = {"train": str(train), "image_size": [image_size, image_size], "batch_size": 8}
    data.update(sections.pop("data", {}))
    config = {
        "task": "image_classification",
        "data": data,
        "backbone": copy.deepcopy(TINY_EFFICIENTNET),
        "stages": [
            {"name": "head", "freeze": {"backbone": True}, "epochs": 1, "learning_rate": 1e-2},
            {"name": "finetune", "freeze": {"top_blocks": 2}, "epochs": 1, "learning_rate": 1e-3},
        ],
        "training": {"verbose": 0, "tensorboard": False},
    }
    for key, value in sections.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def run_task_test(task: str, config: Mapping[str, Any], run_dir: str | os.PathLike,
                  atol: float = 1e-5, export: bool = True) -> dict[str, Any]:
    """Builds, fits each stage, saves, reloads, exports and checks parity at each step.

    Speaks only the Task contract, so it checks any task: the run folder is
    complete, the history has one row per epoch, the saved `model.keras`
    predicts what a model rebuilt from the config and the best weights
    predicts, and (with `export`) the SavedModel passes the task's own parity
    checks and answers its warmup examples. Stages default to the task's
    when the config does not set them; the backbone defaults to a tiny one.
    Returns what it checked, for further assertions.
    """
    import tensorflow as tf

    from transferkit.config import build_run_config
    from transferkit.runner import load_model_weights, load_run, train

    data = dict(config)
    data.setdefault("task", task)
    data.setdefault("backbone", copy.deepcopy(TINY_EFFICIENTNET))
    data.setdefault("training", {"verbose": 0, "tensorboard": False})
    run_config = build_run_config(data)
    if run_config.task != task:
        raise ValueError(f"run_task_test: config names task {run_config.task!r}, expected {task!r}")
    run_dir = Path(run_dir)
    train(run_config, run_dir, resume=False)
    for name in ("config.yaml", "history.json", "model.keras", "metrics.json", "info.json"):
        assert (run_dir / name).exists(), f"run_task_test: {name} missing from {run_dir}"
    history = json.loads((run_dir / "history.json").read_text())
    expected_epochs = sum(stage.epochs for stage in run_config.stages)
    assert len(history) == expected_epochs, f"run_task_test: {len(history)} epochs recorded, expected {expected_epochs}"
    # Rebuild the model from the config and the best weights, and compare it
    # with the saved model.keras: serialisation must not change predictions.
    _, task_obj, reloaded, info = load_run(run_dir)
    for name in task_obj.saved_files(info):
        assert (run_dir / name).exists(), f"run_task_test: artifact {name} missing from {run_dir}"
    check_preprocessor(task_obj, info)
    batch = next(iter(task_obj.datasets().val))[0]
    backbone = task_obj.load_backbone(run_config.backbone)
    rebuilt = task_obj.build_model(backbone, info)
    load_model_weights(rebuilt, run_dir / "best.weights.h5")
    first = tf.nest.map_structure(np.asarray, rebuilt(batch, training=False))
    second = tf.nest.map_structure(np.asarray, reloaded(batch, training=False))
    tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(a, b, atol=atol), first, second)
    for array in tf.nest.flatten(first):
        assert np.all(np.isfinite(array)), "run_task_test: non-finite predictions"
    result = {"run_dir": run_dir, "history": history, "predictions": first, "info": info,
              "cache_checked": check_cache_split(task_obj, rebuilt, backbone, batch, atol)}
    if export:
        from transferkit.serving.export import export_run
        from transferkit.serving.warmup import read_warmup_requests

        version_dir = export_run(run_dir, run_dir / "exported", task.replace("_", "-"))
        report = json.loads((version_dir / "assets.extra" / "transferkit_export.json").read_text())
        assert report["checked_examples"] > 0, "run_task_test: export checked no examples"
        assert read_warmup_requests(version_dir), "run_task_test: no warmup requests written"
        for name in task_obj.saved_files(info):
            assert (version_dir / "assets" / name).exists(), f"run_task_test: asset {name} missing"
        result.update(export_dir=version_dir, export_report=report)
    return result


def check_preprocessor(task_obj, info: Mapping[str, Any]) -> None:
    """Asserts that a task with a preprocessor records it and that it survives a JSON round trip."""
    if task_obj.preprocessor_class is None:
        return
    from transferkit.preprocessing import INFO_KEY

    assert INFO_KEY in info, "run_task_test: datasets() did not record the preprocessor in info"
    preprocessor = task_obj.preprocessor(info)
    assert isinstance(preprocessor, task_obj.preprocessor_class), f"run_task_test: {preprocessor!r}"
    again = type(preprocessor).from_config(json.loads(preprocessor.to_json()))
    assert again == preprocessor, f"run_task_test: the preprocessor changed in a JSON round trip: {again!r}"
    assert preprocessor == task_obj.build_preprocessor(), \
        "run_task_test: the recorded preprocessor differs from the one the config describes"


def check_cache_split(task_obj, model, backbone, batch, atol: float = 1e-5) -> bool:
    """Asserts that the task's feature-cache split gives the full model's outputs; False when it has none.

    With the whole backbone frozen, `cache_split(...).trainable` applied to the extractor's outputs
    must equal the full forward pass: the frozen stage trains on exactly what the model computes.
    """
    import tensorflow as tf

    from transferkit.config import FreezeConfig
    from transferkit.models.freezing import apply_freeze_plan

    apply_freeze_plan(backbone, FreezeConfig(backbone=True))
    split = task_obj.cache_split(model, backbone)
    if split is None:
        return False
    full = tf.nest.map_structure(np.asarray, model(batch, training=False))
    cached = tf.nest.map_structure(np.asarray, split.trainable(split.extractor(batch, training=False), training=False))
    tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(
        a, b, atol=atol, err_msg="run_task_test: the cached features do not give the full model's outputs"),
        full, cached)
    return True


def make_detection_dataset(root: str | os.PathLike, count: int = 24, size: int = 64, classes=SHAPES[:2],
                           seed: int = 0, fmt: str = "csv", max_objects: int = 2) -> Path:
    """Writes generated images with 1..`max_objects` shapes each and their boxes; returns the annotation path.

    `fmt` is "csv" (returns the CSV), "voc", "yolo" (return the folder) or
    "coco" (returns the JSON), written by the detection plugin's own writers.
    """
    from PIL import Image

    from transferkit.plugins.object_detection import annotations as ann

    root = Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        canvas = np.empty((size, size, 3), np.float32)
        canvas[:] = rng.uniform(0, 80, size=3)
        canvas += rng.normal(0, 8, size=canvas.shape)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            name = classes[int(rng.integers(len(classes)))]
            side = int(rng.integers(size // 4, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
            if any(not (x0 + side <= b[0] or b[2] <= x0 or y0 + side <= b[1] or b[3] <= y0) for b in boxes):
                continue  # no overlapping objects: every box is fully visible
            patch = draw_shape(name, side, rng).astype(np.float32)
            mask = np.abs(patch - patch[0, 0]).max(axis=-1) > 40  # the shape, not its background
            region = canvas[y0:y0 + side, x0:x0 + side]
            region[mask] = patch[mask]
            ys, xs = np.nonzero(mask)
            boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
            labels.append(name)
        path = images_dir / f"img_{i:03d}.png"
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(path)
        records.append(ann.ImageAnnotation(str(path), size, size, np.asarray(boxes, np.float32), labels))
    if fmt == "csv":
        ann.write_csv(records, root / "labels.csv")
        return root / "labels.csv"
    if fmt == "voc":
        ann.write_voc(records, root / "annotations")
        return root / "annotations"
    if fmt == "coco":
        ann.write_coco(records, root / "annotations.json", list(classes))
        return root / "annotations.json"
    if fmt == "yolo":
        ann.write_yolo(records, root / "yolo", list(classes))
        return root / "yolo"
    raise ValueError(f"make_detection_dataset: fmt must be csv, voc, coco or yolo. Received: fmt={fmt!r}")


def tiny_detection_config(train: str | os.PathLike, image_size: int = 64, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for object detection on the tiny pyramid backbone."""
    config = tiny_config(train, image_size, **sections)
    config["task"] = "object_detection"
    config["backbone"] = copy.deepcopy(TINY_PYRAMID_EFFICIENTNET)
    config["data"].setdefault("image_size", [image_size, image_size])
    config.setdefault("model", {"fpn_channels": 16, "head_convs": 1, "min_level": 3, "max_level": 5})
    return config


# A small vocabulary and two kinds of sentences, so that a tiny BERT can learn sentiment in a few steps.
TEXT_WORDS = {
    "positive": ("good", "great", "fine", "lovely", "superb"),
    "negative": ("bad", "awful", "poor", "dull", "weak"),
}
TEXT_FILLER = ("the", "a", "movie", "film", "plot", "is", "was", "and", "acting", "story", "this", "it")


def write_vocabulary(path: str | os.PathLike, size: int = 200) -> Path:
    """A BERT `vocab.txt` of `size` tokens: special tokens, the test words, letters and filler pieces."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "'"]
    tokens += [w for words in TEXT_WORDS.values() for w in words] + list(TEXT_FILLER)
    tokens += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    tokens += ["##ly", "##ed", "##ing", "cafe", "naive"]
    tokens = list(dict.fromkeys(tokens))  # each token once ("a" is a word and a letter)
    filler = 0
    while len(tokens) < size:
        tokens.append(f"[unused{filler}]")
        filler += 1
    path = Path(path)
    path.write_text("\n".join(tokens[:size]) + "\n", encoding="utf-8")
    return path


def make_text_dataset(root: str | os.PathLike, count: int = 48, seed: int = 0) -> Path:
    """`root/train.csv` (text,label) of short positive and negative sentences, and `root/vocab.txt`."""
    import csv

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_vocabulary(root / "vocab.txt")
    rng = np.random.default_rng(seed)
    labels = sorted(TEXT_WORDS)
    with (root / "train.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(count):
            label = labels[i % len(labels)]
            words = list(rng.choice(TEXT_FILLER, 5)) + list(rng.choice(TEXT_WORDS[label], 2))
            rng.shuffle(words)
            writer.writerow([" ".join(words).capitalize() + f" {i}.", label])
    return root / "train.csv"


def tiny_text_config(root: str | os.PathLike, sequence_length: int = 16, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for text classification on a 2-layer, 16-wide BERT built from config."""
    root = Path(root)
    backbone = copy.deepcopy(TINY_BERT)
    backbone["config"]["vocabulary_size"] = 200
    config: dict[str, Any] = {
        "task": "text_classification",
        "backbone": backbone,
        "data": {"train": str(root / "train.csv"), "sequence_length": sequence_length, "batch_size": 8},
        "tokenizer": {"vocabulary": str(root / "vocab.txt")},
        "stages": [
            {"name": "head", "freeze": {"backbone": True}, "epochs": 2, "learning_rate": 0.01},
            {"name": "top", "freeze": {"top_blocks": 1}, "epochs": 1, "learning_rate": 0.001},
        ],
        "training": {"verbose": 0, "tensorboard": False},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def free_ports(count: int) -> list[int]:
    """`count` TCP ports free on localhost now (for local worker clusters in tests and benchmarks)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports
