"""Distribution: MirroredStrategy simulated on two logical CPUs; two local workers with MultiWorkerMirroredStrategy."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import textwrap

import pytest
import yaml

from transferkit.config import build_run_config
from transferkit.errors import ConfigError
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import train
from transferkit.testing import free_ports

# Two logical CPU devices stand in for two GPUs: MirroredStrategy splits each batch between them.
MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    spec = json.loads(sys.argv[1])
    if spec["replicas"] > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * spec["replicas"])
    from transferkit.config import build_run_config
    from transferkit.runner import train
    train(build_run_config(spec["config"]), spec["run_dir"])
""")


@pytest.mark.integration
def test_mirrored_strategy_on_two_devices_matches_one_device(tmp_path):
    shapes = make_image_folder(tmp_path / "shapes", per_class=10, size=32)
    # 8 validation images and batches of 8: every batch splits evenly between the two replicas.
    config = tiny_config(shapes, data={"val_split": 0.2667}, head={"dropout": 0.0},
                         training={"verbose": 0, "tensorboard": False, "distribute": "mirrored"})
    histories = {}
    for replicas in (1, 2):
        run_dir = tmp_path / f"replicas-{replicas}"
        spec = {"config": config, "run_dir": str(run_dir), "replicas": replicas}
        done = subprocess.run([sys.executable, "-c", MIRRORED, json.dumps(spec)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        histories[replicas] = json.loads((run_dir / "history.json").read_text())
    assert [r["stage"] for r in histories[1]] == [r["stage"] for r in histories[2]] == ["head", "finetune"]
    for one, two in zip(histories[1], histories[2]):
        # The same global batches; only the order of floating-point sums differs.
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-4, abs=1e-6)
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4, abs=1e-6)


def _start_workers(commands, tmp_path):
    """Starts one process per command, each a worker of one cluster on loopback ports."""
    ports = free_ports(len(commands))
    processes = []
    for index, command in enumerate(commands):
        env = dict(os.environ, TMPDIR=str(tmp_path / f"tmp{index}"), TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                         "task": {"type": "worker", "index": index}}))
        os.makedirs(env["TMPDIR"], exist_ok=True)
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    return processes


def _run_workers(config_path, run_dir, workers, tmp_path):
    """Runs `workers` local `transferkit train` processes; returns their (returncode, stdout, stderr)."""
    command = [sys.executable, "-m", "transferkit", "train", str(config_path), "--output", str(run_dir)]
    processes = _start_workers([command] * workers, tmp_path)
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        results.append((process.returncode, out, err))
    return results


def _digest(stdout):
    found = re.search(r"weights sha256 ([0-9a-f]{64})", stdout)
    assert found, stdout[-2000:]
    return found.group(1)


@pytest.mark.integration
def test_two_workers_agree_with_one_and_only_the_chief_writes(tmp_path):
    shapes = make_image_folder(tmp_path / "shapes", per_class=10, size=32)
    # 30 images, 22 to train in batches of 8: the last global batch (6) still splits 3/3 between the workers.
    config = tiny_config(shapes, data={"val_split": 0.2667}, head={"dropout": 0.0},
                         training={"verbose": 0, "tensorboard": False, "distribute": "multi_worker"})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    single = _run_workers(config_path, tmp_path / "one", 1, tmp_path / "single")
    assert single[0][0] == 0, single[0][2][-3000:]
    pair = _run_workers(config_path, tmp_path / "two", 2, tmp_path / "pair")
    for code, out, err in pair:
        assert code == 0, err[-3000:]
    # Both workers end with the same weights, bit for bit.
    assert _digest(pair[0][1]) == _digest(pair[1][1])
    assert "worker 0 of 2 workers, chief" in pair[0][1] and "worker 1 of 2 workers:" in pair[1][1]
    # Only the chief wrote the run folder; the other worker's temporary folder is gone.
    assert (tmp_path / "two" / "model.keras").exists() and (tmp_path / "two" / "metrics.json").exists()
    assert list((tmp_path / "pair" / "tmp1").iterdir()) == []
    one = json.loads((tmp_path / "one" / "history.json").read_text())
    two = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [r["stage"] for r in one] == [r["stage"] for r in two] == ["head", "finetune"]
    for a, b in zip(one, two):
        # The same global batches, halved per worker: only the order of floating-point sums differs.
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4, abs=1e-6)
    metrics_one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    metrics_two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics_two["accuracy"] == pytest.approx(metrics_one["accuracy"])


# The last worker kills itself when its third epoch ends; a chief left waiting for it is stopped by the test.
KILL_WORKER = textwrap.dedent("""
    import json, os, signal, sys
    import keras
    from transferkit.config import load_config
    from transferkit.runner import train

    class Killer(keras.callbacks.Callback):
        seen = 0
        def on_epoch_end(self, epoch, logs=None):
            Killer.seen += 1
            spec = json.loads(os.environ["TF_CONFIG"])
            if Killer.seen == 3 and spec["task"]["index"] == len(spec["cluster"]["worker"]) - 1:
                os.kill(os.getpid(), signal.SIGKILL)

    train(load_config(sys.argv[1]), sys.argv[2], extra_callbacks=[Killer()])
""")


@pytest.mark.integration
def test_killed_worker_run_resumes_on_both_workers(tmp_path):
    shapes = make_image_folder(tmp_path / "shapes", per_class=10, size=32)
    config = tiny_config(shapes, data={"val_split": 0.2667}, head={"dropout": 0.0}, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 2, "learning_rate": 1e-2},
        {"name": "finetune", "freeze": {"top_blocks": 2}, "epochs": 3, "learning_rate": 1e-3},
    ], training={"verbose": 1, "tensorboard": False, "distribute": "multi_worker"})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    histories = {}
    for workers in (2, 1):
        run_dir = tmp_path / f"run{workers}"
        killer = [sys.executable, "-c", KILL_WORKER, str(config_path), str(run_dir)]
        processes = _start_workers([killer] * workers, tmp_path / f"killed{workers}")
        assert processes[-1].wait(timeout=600) == -signal.SIGKILL, processes[-1].stderr.read()[-3000:]

        def saved_state():
            pointer = run_dir / "checkpoints" / "latest.json"
            if not pointer.exists():
                return {}
            name = json.loads(pointer.read_text())["checkpoint"]
            return json.loads((run_dir / "checkpoints" / name / "state.json").read_text())

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and saved_state().get("global_epoch", 0) < 3:
            time.sleep(0.2)  # the chief writes the third epoch's checkpoint, then waits for the dead worker
        for process in processes:
            process.kill()
            process.communicate()
        state = saved_state()
        assert (state["stage_index"], state["stage_epoch"], state["global_epoch"]) == (1, 1, 3)
        assert not (run_dir / "model.keras").exists()

        resumed = _run_workers(config_path, run_dir, workers, tmp_path / f"resumed{workers}")
        for code, out, err in resumed:
            assert code == 0, err[-3000:]
            assert "resuming" in out and "stage 2, 1 epoch(s) done in it" in out
        assert len({_digest(out) for _, out, _ in resumed}) == 1
        histories[workers] = json.loads((run_dir / "history.json").read_text())
        assert [(r["stage"], r["epoch"]) for r in histories[workers]] == [
            ("head", 1), ("head", 2), ("finetune", 1), ("finetune", 2), ("finetune", 3)]

    # Two workers resume as one does (its weights and optimizer state are checked exactly in test_runner).
    # A restart begins its epochs' shuffling anew, on one worker as on two.
    for a, b in zip(histories[1], histories[2]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("tf_config, message", [
    (None, r"needs the TF_CONFIG environment variable"),
    ("{not json", r"TF_CONFIG: not valid JSON"),
    ('{"cluster": {}}', r"TF_CONFIG.cluster: expected a mapping"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', r"TF_CONFIG.task: expected"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     r"TF_CONFIG.task.index: expected 0 to 0 .* Received: 3"),
])
def test_bad_tf_config_is_named_before_anything_is_written(tmp_path, monkeypatch, tf_config, message):
    shapes = make_image_folder(tmp_path / "shapes", per_class=4, size=32)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    config = build_run_config(tiny_config(shapes, training={"distribute": "multi_worker", "verbose": 0}))
    with pytest.raises(ConfigError, match=message):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
