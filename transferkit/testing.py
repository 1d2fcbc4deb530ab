"""Helpers for testing any task: tiny backbones, one-call checks, free ports.

A plugin author checks a new task with one call:

```python
from transferkit.testing import run_task_test

def test_my_task(tmp_path):
    run_task_test("my_task", {"data": {...}}, tmp_path)
```

`run_task_test` builds the task on a tiny randomly initialised backbone, fits
a step of each stage, saves and reloads the model and checks the reloaded
model predicts the same. Each task's generated data and tiny config live next
to it, in its plugin's `testing` module (`transferkit.plugins.<task>.testing`).
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


def tiny_vision_config(task: str, train: str | os.PathLike, image_size: int = 32, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for `task` on the tiny image backbone: a frozen stage, then the top 2 blocks.

    `sections` are merged into the config's sections (`data={...}` adds data keys).
    """
    data = {"train": str(train), "image_size": [image_size, image_size], "batch_size": 8}
    data.update(sections.pop("data", {}))
    config = {
        "task": task,
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
