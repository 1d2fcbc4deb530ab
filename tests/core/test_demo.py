import json

from transferkit.cli import main


def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "validation accuracy" in out
    assert "gRPC Predict from 127.0.0.1:" in out
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_examples"] == 16
    assert (run / "report" / "confusion_matrix.png").exists()
    history = json.loads((run / "history.json").read_text())
    assert [r["stage"] for r in history] == ["head", "head", "finetune"]
    assert "object detection:" in out and "gRPC detections from 127.0.0.1:" in out
    detection = json.loads((tmp_path / "detection" / "run" / "metrics.json").read_text())
    assert 0.0 <= detection["map"] <= detection["map50"] <= 1.0 and detection["num_images"] == 6
