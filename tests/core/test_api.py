"""The Python API: `tk.train` from a mapping returns a `Run`; `tk.load` reads it back; predict, evaluate,
export and refusals that name what was received."""

import sys

import pytest

import transferkit as tk
from transferkit.errors import ConfigError, TransferkitError
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    images = make_image_folder(root / "shapes", per_class=6, size=32)
    return tk.train(tiny_config(images, data={"val_split": 0.34}), output=root / "run")


def test_train_returns_a_run_whose_files_and_figures_read_back(run):
    again = tk.load(run.run_dir)
    assert isinstance(run, tk.Run) and again.metrics == run.metrics and 0.0 <= run.metrics["accuracy"] <= 1.0
    assert len(run.history) == sum(stage.epochs for stage in run.config.stages)
    assert run.info["class_names"] == sorted(p.name for p in (run.run_dir.parent / "shapes").iterdir())
    assert "done: accuracy" in run.summary() and any(p.suffix == ".png" for p in run.report_files)


def test_predict_evaluate_and_export(run, tmp_path):
    image = sorted((run.run_dir.parent / "shapes" / "circle").iterdir())[0]
    (path, prediction), = run.predict(image)
    assert path == str(image) and prediction is not None
    assert set(run.evaluate()) >= {"accuracy"}
    exported = run.export(model_base=tmp_path / "models", name="shapes", version=1)
    assert (exported / "saved_model.pb").is_file()
    with tk.serve(tmp_path / "models", rest_port=None) as server, tk.Client(server.grpc_address) as client:
        (served,) = client.predict_records("shapes", [image.read_bytes()])
    assert served is not None
    with pytest.raises(TransferkitError, match="model_base= and name="):
        run.export()
    with pytest.raises(TransferkitError, match="Received: 'pt'"):
        run.export(format="pt", output=tmp_path / "m.pt")
    with pytest.raises(TransferkitError, match="nowhere.jpg: input file not found"):
        run.predict([tmp_path / "nowhere.jpg"])
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(image).convert("RGB"))
    (name, from_array), (_, from_file) = run.predict([pixels, image])
    assert name == "array[0]" and str(from_array) == str(from_file)  # the same image, as an array or a file
    with pytest.raises(TransferkitError, match=r"array\[0\] has shape \(2, 3, 5\)"):
        run.predict(np.zeros((2, 3, 5)))
    with pytest.raises(TransferkitError, match="Received: sample_rate=5"):
        run.predict(np.zeros(100), sample_rate=5)


def test_refusals_name_what_was_received(tmp_path):
    with pytest.raises(TransferkitError, match="expected a run folder"):
        tk.load(tmp_path)
    with pytest.raises(ConfigError, match="Received: int"):
        tk.train(42)
    with pytest.raises(TransferkitError, match="Received: stage='2'"):
        tk.lr_find({"task": "image_classification"}, stage="2")
    with pytest.raises(TransferkitError, match="unknown options \\['colour'\\]"):
        tk.compare({"task": "image_classification"}, colour="blue")


def test_the_package_and_its_api_names_import_without_tensorflow():
    import subprocess

    code = ("import sys, transferkit as tk; tk.Run; tk.presets; tk.serve; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_lr_find_suggests_a_rate(run, tmp_path):
    result = tk.lr_find(run.run_dir / "config.yaml", stage=1, output=tmp_path / "lr", steps=10)
    assert "suggested_learning_rate" in result and (tmp_path / "lr" / "lr_find.png").is_file()


def test_compare_and_lr_find_stay_functions_after_their_modules_are_imported():
    import importlib

    importlib.import_module("transferkit.compare")
    importlib.import_module("transferkit.lr_find")
    assert callable(tk.compare) and callable(tk.lr_find) and tk.compare.__module__ == "transferkit.api"


def test_typed_task_configs_validate_and_name_what_is_wrong(tmp_path):
    from transferkit.config import StageConfig
    from transferkit.plugins.image_classification.testing import tiny_config

    plain = tiny_config(tmp_path)
    config = tk.ImageClassificationConfig(data=plain["data"], backbone=plain["backbone"],
                                          stages=[StageConfig(name="only", epochs=2)])
    assert config.task == "image_classification" and config.stages[0].epochs == 2
    again = tk.ImageClassificationConfig(data=config.task_config.data, backbone=plain["backbone"])
    assert again.task_config.data == config.task_config.data  # the task's own typed section is taken as is
    with pytest.raises(ConfigError, match="batch_size"):
        tk.ImageClassificationConfig(data={**plain["data"], "batch_size": 0}, backbone=plain["backbone"])
    with pytest.raises(ConfigError, match="do not pass task="):
        tk.ObjectDetectionConfig(task="image_classification")
