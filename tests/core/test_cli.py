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


def test_tensorflow_start_up_noise_is_hidden_unless_verbose(tmp_path):
    """A healthy CPU machine's start-up lines (cuInit, oneDNN, absl) are not shown; --verbose shows them.

    TensorFlow is imported by the command itself when it needs it (here: to build the backbone a config's
    freeze plans are checked against), not up front; that import is the quiet one."""
    from transferkit.logs import NOISE
    from transferkit.testing import tiny_vision_config

    raw = subprocess.run([sys.executable, "-c", "import tensorflow as tf; tf.config.list_physical_devices()"],
                         capture_output=True, text=True, cwd=tmp_path)
    noise = [line for line in raw.stderr.splitlines() if NOISE.search(line)]
    not_a_run = subprocess.run([sys.executable, "-m", "transferkit", "evaluate", str(tmp_path / "no_run")],
                               capture_output=True, text=True, cwd=tmp_path)
    assert not_a_run.returncode == 2
    assert not_a_run.stderr.splitlines() == [f"transferkit: error: {tmp_path / 'no_run'}: no model.keras; is this a "
                                             f"finished `transferkit train` run directory?"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_vision_config("image_classification", "imgs")))
    command = [sys.executable, "-m", "transferkit", "config", "check", "run.yaml"]
    quiet = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if NOISE.search(line)], quiet.stderr
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, text=True, cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    for line in noise:  # what TensorFlow prints on this machine, our filter aside
        assert line.split("] ", 1)[-1] in verbose.stderr


def test_noise_filter_keeps_real_errors():
    from transferkit.logs import NOISE

    assert NOISE.search("E0000 00:00:1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error")
    assert NOISE.search("I0000 port.cc:153] oneDNN custom operations are on. You may see ...")
    assert not NOISE.search("E0000 op_kernel.cc:1] OP_REQUIRES failed at save_restore_v2_ops.cc: No space left")
