"""Distribution: MirroredStrategy simulated on two logical CPUs; multi-worker refused."""

import json
import subprocess
import sys
import textwrap

import pytest

from transferkit.config import build_run_config
from transferkit.errors import ConfigError
from transferkit.runner import train
from transferkit.testing import make_image_folder, tiny_config

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


@pytest.mark.parametrize("distribute, tf_config", [("multi_worker", None), ("auto", '{"cluster": {}}')])
def test_multi_worker_is_refused_before_anything_is_written(tmp_path, monkeypatch, distribute, tf_config):
    shapes = make_image_folder(tmp_path / "shapes", per_class=4, size=32)
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    config = build_run_config(tiny_config(shapes, training={"distribute": distribute, "verbose": 0}))
    with pytest.raises(ConfigError, match=r"training.distribute: .*keras-team/keras#20585"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
