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
