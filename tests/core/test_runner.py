import dataclasses
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from transferkit.config import build_run_config
from transferkit.errors import TransferkitError
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import load_run, train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("shapes"), per_class=10, size=32)


def _frozen_only(shapes, cache):
    return build_run_config(tiny_config(
        shapes, head={"dropout": 0.0},
        stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 3, "learning_rate": 1e-2}],
        training={"verbose": 0, "tensorboard": False, "feature_cache": cache}))


def test_feature_cache_trains_the_same_head_as_the_full_model(shapes, tmp_path):
    fast = train(_frozen_only(shapes, "memory"), tmp_path / "fast")
    slow = train(_frozen_only(shapes, "off"), tmp_path / "slow")
    _, task, fast_model, _ = load_run(fast)
    _, _, slow_model, _ = load_run(slow)
    images = np.concatenate([x for x, _ in task.datasets().val])
    fast_pred = np.asarray(fast_model(images, training=False))
    slow_pred = np.asarray(slow_model(images, training=False))
    # The head really trained (predictions moved away from the initial ones)...
    assert json.loads((fast / "history.json").read_text())[-1]["loss"] < json.loads(
        (fast / "history.json").read_text())[0]["loss"]
    # ...and both paths agree.
    np.testing.assert_allclose(fast_pred, slow_pred, atol=1e-4)
    np.testing.assert_array_equal(fast_pred.argmax(1), slow_pred.argmax(1))


def test_augmentation_disables_the_feature_cache(shapes, tmp_path, capsys):
    config = build_run_config(tiny_config(
        shapes, augment={"flip": "horizontal"},
        stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 1}],
        training={"verbose": 1, "tensorboard": False}))
    train(config, tmp_path / "run")
    assert "augmentation is on" in capsys.readouterr().out


KILLER = textwrap.dedent('''
    import json, os, signal, sys
    import keras
    from transferkit.config import build_run_config
    from transferkit.runner import train

    config = build_run_config(json.loads(sys.argv[1]))
    kill_after = int(sys.argv[3])

    class Killer(keras.callbacks.Callback):
        seen = 0
        def on_epoch_end(self, epoch, logs=None):
            Killer.seen += 1
            if Killer.seen == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    train(config, sys.argv[2], extra_callbacks=[Killer()])
''')


def test_killed_run_resumes_at_same_stage_epoch_and_optimizer_state(shapes, tmp_path):
    data = tiny_config(shapes, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 2, "learning_rate": 1e-2},
        {"name": "finetune", "freeze": {"top_blocks": 2}, "epochs": 3, "learning_rate": 1e-3},
    ])
    run_dir = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    result = subprocess.run([sys.executable, str(script), json.dumps(data), str(run_dir), "3"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    folder = run_dir / "checkpoints" / pointer["checkpoint"]
    state = json.loads((folder / "state.json").read_text())
    assert (state["stage_index"], state["stage_epoch"], state["global_epoch"]) == (1, 1, 3)
    assert not (run_dir / "model.keras").exists()
    saved_optimizer = np.load(folder / "optimizer.npz")
    saved_weights = folder / "model.weights.h5"

    class Probe(keras.callbacks.Callback):
        observed = []

        def on_train_begin(self, logs=None):
            values = [np.asarray(v) for v in self.model.optimizer.variables]
            trainable = sorted(v.path for v in self.model.trainable_variables)
            Probe.observed.append((values, trainable, [np.asarray(w) for w in self.model.weights]))

    config = build_run_config(data)
    train(config, run_dir, extra_callbacks=[Probe()])
    values, trainable, _ = Probe.observed[0]  # the first stage run after resuming: finetune
    assert any("block3a" in path for path in trainable)  # the stage's freeze plan is back
    assert not any("stem" in path for path in trainable)
    assert len(values) == len(saved_optimizer.files)
    for i, value in enumerate(values):
        np.testing.assert_array_equal(value, saved_optimizer[f"arr_{i}"])
    assert int(values[0]) > 0  # iterations restored, not restarted

    history = json.loads((run_dir / "history.json").read_text())
    assert [(r["stage"], r["epoch"]) for r in history] == [
        ("head", 1), ("head", 2), ("finetune", 1), ("finetune", 2), ("finetune", 3)]
    assert [r["global_epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert (run_dir / "model.keras").exists()
    del saved_weights

    with pytest.raises(TransferkitError, match="holds a finished run"):
        train(config, run_dir)


def test_resume_refuses_a_different_config(shapes, tmp_path):
    data = tiny_config(shapes, stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 2}])
    run_dir = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    subprocess.run([sys.executable, str(script), json.dumps(data), str(run_dir), "1"], capture_output=True,
                   timeout=600)
    changed = build_run_config({**data, "data": {**data["data"], "batch_size": 4}})
    with pytest.raises(TransferkitError,
                       match=r"different config \(data.batch_size: 8 saved, 4 now\); pass --no-resume"):
        train(changed, run_dir)
    train(changed, run_dir, resume=False)  # starting over is allowed
    assert len(json.loads((run_dir / "history.json").read_text())) == 2


def test_disk_feature_cache_is_written_once_and_matches_memory(shapes, tmp_path):
    disk = train(_frozen_only(shapes, "disk"), tmp_path / "disk")
    memory = train(_frozen_only(shapes, "memory"), tmp_path / "memory")
    # One array per leaf (features, targets), and the structure written last.
    assert sorted(p.name for p in (disk / "feature_cache" / "features").iterdir()) == [
        "train.0.npy", "train.1.npy", "train.structure.json", "val.0.npy", "val.1.npy", "val.structure.json"]
    disk_history = json.loads((disk / "history.json").read_text())
    memory_history = json.loads((memory / "history.json").read_text())
    for a, b in zip(disk_history, memory_history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)


def test_features_beyond_the_memory_budget_spill_to_disk_and_train_alike(shapes, tmp_path, capsys):
    memory = train(_frozen_only(shapes, "memory"), tmp_path / "memory")
    config = _frozen_only(shapes, "auto")
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, feature_cache_memory_mb=0,
                                                                      verbose=1))
    spilled = train(config, tmp_path / "spilled")
    assert "train and val beyond 0 MB read from" in capsys.readouterr().out
    assert not (spilled / "feature_cache").exists()  # spilled features are not kept after the run
    for a, b in zip(json.loads((memory / "history.json").read_text()),
                    json.loads((spilled / "history.json").read_text())):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-6)


def test_evaluate_and_predict_commands(shapes, tmp_path, capsys):
    from transferkit.cli import main

    run_dir = train(_frozen_only(shapes, "memory"), tmp_path / "run")
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert main(["evaluate", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert f"accuracy {summary['accuracy']:.4f}" in printed and "on 6 validation examples" in printed
    assert printed.splitlines()[-1].startswith("done: accuracy ") and str(run_dir / "model.keras") in printed
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["num_examples"] == 6
    assert (run_dir / "metrics.json").exists() and (run_dir / "report" / "confusion_matrix.png").exists()
    # Issue 24 fault 14: re-evaluating keeps what training recorded.
    again = json.loads((run_dir / "metrics.json").read_text())
    for key in ("best_epoch", "elapsed_seconds", "time_limit_reached"):
        assert again[key] == trained[key]
    # --data: evaluate on another folder (here: the training images, 30 of them), into its own folder.
    assert main(["evaluate", str(run_dir), "--data", str(shapes)]) == 0
    printed = capsys.readouterr().out
    assert "on 30 evaluation examples" in printed
    other = Path(printed.splitlines()[-1].split(", metrics ")[1]).parent
    assert other.parent == run_dir / "evaluations" and json.loads((other / "metrics.json").read_text())[
        "num_examples"] == 30 and (other / "report" / "confusion_matrix.png").exists()
    assert json.loads((run_dir / "metrics.json").read_text()) == again  # the run's own record is untouched
    image = sorted((shapes / "circle").iterdir())[0]
    assert main(["predict", str(run_dir), str(image), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 3
    labels = [line.split()[1] for line in lines[1:]]
    assert set(labels) <= {"circle", "square", "triangle"}
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)
    assert main(["predict", str(run_dir), str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg: input file not found" in capsys.readouterr().err


def test_train_ends_with_a_summary_and_show_prints_it_again(shapes, tmp_path, capsys):
    """Counts per split and class, problems by kind, stage times, the scores, the files; one closing line."""
    import shutil

    import yaml

    from transferkit.cli import main

    data = tmp_path / "images"
    shutil.copytree(shapes, data)
    (data / "circle" / "notes.jpg").write_text("not an image")
    (data / "square" / "empty.png").write_bytes(b"")
    config = tiny_config(data, stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 1}])
    config["data"]["val_split"] = 0.3
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--output", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    summary = printed[printed.index("image_classification on "):]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    info = json.loads((tmp_path / "run" / "info.json").read_text())
    lines = summary.splitlines()
    assert lines[1] == f"data      train {info['num_train']} · val {info['num_val']} · 3 classes"
    circle = next(line for line in lines if line.strip().startswith("circle "))
    assert circle.split()[1] == str(info["train_class_counts"][0])
    assert circle.split()[2] == str(metrics["per_class"]["circle"]["support"])
    assert "2 inputs skipped or repaired" in summary and "unreadable image ×2" in summary
    assert "stages    head 1 epoch " in summary and f"accuracy {metrics['accuracy']:.4f}" in summary
    assert "report    " in summary and "confusion_matrix.png" in summary
    assert lines[-1].startswith(f"done: accuracy {metrics['accuracy']:.4f} in ")
    assert main(["show", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.strip() == summary.strip()
    assert main(["show", str(tmp_path)]) == 2
    assert "no info.json" in capsys.readouterr().err


def test_stage_without_augmentation_uses_the_cache_while_later_stages_augment(shapes, tmp_path, capsys):
    config = build_run_config(tiny_config(
        shapes, augment={"flip": "horizontal"},
        stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 1, "augment": False},
                {"name": "finetune", "freeze": {"top_blocks": 1}, "epochs": 1, "augment": False},
                {"name": "augmented", "freeze": {"top_blocks": 1}, "epochs": 1}],
        training={"verbose": 1, "tensorboard": False}))
    train(config, tmp_path / "run")
    out = capsys.readouterr().out
    assert "'head': 1 epoch(s), lr 0.001; backbone frozen: training the head on cached features" in out
    assert "feature cache: 24 train features" in out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["stage"] for r in history] == ["head", "finetune", "augmented"]


def test_a_run_that_fails_validation_leaves_old_outputs_untouched(shapes, tmp_path):
    from transferkit.errors import DataError

    run_dir = train(_frozen_only(shapes, "memory"), tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    bad = build_run_config(tiny_config(tmp_path / "nope", stages=[{"name": "head", "freeze": {"backbone": True},
                                                                   "epochs": 1}]))
    with pytest.raises(DataError):
        train(bad, run_dir, resume=False)
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    assert after == before  # labels.txt, report/, logs/ ... all still there, none rewritten


def test_fault_24_17_resume_refuses_data_whose_classes_changed(tmp_path):
    import shutil

    images = make_image_folder(tmp_path / "images", per_class=4, size=32)
    data = tiny_config(images, stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 2}])
    run_dir = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    subprocess.run([sys.executable, str(script), json.dumps(data), str(run_dir), "1"], capture_output=True,
                   timeout=600)
    before = {name: (run_dir / name).read_bytes() for name in ("info.json", "labels.txt", "config.yaml")}
    shutil.copytree(images / "circle", images / "star")  # a fourth class appears
    with pytest.raises(TransferkitError, match=r"the data changed since the checkpoint \(class_names was"):
        train(build_run_config(data), run_dir)
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_a_test_split_is_evaluated_once_at_the_end_and_reported_apart(shapes, tmp_path, capsys):
    from transferkit.cli import main
    from transferkit.summary import run_summary

    test_images = make_image_folder(tmp_path / "test_images", per_class=3, size=32)
    config = tiny_config(shapes, stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 1}])
    config["data"]["test"] = str(test_images)
    run_dir = train(build_run_config(config), tmp_path / "run")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_examples"] == 6  # validation: the held-out share of the training folder
    test = metrics["test"]
    assert test["num_examples"] == 9 and 0.0 <= test["accuracy"] <= 1.0 and test["data"] == str(test_images)
    assert (run_dir / "test" / "report" / "confusion_matrix.png").exists()
    summary = run_summary(run_dir)
    assert f"test      accuracy {test['accuracy']:.4f}" in summary and "on 9 test examples" in summary
    assert main(["evaluate", str(run_dir)]) == 0  # re-evaluating the validation split keeps the test record
    capsys.readouterr()
    assert json.loads((run_dir / "metrics.json").read_text())["test"] == test
