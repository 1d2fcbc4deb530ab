import json

import numpy as np
import pytest

from transferkit.testing import make_image_folder, run_task_test, tiny_config


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("shapes"), per_class=8, size=32)


def test_run_task_test_image_classification(shapes, tmp_path):
    config = tiny_config(shapes)
    result = run_task_test("image_classification", config, tmp_path / "run")
    history = result["history"]
    assert [row["stage"] for row in history] == ["head", "finetune"]
    assert all(np.isfinite(row["loss"]) for row in history)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_examples"] == 5  # 20% of 24
    assert len(metrics["confusion_matrix"]) == 3
    for name in ("confusion_matrix.png", "training_curves.png", "worst_classified.png"):
        assert (tmp_path / "run" / "report" / name).stat().st_size > 1000
    assert (tmp_path / "run" / "labels.txt").read_text().split() == ["circle", "square", "triangle"]
