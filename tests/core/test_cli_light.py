"""A CLI that answers in a second (issue 35, item 3).

`--help`, `--version`, `tasks`, `config check --no-backbone`, `show`, and every
argument, path or config error (of every command) answer without importing
TensorFlow, Keras, KerasHub or KerasCV. All the commands run in one fresh
interpreter (this test process may have TensorFlow loaded already), and which
heavy modules are loaded is recorded after each; benchmarks/cli_startup.py
times the same commands.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from transferkit.testing import tiny_vision_config

HEAVY = ("tensorflow", "keras", "keras_hub", "keras_cv")

# Runs `main(argv)` for each argv of the JSON list in argv[1]; prints one JSON row per command.
RUNNER = r"""
import contextlib, io, json, sys
from transferkit.cli import main

rows = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:  # --help and --version exit from argparse
            code = exit.code
    rows.append({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                 "heavy": sorted(m for m in %r if m in sys.modules)})
print(json.dumps(rows))
""" % (HEAVY,)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_light")
    good = tiny_vision_config("image_classification", root / "images")
    (root / "good.yaml").write_text(yaml.safe_dump(good))
    bad = {**good, "data": {**good["data"], "bach_size": 2}}
    (root / "unknown_key.yaml").write_text(yaml.safe_dump(bad))
    wrong = {**good, "data": {**good["data"], "batch_size": "many"}}
    (root / "wrong_type.yaml").write_text(yaml.safe_dump(wrong))
    (root / "empty.yaml").write_text("")
    (root / "list.yaml").write_text("- task: image_classification\n- data: {}\n")
    huge = {**good, "data": {**good["data"], "image_size": [10**12, 10**12]}}
    (root / "huge_number.yaml").write_text(yaml.safe_dump(huge))
    (root / "huge_name.yaml").write_text(yaml.safe_dump({**good, "task": "x" * 200_000}))
    (root / "not_a_run").mkdir()
    (root / "run").mkdir()  # what `show` reads of a finished run
    (root / "run" / "info.json").write_text(json.dumps({"task": "image_classification", "backbone": "b",
                                                        "class_names": ["a", "b"], "num_train": 4, "num_val": 2}))
    (root / "run" / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "num_examples": 2,
                                                           "elapsed_seconds": 3.0}))
    (root / "batching.txt").write_text("max_batch_size { value: 8 }\nnot_a_field { value: 1 }\n")
    (root / "models").mkdir()
    (root / "home").mkdir()
    return root


# name -> (argv, expected exit code, text that must be in stdout (code 0) or be the start of stderr (code 2))
CASES = {
    "help": (["--help"], 0, "usage: transferkit"),
    "version": (["--version"], 0, "transferkit 0."),
    "tasks": (["tasks"], 0, "image_classification "),
    "tasks json": (["tasks", "--json"], 0, '"name": "object_detection"'),
    "config check": (["config", "check", "{root}/good.yaml", "--no-backbone"], 0,
                     "# {root}/good.yaml: valid (image_classification)"),
    "config check, unknown key": (["config", "check", "{root}/unknown_key.yaml"], 2,
                                  "transferkit: error: data.bach_size: unknown key; did you mean 'batch_size'?"),
    "config check, wrong type": (["config", "check", "{root}/wrong_type.yaml"], 2,
                                 "transferkit: error: data.batch_size: expected an integer, received 'many'"),
    "config check, missing file": (["config", "check", "{root}/missing.yaml"], 2,
                                   "transferkit: error: {root}/missing.yaml: config file not found"),
    "config check, empty file": (["config", "check", "{root}/empty.yaml"], 2,
                                 "transferkit: error: {root}/empty.yaml: task: expected a task name"),
    "config check, a list": (["config", "check", "{root}/list.yaml"], 2,
                             "transferkit: error: {root}/list.yaml: expected a mapping at the top level, received list"),
    "config check, huge number": (["config", "check", "{root}/huge_number.yaml"], 2,
                                  "transferkit: error: data.image_size: expected two integers in [8, 4096]"),
    "config check, huge name": (["config", "check", "{root}/huge_name.yaml"], 2,
                                "transferkit: error: unknown task 'xxxx"),
    "config check, --set infinity": (["config", "check", "{root}/good.yaml", "--set", "data.batch_size=1e999"], 2,
                                     "transferkit: error: data.batch_size: expected an integer"),
    "show": (["show", "{root}/run"], 0, "done:"),
    "show, not a run": (["show", "{root}/not_a_run"], 2, "transferkit: error: {root}/not_a_run: no info.json"),
    "train, missing file": (["train", "{root}/missing.yaml", "-o", "{root}/out"], 2,
                            "transferkit: error: {root}/missing.yaml: config file not found"),
    "train, unknown key": (["train", "{root}/unknown_key.yaml", "-o", "{root}/out"], 2,
                           "transferkit: error: data.bach_size: unknown key"),
    "compare, bad fractions": (["compare", "{root}/good.yaml", "--fractions", "half"], 2,
                               "transferkit: error: --fractions: expected comma-separated numbers"),
    "lr-find, missing file": (["lr-find", "{root}/missing.yaml"], 2,
                              "transferkit: error: {root}/missing.yaml: config file not found"),
    "evaluate, not a run": (["evaluate", "{root}/not_a_run"], 2,
                            "transferkit: error: {root}/not_a_run: no model.keras"),
    "predict, not a run": (["predict", "{root}/not_a_run", "{root}/good.yaml"], 2,
                           "transferkit: error: {root}/not_a_run: no model.keras"),
    "predict, server without --model": (["predict", "--server", "127.0.0.1:1", "{root}/good.yaml"], 2,
                                        "transferkit: error: predict --server/--rest: --model NAME is required"),
    "predict, server, missing input": (["predict", "--server", "127.0.0.1:1", "--model", "m", "{root}/none.png"], 2,
                                       "transferkit: error: {root}/none.png: cannot read file"),
    "export, bad name": (["export", "{root}/not_a_run", "--model-base", "{root}/models", "--name", "a b"], 2,
                         "transferkit: error: --name: expected letters, digits"),
    "export, not a run": (["export", "{root}/not_a_run", "--model-base", "{root}/models", "--name", "m"], 2,
                          "transferkit: error: {root}/not_a_run: no model.keras"),
    "export tflite, not a run": (["export", "{root}/not_a_run", "--format", "tflite", "-o", "{root}/m.tflite"], 2,
                                 "transferkit: error: {root}/not_a_run: no model.keras"),
    "data pack, missing source": (["data", "pack", "{root}/nowhere", "{root}/pack"], 2,
                                  "transferkit: error: {root}/nowhere: not found"),
    "data pack, bad --val-split": (["data", "pack", "{root}/not_a_run", "{root}/pack", "--val-split", "2"], 2,
                                   "transferkit: error: --val-split: expected a number in [0, 1)"),
    "data pack, no classes": (["data", "pack", "{root}/not_a_run", "{root}/pack"], 2,
                              "transferkit: error: {root}/not_a_run: no class sub-folders"),
    "serve, bad port": (["serve", "--model-base", "{root}/models", "--port", "70000"], 2,
                        "transferkit: error: serve --port: expected a port in [0, 65535]"),
    "serve, missing parameters file": (["serve", "--model-base", "{root}/models", "--batching-parameters-file",
                                        "{root}/none.txt"], 2,
                                       "transferkit: error: serve --batching-parameters-file {root}/none.txt: "
                                       "file not found"),
    "serve, bad parameters file": (["serve", "--model-base", "{root}/models", "--batching-parameters-file",
                                    "{root}/batching.txt"], 2,
                                   "transferkit: error: serve: {root}/batching.txt: not a TF Serving "
                                   "BatchingParameters text proto"),
    "serve, no models": (["serve", "--model-base", "{root}/models", "--port", "0", "--rest-port", "-1"], 2,
                         "transferkit: error: {root}/models: no models found"),
    "serve, missing model base": (["serve", "--model-base", "{root}/nowhere", "--port", "0"], 2,
                                  "transferkit: error: {root}/nowhere: model base not found"),
}


@pytest.fixture(scope="module")
def answers(files):
    argvs = [[part.format(root=files) for part in argv] for argv, _, _ in CASES.values()]
    env = {**os.environ, "TRANSFERKIT_HOME": str(files / "home")}
    result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(argvs)], capture_output=True, text=True,
                            env=env, cwd=files, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(zip(CASES, json.loads(result.stdout)))


@pytest.mark.parametrize("name", list(CASES))
def test_answers_without_tensorflow(name, answers, files):
    argv, code, expected = CASES[name]
    expected = expected.format(root=files)
    answer = answers[name]
    assert answer["heavy"] == [], f"{name}: imported {answer['heavy']}"
    assert answer["code"] == code, answer
    if code == 0:
        assert expected in answer["out"], answer["out"][:2000]
    else:
        assert answer["err"].startswith(expected), answer["err"][:2000]
        assert answer["err"].count("\n") == 1, "one line, no traceback"
        assert len(answer["err"]) < 300_000  # the 200 kB task name is echoed once, not more


def test_console_error_is_one_line_without_start_up_noise(files):
    """The installed entry point, end to end: a config error is exactly one line on stderr, quickly."""
    result = subprocess.run([sys.executable, "-m", "transferkit", "config", "check", str(files / "unknown_key.yaml"),
                             "--set", "training.seed=1"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TRANSFERKIT_HOME": str(files / "home")})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no absl, cuInit, oneDNN or cpu_feature_guard lines
    assert lines[0].startswith("transferkit: error: data.bach_size: unknown key; did you mean 'batch_size'?")
    assert result.stdout == ""


def test_quiet_import_hook_is_scoped_to_the_command():
    """`quiet_tensorflow_import` adds its finder only while a command runs, and never imports TensorFlow."""
    code = ("import sys; from transferkit.logs import quiet_tensorflow_import, _QuietTensorFlowFinder as F\n"
            "with quiet_tensorflow_import():\n"
            "    inside = any(isinstance(f, F) for f in sys.meta_path)\n"
            "print(inside, any(isinstance(f, F) for f in sys.meta_path), 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "False", "False"], result.stderr
