"""Fault injection, round 3 (issue 31): each test is named after the fault it guards and fails without its fix."""

import json
from pathlib import Path

import pytest

from transferkit.cli import main
from transferkit.config import build_run_config
from transferkit.errors import TransferkitError
from transferkit.ownership import RUN_MARKER, check_output_folder
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import train


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_epoch(images) -> dict:
    return tiny_config(images, stages=[{"name": "head", "freeze": {"backbone": True}, "epochs": 1}])


# -- 1: `train --output` never deletes what transferkit did not write ------------------------------------------


def test_fault_31_01_train_refuses_a_users_folder_and_changes_nothing(tmp_path, capsys):
    import yaml

    data = tmp_path / "DATA"
    make_image_folder(data / "train", per_class=3, size=16)
    make_image_folder(data / "test", per_class=2, size=16)
    (data / "logs").mkdir()
    (data / "logs" / "notes.txt").write_text("mine")
    (data / "report").mkdir()
    (data / "report" / "draft.md").write_text("# draft")
    (data / "config.yaml").write_text(yaml.safe_dump(_one_epoch("train")))
    before = _snapshot(data)
    assert main(["train", str(data / "config.yaml"), "--output", str(data)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(data) in error and "did not write" in error
    assert _snapshot(data) == before


def test_fault_31_01_a_stray_artifacts_list_deletes_nothing(tmp_path):
    folder = tmp_path / "DIR"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "a.jpg").write_bytes(b"jpeg")
    (folder / "thesis.tex").write_text("\\section{}")
    (folder / "artifacts.json").write_text(json.dumps(["photos", "thesis.tex"]))
    before = _snapshot(folder)
    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    with pytest.raises(TransferkitError, match="did not write"):
        train(build_run_config(_one_epoch(images)), folder)
    assert _snapshot(folder) == before


@pytest.mark.parametrize("marker", ["[1, 2]", '{"kind": "pack"}', "not json", ""])
def test_fault_31_01_a_damaged_or_foreign_marker_is_not_ours(tmp_path, marker):
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / RUN_MARKER).write_text(marker)
    with pytest.raises(TransferkitError, match="did not write"):
        check_output_folder(tmp_path)


def test_fault_31_01_a_fresh_start_in_a_run_removes_only_what_the_run_wrote(tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    config = build_run_config(_one_epoch(images))
    run = train(config, tmp_path / "run")
    marker = json.loads((run / RUN_MARKER).read_text())
    assert {"model.keras", "checkpoints", "labels.txt", "config.yaml"} <= set(marker["written"])
    (run / "my_notes.txt").write_text("mine")
    (run / "analysis").mkdir()
    (run / "analysis" / "plot.png").write_bytes(b"png")
    (run / "artifacts.json").write_text(json.dumps(["my_notes.txt", "analysis"]))  # edited by hand
    stale = run / "report" / "stale.png"
    stale.write_bytes(b"old")
    train(config, run, resume=False)
    assert (run / "my_notes.txt").read_text() == "mine" and (run / "analysis" / "plot.png").is_file()
    assert not stale.exists() and (run / "model.keras").is_file()
    with pytest.raises(TransferkitError, match="finished run"):
        train(config, run)  # the folder is a run: resuming is still judged as before


def test_fault_31_01_a_run_from_before_the_marker_is_still_a_run(tmp_path):
    legacy = tmp_path / "old"
    (legacy / "checkpoints").mkdir(parents=True)
    (legacy / "config.yaml").write_text("task: image_classification\n")
    (legacy / "info.json").write_text(json.dumps({"task": "image_classification"}))
    assert check_output_folder(legacy) == legacy
    (legacy / "info.json").write_text("[]")  # not a run's info: the folder is not taken
    with pytest.raises(TransferkitError):
        check_output_folder(legacy)


def test_fault_31_01_an_output_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "thesis.tex"
    target.write_text("mine")
    with pytest.raises(TransferkitError, match="is a file"):
        check_output_folder(target)
    assert target.read_text() == "mine"


def test_fault_31_01_demo_refuses_a_users_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "survey.csv").write_text("a,b\n")
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp_path / "data" / "survey.csv").read_text() == "a,b\n"


# -- 7 and 17: batching parameters have upper bounds, in files and on the command line -------------------------


@pytest.mark.parametrize("text, field", [
    ("max_batch_size { value: 1000000000 }", "max_batch_size"),
    ("max_batch_size { value: 9223372036854775807 }", "max_batch_size"),
    ("num_batch_threads { value: 10000 }", "num_batch_threads"),
    ("batch_timeout_micros { value: 9223372036854775807 }", "batch_timeout_micros"),
    ("max_batch_size { value: 8 }\n" + "".join(f"allowed_batch_sizes: {i}\n" for i in range(1, 100)) ,
     "allowed_batch_sizes"),
])
def test_fault_31_07_batching_parameter_files_out_of_range_are_one_line_errors(tmp_path, text, field, capsys):
    (tmp_path / "params.txt").write_text(text)
    assert main(["serve", "--model-base", str(tmp_path), "--batching-parameters-file",
                 str(tmp_path / "params.txt")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and field in error and "params.txt" in error


@pytest.mark.parametrize("option", [["--max-batch-size", "1000000000"], ["--num-batch-threads", "10000"],
                                    ["--batch-timeout-micros", "99999999999999999999999"]])
def test_fault_31_07_batching_flags_out_of_range_are_one_line_errors(tmp_path, option, capsys):
    assert main(["serve", "--model-base", str(tmp_path), "--batching", *option]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and option[0] in error and "in [" in error


def test_fault_31_07_a_huge_parameters_file_is_refused_unread(tmp_path, capsys):
    big = tmp_path / "params.txt"
    big.write_text("max_batch_size { value: 8 }\n" * 10_000)
    assert main(["serve", "--model-base", str(tmp_path), "--batching-parameters-file", str(big)]) == 2
    assert "at most" in capsys.readouterr().err
