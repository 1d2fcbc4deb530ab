"""Every command, a family of bad inputs: exit 2, one line on stderr, no traceback, nothing changed on disk."""

import gzip
import hashlib
from pathlib import Path

import pytest
import yaml

from transferkit.cli import main
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    images = make_image_folder(root / "images", per_class=3, size=16)
    good = tiny_config(images, image_size=16)
    (root / "good.yaml").write_text(yaml.safe_dump(good))
    (root / "unknown_key.yaml").write_text(yaml.safe_dump({**good, "trainig": {}}))
    (root / "inf_lr.yaml").write_text(yaml.safe_dump(good).replace("learning_rate: 0.01", "learning_rate: .inf"))
    (root / "alias.yaml").write_text("a: &a [1, 2]\nb: [*a, *a]\n" + yaml.safe_dump(good))
    (root / "not_yaml.yaml").write_text("task: [unclosed\n")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01")
    run = root / "broken_run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not a model")
    (run / "config.yaml").write_text(yaml.safe_dump(good))
    (run / "info.json").write_text("{not json")
    (root / "fake.tflite").write_text("hello")
    (root / "notes.tflite").write_text("mine")
    row = f"{root / 'images' / 'circle' / 'circle_000.png'},circle\n".encode()
    with gzip.open(root / "bomb.csv.gz", "wb", compresslevel=9) as handle:
        handle.write(b"path,label\n" + row * (30_000_000 // len(row)))
    whole = gzip.compress(b"path,label\n" + row * 50)
    (root / "truncated.csv.gz").write_bytes(whole[: len(whole) // 2])
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


CASES = [
    ("config check, missing file", ["config", "check", "{root}/missing.yaml"]),
    ("config check, unknown key", ["config", "check", "{root}/unknown_key.yaml"]),
    ("config check, non-finite number", ["config", "check", "{root}/inf_lr.yaml"]),
    ("config check, YAML alias", ["config", "check", "{root}/alias.yaml"]),
    ("config check, not YAML", ["config", "check", "{root}/not_yaml.yaml"]),
    ("config check, not text", ["config", "check", "{root}/binary.yaml"]),
    ("config check, bad --set", ["config", "check", "{root}/good.yaml", "--set", "data.batch_size=-1"]),
    ("config check, --set without =", ["config", "check", "{root}/good.yaml", "--set", "data.batch_size"]),
    ("train, non-finite number", ["train", "{root}/inf_lr.yaml", "--output", "{root}/out_train"]),
    ("train, missing data", ["train", "{root}/good.yaml", "--set", "data.train={root}/nowhere",
                             "--output", "{root}/out_train"]),
    ("evaluate, not a run", ["evaluate", "{root}/images"]),
    ("evaluate, damaged run", ["evaluate", "{root}/broken_run"]),
    ("predict, damaged run", ["predict", "{root}/broken_run", "{root}/images/circle/circle_000.png"]),
    ("predict, missing input", ["predict", "{root}/broken_run", "{root}/none.png"]),
    ("export, not a run", ["export", "{root}/images", "--model-base", "{root}/models", "--name", "m"]),
    ("export, damaged run", ["export", "{root}/broken_run", "--model-base", "{root}/models", "--name", "m"]),
    ("data pack, output is the source", ["data", "pack", "{root}/images", "{root}/images", "--force"]),
    ("data pack, output holds the source", ["data", "pack", "{root}/images", "{root}", "--force"]),
    ("data pack, negative seed", ["data", "pack", "{root}/images", "{root}/pack", "--seed", "-5"]),
    ("data pack, tiny shards", ["data", "pack", "{root}/images", "{root}/pack", "--shard-mb", "0.00001"]),
    ("data pack, bad split", ["data", "pack", "{root}/images", "{root}/pack", "--val-split", "1.5"]),
    ("serve, port out of range", ["serve", "--model-base", "{root}/models", "--port", "99999"]),
    ("serve, zero poll interval", ["serve", "--model-base", "{root}/models", "--poll-seconds", "0"]),
    ("serve, zero batch", ["serve", "--model-base", "{root}/models", "--batching", "--max-batch-size", "0"]),
    ("compare, unknown backbone", ["compare", "{root}/good.yaml", "--backbones", "nosuchbackbone",
                                   "--output", "{root}/cmp"]),
    ("compare, bad fraction", ["compare", "{root}/good.yaml", "--fractions", "0,2", "--output", "{root}/cmp"]),
    ("lr-find, infinite rate", ["lr-find", "{root}/good.yaml", "--max-lr", "inf"]),
    ("presets import, unknown name", ["presets", "import", "nosuch"]),
    ("predict, server without model", ["predict", "--server", "127.0.0.1:1", "{root}/images/circle/circle_000.png"]),
    # Issue 31: edge files, show, compressed inputs, output folders.
    ("export tflite, over the run's model", ["export", "{root}/broken_run", "--format", "tflite", "--output",
                                            "{root}/broken_run/model.keras", "--force"]),
    ("export tflite, over a user's file", ["export", "{root}/broken_run", "--format", "tflite", "--output",
                                          "{root}/notes.tflite", "--force"]),
    ("predict, a text file named .tflite", ["predict", "{root}/fake.tflite", "{root}/images/circle/circle_000.png"]),
    ("predict, a .tflite given texts", ["predict", "{root}/fake.tflite", "--text", "hello"]),
    ("evaluate, a text file named .tflite", ["evaluate", "{root}/broken_run", "--model", "{root}/fake.tflite"]),
    ("show, not a run", ["show", "{root}/images"]),
    ("train, gzip bomb CSV", ["train", "{root}/good.yaml", "--set", "data.train={root}/bomb.csv.gz",
                             "--output", "{root}/out_bomb"]),
    ("train, truncated gzip CSV", ["train", "{root}/good.yaml", "--set", "data.train={root}/truncated.csv.gz",
                                   "--output", "{root}/out_truncated"]),
    ("train, a user's folder as output", ["train", "{root}/good.yaml", "--output", "{root}/images"]),
    ("serve, huge batch", ["serve", "--model-base", "{root}/models", "--batching", "--max-batch-size", "1000000000"]),
]


@pytest.mark.parametrize("name, command", CASES, ids=[c[0] for c in CASES])
def test_every_command_refuses_bad_input_in_one_line(workspace, name, command, capsys):
    before = _snapshot(workspace)
    args = [part.format(root=workspace) for part in command]
    assert main(args) == 2, name
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert error and len(error.splitlines()) == 1, f"{name}: {captured.err!r}"
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(workspace) == before, f"{name}: files changed"
