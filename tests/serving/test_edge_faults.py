"""Issue 31, edge files: an export never replaces what transferkit did not write, and a file is checked
against its signature (sha256, labels, task, preprocessor) before any interpreter reads it."""

import json
import shutil

import pytest

from transferkit.cli import main
from transferkit.serving.edge_export import EdgeExportError, EdgeExportOptions, export_edge


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    output = tmp_path_factory.mktemp("edge") / "model.tflite"
    export_edge(trained_run, output, EdgeExportOptions())
    return output


def _copy_export(exported, folder, name="copy"):
    target = folder / f"{name}.tflite"
    shutil.copyfile(exported, target)
    shutil.copyfile(exported.with_name("model.signature.json"), folder / f"{name}.signature.json")
    return target


def test_fault_31_02_export_never_replaces_the_runs_model(trained_run, capsys):
    model = trained_run / "model.keras"
    before = model.read_bytes()
    for force in ([], ["--force"]):
        assert main(["export", str(trained_run), "--format", "tflite", "--output", str(model), *force]) == 2
        assert "ending in .tflite" in capsys.readouterr().err
    assert model.read_bytes() == before


def test_fault_31_02_export_refuses_a_users_file_even_with_force(trained_run, tmp_path, capsys):
    mine = tmp_path / "notes.tflite"
    mine.write_text("mine")
    assert main(["export", str(trained_run), "--format", "tflite", "--output", str(mine)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--format", "tflite", "--output", str(mine), "--force"]) == 2
    assert "not a transferkit export" in capsys.readouterr().err
    assert mine.read_text() == "mine"
    signature = tmp_path / "other.signature.json"  # a user's file where the signature would go
    signature.write_text("{}")
    assert main(["export", str(trained_run), "--format", "tflite", "--output", str(tmp_path / "other.tflite"),
                 "--force"]) == 2
    assert signature.read_text() == "{}" and not (tmp_path / "other.tflite").exists()


def test_fault_31_02_force_replaces_an_earlier_export(trained_run, exported, tmp_path):
    target = _copy_export(exported, tmp_path)
    with pytest.raises(EdgeExportError, match="pass --force"):
        export_edge(trained_run, target, EdgeExportOptions())
    export_edge(trained_run, target, EdgeExportOptions(), force=True)
    signature = json.loads(target.with_name("copy.signature.json").read_text())
    assert signature["file"] == "copy.tflite" and signature["task"] == "image_classification"


def test_fault_31_04_a_truncated_tflite_is_an_error_not_a_crash(exported, tmp_path, capsys):
    target = _copy_export(exported, tmp_path)
    target.write_bytes(exported.read_bytes()[:30000])
    image = json.loads(exported.with_name("model.signature.json").read_text())  # any input will do
    assert image["sha256"]
    assert main(["predict", str(target), str(target)]) == 2
    error = capsys.readouterr().err.strip()
    assert "does not match copy.signature.json" in error and len(error.splitlines()) == 1


@pytest.mark.parametrize("signature, message", [
    ("[1, 2]", "expected a JSON object"),
    ('{"labels": ', "not a readable signature file"),
    (None, "missing"),
    ("labels", "not a readable signature file"),
])
def test_fault_31_13_bad_signature_files_are_one_line_errors(exported, tmp_path, capsys, signature, message):
    target = _copy_export(exported, tmp_path)
    if signature is None:
        target.with_name("copy.signature.json").unlink()
    else:
        target.with_name("copy.signature.json").write_text(signature)
    assert main(["predict", str(target), str(target)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


@pytest.mark.parametrize("edit, message", [
    ({"labels": []}, "labels: expected a non-empty list"),
    ({"labels": 5}, "labels: expected a non-empty list"),
    ({"sha256": None}, "no checksum"),
    ({"preprocessor": {"class_name": "Nope"}}, "no installed task provides"),
])
def test_fault_31_13_signature_fields_are_checked(exported, tmp_path, capsys, edit, message):
    target = _copy_export(exported, tmp_path)
    path = target.with_name("copy.signature.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    assert main(["predict", str(target), str(target)]) == 2
    assert message in capsys.readouterr().err


def test_fault_31_13_a_text_file_named_tflite_is_refused(tmp_path, capsys):
    fake = tmp_path / "m.tflite"
    fake.write_text("hello")
    assert main(["predict", str(fake), str(fake)]) == 2
    assert "not a LiteRT model (no TFL3 identifier)" in capsys.readouterr().err
    fake.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)  # looks like one, but nothing vouches for it
    assert main(["predict", str(fake), str(fake)]) == 2
    assert "m.signature.json: missing" in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    ({"task": "audio_classification"}, "exported from a audio_classification run"),
    ({"labels": ["x", "y", "z"]}, "are not this run's"),
])
def test_fault_31_08_evaluate_refuses_another_runs_file(trained_run, exported, tmp_path, capsys, edit, message):
    target = _copy_export(exported, tmp_path)
    path = target.with_name("copy.signature.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    assert main(["evaluate", str(trained_run), "--model", str(target)]) == 2
    assert message in capsys.readouterr().err


def test_fault_31_20_an_image_file_given_a_text_says_what_it_takes(exported, capsys):
    assert main(["predict", str(exported), "--text", "hello"]) == 2
    assert "takes files (images or clips), not texts" in capsys.readouterr().err


def test_fault_31_18_an_export_that_runs_out_of_space_is_a_one_line_error(trained_run, tmp_path):
    import subprocess
    import sys

    output = tmp_path / "m.tflite"
    command = (f"ulimit -f 50; exec {sys.executable} -m transferkit export {trained_run} --format tflite "
               f"--output {output}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "could not be written" in last and str(output) in last and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary left


def test_fault_31_an_unwritable_output_names_the_users_path(trained_run, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"  # a file where the output's folder would be (root ignores chmod)
    blocker.write_text("mine")
    target = blocker / "m.tflite"
    assert main(["export", str(trained_run), "--format", "tflite", "--output", str(target)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(target) in error and "cannot be written" in error and "/.m.tflite" not in error
    assert blocker.read_text() == "mine"


def test_fault_31_a_damaged_savedmodel_export_fails_to_load_naming_its_file(trained_run, tmp_path):
    from transferkit.serving.export import export_run
    from transferkit.serving.model_manager import LoadedVersion

    version = export_run(trained_run, tmp_path / "models", "m", version=1, warmup_records=0)
    record = json.loads((version / "assets.extra" / "transferkit_export.json").read_text())
    assert "saved_model.pb" in record["files"] and record["task"] == "image_classification"
    variables = next((version / "variables").glob("variables.data-*"))
    raw = bytearray(variables.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    variables.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"variables\.data-.*does not match the sha256 recorded at export"):
        LoadedVersion("m", 1, version, None)


def test_fault_31_export_force_never_replaces_a_folder_that_is_not_a_savedmodel(trained_run, tmp_path, capsys):
    mine = tmp_path / "models" / "m" / "1"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    assert main(["export", str(trained_run), "--model-base", str(tmp_path / "models"), "--name", "m",
                 "--version", "1", "--force"]) == 2
    assert "not a SavedModel" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "mine"


def test_an_onnx_file_with_inputs_the_edge_model_does_not_have_is_refused(tmp_path):
    """The converter turning a constant into an input is caught by name, for any task's inputs."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from transferkit.serving.edge_export import EdgeExportError, _OnnxRunner

    graph = helper.make_graph(
        [helper.make_node("Add", ["pixels", "stray_constant"], ["probabilities"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in ("pixels", "stray_constant")],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])])
    path = tmp_path / "two_inputs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(EdgeExportError, match=r"left 2 graph inputs \(pixels, stray_constant\); expected pixels"):
        _OnnxRunner(path, input_names=["pixels"])
    runner = _OnnxRunner(path, input_names=["stray_constant", "pixels"])  # a task with two inputs of these names
    assert sorted(runner.feeds) == ["pixels", "stray_constant"]
