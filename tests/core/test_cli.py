import subprocess
import sys

import yaml

from transferkit.cli import main


def test_version_and_help(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("transferkit 0.")
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("tasks", "config", "train", "evaluate", "predict", "presets"):
        assert command in out


def test_config_check_prints_resolved_config(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"task": "image_classification", "data": {"train": "imgs"}}))
    assert main(["config", "check", str(path), "--set", "data.batch_size=4"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out)
    assert resolved["data"]["batch_size"] == 4
    assert resolved["stages"][0]["name"] == "head"


def test_config_check_error_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"task": "image_classification", "data": {"train": "imgs", "bach_size": 2}}))
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("transferkit: error: data.bach_size: unknown key; did you mean 'batch_size'?")


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "transferkit", "tasks", "--json"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"name": "image_classification"' in result.stdout
