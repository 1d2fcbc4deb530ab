import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from transferkit.serving import config_files
from transferkit.serving.export import ExportError, export_run, forbidden_ops
from transferkit.serving.warmup import read_warmup_requests


def test_export_layout_assets_and_warmup(model_base):
    version_dir = model_base / "shapes" / "1"
    assert (version_dir / "saved_model.pb").exists()
    assert (version_dir / "assets" / "labels.txt").read_text().split() == ["circle", "square", "triangle"]
    requests = read_warmup_requests(version_dir)
    assert 1 <= len(requests) <= 1000
    assert requests[0].model_spec.name == "shapes"
    assert requests[0].inputs["images"].dtype == tf.string.as_datatype_enum
    assert forbidden_ops(version_dir) == []
    assert not [p for p in (model_base / "shapes").iterdir() if p.name.startswith(".")]  # no temp folders left
    report = json.loads((version_dir / "assets.extra" / "transferkit_export.json").read_text())
    assert max(report["max_abs_diff"].values()) < 1e-4


def test_signatures_named_inputs_and_outputs(model_base):
    loaded = tf.saved_model.load(str(model_base / "shapes" / "1"))
    default = loaded.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["images"]
    assert default.structured_input_signature[1]["images"].dtype == tf.string
    assert sorted(default.structured_outputs) == ["class_ids", "labels", "probabilities", "scores"]
    pixels = loaded.signatures["serving_pixels"]
    assert pixels.structured_input_signature[1]["pixels"].shape.as_list() == [None, 32, 32, 3]
    assert default.structured_outputs["probabilities"].dtype == tf.float32


def test_saved_model_cli_lists_signatures(model_base):
    cli = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run([str(cli), "show", "--dir", str(model_base / "shapes" / "1"), "--all"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "signature_def['serving_default']" in out and "signature_def['serving_pixels']" in out
    assert "inputs['images'] tensor_info:" in out and "dtype: DT_STRING" in out
    for name in ("probabilities", "scores", "class_ids", "labels"):
        assert f"outputs['{name}'] tensor_info:" in out


def test_versions_are_never_overwritten_without_force(trained_run, tmp_path):
    first = export_run(trained_run, tmp_path, "m")
    assert first.name == "1"
    assert export_run(trained_run, tmp_path, "m").name == "2"  # next integer
    with pytest.raises(ExportError, match=r"version 1 of 'm' already exists; pass --force"):
        export_run(trained_run, tmp_path, "m", version=1)
    marker = first / "saved_model.pb"
    before = marker.stat().st_mtime_ns
    export_run(trained_run, tmp_path, "m", version=1, force=True)
    assert marker.stat().st_mtime_ns != before
    with pytest.raises(ExportError, match=r"--name: expected letters"):
        export_run(trained_run, tmp_path, "bad/name")


def test_models_config_is_updated_not_overwritten(trained_run, tmp_path):
    export_run(trained_run, tmp_path, "alpha")
    export_run(trained_run, tmp_path, "beta")
    export_run(trained_run, tmp_path, "alpha")
    config = config_files.read_model_config(tmp_path / "models.config")
    entries = {c.name: c.base_path for c in config.model_config_list.config}
    assert entries == {"alpha": str(tmp_path.resolve() / "alpha"), "beta": str(tmp_path.resolve() / "beta")}
    docker = config_files.read_model_config(tmp_path / "models.docker.config")
    assert {c.base_path for c in docker.model_config_list.config} == {"/models/alpha", "/models/beta"}
    for name in ("batching_parameters.txt", "monitoring.config", "docker-compose.yml", "kubernetes.yaml"):
        assert (tmp_path / name).stat().st_size > 0
    assert "tensorflow/serving" in (tmp_path / "docker-compose.yml").read_text()
    assert "8500" in (tmp_path / "kubernetes.yaml").read_text()


def test_failed_check_leaves_nothing_behind(trained_run, tmp_path, monkeypatch):
    from transferkit.serving import export as export_module

    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="differs from the Keras model"):
        export_run(trained_run, tmp_path, "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_keras_and_savedmodel_agree_on_real_pixels(trained_run, model_base, sample_images):
    from transferkit.runner import load_run

    _, task, model, info = load_run(trained_run)
    loaded = tf.saved_model.load(str(model_base / "shapes" / "1"))
    out = loaded.signatures["serving_default"](images=tf.constant(sample_images))
    pixels = tf.stack([task.preprocessor(info).preprocess(b) for b in sample_images])
    np.testing.assert_allclose(out["probabilities"].numpy(), np.asarray(model(pixels)), atol=1e-4)


def test_mixed_precision_run_exports_float32(tmp_path, monkeypatch):
    """A run trained with mixed_float16 (as on a GPU) still exports a float32 SavedModel."""
    import keras

    from transferkit.config import build_run_config
    from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
    from transferkit.runner import load_run, train

    real = tf.config.list_physical_devices
    # Pretend one GPU is present: the runner turns mixed precision on only then.
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind))
    images = make_image_folder(tmp_path / "images", per_class=4, size=32)
    config = build_run_config(tiny_config(images, stages=[{"name": "head", "freeze": {"backbone": True},
                                                           "epochs": 1}], training={
        "verbose": 0, "tensorboard": False, "mixed_precision": True}))
    try:
        run_dir = train(config, tmp_path / "run")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    monkeypatch.setattr(tf.config, "list_physical_devices", real)
    _, _, model, _ = load_run(run_dir)
    assert model.get_layer("normalization").dtype_policy.name == "mixed_float16"
    version_dir = export_run(run_dir, tmp_path / "models", "mp")
    out = tf.saved_model.load(str(version_dir)).signatures["serving_pixels"](
        pixels=tf.zeros([2, 32, 32, 3]))
    assert out["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_a_run_written_before_preprocessors_still_predicts_and_exports_the_same(trained_run, model_base,
                                                                               sample_images, tmp_path):
    """info.json of older versions had loose preprocessing keys and no preprocessor.json."""
    import shutil

    from transferkit.runner import predict_files

    old_run = tmp_path / "old_run"
    shutil.copytree(trained_run, old_run)
    info = json.loads((old_run / "info.json").read_text())
    recorded = info.pop("preprocessor")
    for key in ("resize", "crop_fraction", "interpolation", "max_pixels"):
        info[key] = recorded[key]
    (old_run / "info.json").write_text(json.dumps(info))
    (old_run / "preprocessor.json").unlink()
    assert (Path(trained_run) / "preprocessor.json").exists()

    paths = info["examples"][:3]
    new = [labels for _, labels, _ in predict_files(trained_run, paths)]
    old = [labels for _, labels, _ in predict_files(old_run, paths)]
    assert [[name for name, _ in row] for row in old] == [[name for name, _ in row] for row in new]
    np.testing.assert_allclose([[s for _, s in row] for row in old], [[s for _, s in row] for row in new], atol=1e-6)

    version = export_run(old_run, tmp_path / "models", "old")
    assert json.loads((version / "assets" / "preprocessor.json").read_text()) == recorded
    images = tf.constant(sample_images)
    served_old = tf.saved_model.load(str(version)).signatures["serving_default"](images=images)
    served_new = tf.saved_model.load(str(model_base / "shapes" / "1")).signatures["serving_default"](images=images)
    np.testing.assert_allclose(served_old["probabilities"].numpy(), served_new["probabilities"].numpy(), atol=1e-6)
