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


def test_fault_31_01_a_demo_folder_from_before_the_marker_is_still_a_demo(tmp_path):
    legacy = tmp_path / "demo"
    (legacy / "run" / "checkpoints").mkdir(parents=True)
    (legacy / "data").mkdir()
    (legacy / "run" / "config.yaml").write_text("task: image_classification\n")
    (legacy / "run" / "info.json").write_text(json.dumps({"task": "image_classification"}))
    assert check_output_folder(legacy, kind="demo") == legacy
    (legacy / "thesis.tex").write_text("mine")  # anything else in it: not the demo's folder
    with pytest.raises(TransferkitError, match="did not write"):
        check_output_folder(legacy, kind="demo")


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


# -- 14, 15: `show` on damaged or mistyped run files says so, and prints only valid values ---------------------


def _fake_run(folder: Path, **files) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    defaults = {"info.json": {"task": "image_classification", "backbone": "b", "class_names": ["a", "b"],
                              "num_train": 4, "num_val": 2},
                "metrics.json": {"accuracy": 0.5, "num_examples": 2, "elapsed_seconds": 3.0}}
    for name, value in {**defaults, **files}.items():
        (folder / name).write_text(value if isinstance(value, str) else json.dumps(value))
    return folder


@pytest.mark.parametrize("name, content, note", [
    ("metrics.json", "[1, 2, 3]", "metrics.json: expected a JSON object, found list"),
    ("metrics.json", '{"accuracy": 0.9', "metrics.json: damaged"),
    ("history.json", '{"a": 1}', "history.json: expected a JSON list, found dict"),
    ("history.json", "[1, \"x\", null]", None),
    ("problems.json", '"hello"', "problems.json: expected a JSON list"),
])
def test_fault_31_14_show_reads_mistyped_files_without_a_traceback(tmp_path, capsys, name, content, note):
    run = _fake_run(tmp_path / "run", **{name: content})
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("done:")
    if note:
        assert note in out


@pytest.mark.parametrize("info", ['"hello"', '{"class_names": 5, "train_class_counts": "x", "num_train": -5}'])
def test_fault_31_14_show_with_a_mistyped_info(tmp_path, capsys, info):
    run = _fake_run(tmp_path / "run", **{"info.json": info})
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "-5" not in out and "classes" not in out


def test_fault_31_15_show_prints_only_valid_numbers(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", **{"metrics.json": '{"accuracy": NaN, "num_examples": -5, '
                                                         '"elapsed_seconds": 1e300, "best_epoch": true}'})
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "-5" not in out and "min" not in out and "best epoch" not in out
    assert "done: no score" in out


def test_fault_31_19_a_huge_class_name_is_cut_in_the_summary_and_refused_in_training(tmp_path, capsys):
    long = "x" * 100_000
    run = _fake_run(tmp_path / "run", **{"info.json": {"task": "image_classification", "class_names": [long, "b"],
                                                       "train_class_counts": [2, 2]},
                                         "metrics.json": {"accuracy": 0.5, "per_class": {long: {"f1": 0.5}}}})
    assert main(["show", str(run)]) == 0
    assert len(capsys.readouterr().out) < 2000
    images = make_image_folder(tmp_path / "images", classes=("circle", "square"), per_class=2, size=16)
    rows = [f"{p},{'a' * 300 if p.parent.name == 'circle' else 'b'}" for p in sorted(images.rglob("*.png"))]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(TransferkitError, match="has 300 characters; expected at most 256"):
        train(build_run_config(_one_epoch(tmp_path / "list.csv")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- 3, 10, 16: clips are cut before resampling; rate, length and truncation are checked the same everywhere -----


def _wav_bytes(rate: int, samples: int, declared_rate: int | None = None) -> bytes:
    import io
    import struct

    import numpy as np
    from scipy.io import wavfile

    buffer = io.BytesIO()
    wavfile.write(buffer, rate, (np.sin(np.arange(samples) / 3.0) * 8000).astype(np.int16))
    data = bytearray(buffer.getvalue())
    if declared_rate is not None:  # the fmt chunk's rate and byte rate, as a hostile file would set them
        struct.pack_into("<II", data, 24, declared_rate, declared_rate * 2)
    return bytes(data)


def test_fault_31_03_a_long_or_low_rate_clip_is_cut_before_resampling():
    import dataclasses

    import numpy as np

    from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor

    resampled_lengths = []

    @dataclasses.dataclass(frozen=True)
    class Recording(AudioPreprocessor):
        def resample(self, waveform, rate):
            resampled_lengths.append(int(waveform.shape[0]))
            return super().resample(waveform, rate)

    pre = Recording(sample_rate=16000, clip_seconds=0.5, image_size=(32, 32), num_mels=32)
    # 590 s at 8 kHz: resampled whole it would be 9.4M outputs x 32 taps (gigabytes of index tensors).
    long_clip = np.sin(np.arange(590 * 8000, dtype=np.float32) / 5.0)
    out = pre.prepare(long_clip, 8000).numpy()
    assert resampled_lengths == [4000 + 2 * 17]  # 0.5 s at 8 kHz and the filter's reach on both sides
    assert out.shape == (8000,) and np.isfinite(out).all() and np.abs(out).max() > 0.5
    # The output is still the clip's centre: the same as resampling a centred excerpt.
    centre = long_clip[len(long_clip) // 2 - 2000: len(long_clip) // 2 + 2000]
    np.testing.assert_allclose(out[1000:-1000], pre.prepare(centre, 8000).numpy()[1000:-1000], atol=0.05)


@pytest.mark.parametrize("rate, message", [(1, "below 1000 Hz"), (0, "below 1000 Hz"), (10_000_000, "above")])
def test_fault_31_03_the_serving_graph_refuses_a_rate_out_of_range(rate, message):
    import tensorflow as tf

    from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor

    pre = AudioPreprocessor(sample_rate=16000, clip_seconds=0.5, image_size=(32, 32), num_mels=32)
    serve = tf.function(pre.preprocess, input_signature=[tf.TensorSpec([], tf.string)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(tf.constant(_wav_bytes(16000, 600, declared_rate=rate)))


@pytest.mark.parametrize("case", ["truncated", "huge_declared_size", "zero_rate", "one_hz"])
def test_fault_31_10_16_bad_wavs_are_refused_by_the_local_reader_as_by_the_server(tmp_path, case):
    import struct

    import tensorflow as tf

    from transferkit.plugins.audio_classification import data as data_lib

    good = _wav_bytes(16000, 4000)
    if case == "truncated":
        bad = good[:3000]
    elif case == "huge_declared_size":
        bad = bytearray(good[:144])
        struct.pack_into("<I", bad, 40, 2 ** 31)  # the data chunk's size
        bad = bytes(bad)
    else:
        bad = _wav_bytes(16000, 600, declared_rate=0 if case == "zero_rate" else 1)
    with pytest.raises(ValueError):
        data_lib.read_wav(bad)
    from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor

    pre = AudioPreprocessor(sample_rate=16000, clip_seconds=0.5, image_size=(32, 32), num_mels=32)
    with pytest.raises(tf.errors.InvalidArgumentError):
        pre.preprocess(tf.constant(bad))
    data_lib.read_wav(good)  # the same reader takes the intact file


# -- 5, 6: compressed inputs are bounded and their copies do not pile up --------------------------------------


def _gzip(path: Path, data: bytes) -> Path:
    import gzip

    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(data)
    return path


def test_fault_31_05_a_gzip_bomb_image_csv_is_refused_early(tmp_path):
    from transferkit.vision.samples import list_samples

    images = make_image_folder(tmp_path / "images", per_class=1, size=16)
    row = f"{next(images.rglob('*.png'))},circle\n".encode()
    bomb = _gzip(tmp_path / "list.csv.gz", b"path,label\n" + row * (40_000_000 // len(row)))
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(TransferkitError, match="decompression bomb"):
        list_samples(bomb)


def test_fault_31_05_a_gzip_bomb_text_csv_leaves_no_copy(tmp_path, isolated_home):
    from transferkit.compressed import plain_copy

    bomb = _gzip(tmp_path / "texts.csv.gz", b"text,label\n" + b"0" * 40_000_000)
    with pytest.raises(TransferkitError, match="decompression bomb"):
        plain_copy(bomb)
    folder = Path(isolated_home) / "decompressed"
    assert not folder.exists() or not any(folder.iterdir())


def test_fault_31_05_the_decompressed_size_limit_is_set_by_the_environment(tmp_path, monkeypatch):
    import os

    from transferkit.compressed import plain_copy

    source = _gzip(tmp_path / "texts.csv.gz", b"text,label\n" + os.urandom(3_000_000).hex().encode())
    monkeypatch.setenv("TRANSFERKIT_MAX_DECOMPRESSED_MB", "1")
    with pytest.raises(TransferkitError, match="more than 1 MB"):
        plain_copy(source)
    monkeypatch.setenv("TRANSFERKIT_MAX_DECOMPRESSED_MB", "lots")
    with pytest.raises(TransferkitError, match="TRANSFERKIT_MAX_DECOMPRESSED_MB"):
        plain_copy(source)
    monkeypatch.delenv("TRANSFERKIT_MAX_DECOMPRESSED_MB")
    assert plain_copy(source).stat().st_size == 11 + 6_000_000


def test_fault_31_06_a_changed_source_replaces_its_decompressed_copy(tmp_path, isolated_home):
    import os

    from transferkit.compressed import plain_copy

    source = _gzip(tmp_path / "texts.csv.gz", b"text,label\nfirst,a\n")
    other = _gzip(tmp_path / "other.csv.gz", b"text,label\nother,a\n")
    first, kept = plain_copy(source), plain_copy(other)
    _gzip(source, b"text,label\nsecond,a\n")
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    second = plain_copy(source)
    assert second != first and not first.exists() and second.read_bytes().endswith(b"second,a\n")
    assert kept.exists()  # another source's copy is left alone
    assert sorted(p.name for p in (Path(isolated_home) / "decompressed").iterdir()) == sorted([second.name, kept.name])


# -- 11: a disk cache is vouched for by its writer, so damage before its first reuse is found ----------------------


def test_fault_31_11_a_cache_damaged_before_its_first_reuse_is_rebuilt(tmp_path):
    import tensorflow as tf

    from transferkit import streaming

    folder = tmp_path / "cache"

    def values(prefix):
        return [int(v) for v in tf.data.Dataset.range(40).map(lambda v: v * 2).cache(str(prefix))]

    first = streaming.disk_cache_prefix(folder)
    assert values(first) == list(range(0, 80, 2))
    streaming.record_finished_caches()  # what the run does after each epoch
    assert (folder / (first.name + streaming.SUMS_SUFFIX)).is_file()
    data = next(folder.glob(first.name + ".data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # damaged before anyone reused it
    rebuilt = streaming.disk_cache_prefix(folder)
    assert rebuilt != first and values(rebuilt) == list(range(0, 80, 2))


def test_fault_31_11_a_cache_nobody_vouched_for_is_not_reused(tmp_path):
    import tensorflow as tf

    from transferkit import streaming

    folder = tmp_path / "cache"
    first = streaming.disk_cache_prefix(folder)
    list(tf.data.Dataset.range(10).cache(str(first)))
    streaming._WRITING.discard(first)  # as if its writer died before recording it
    assert streaming.disk_cache_prefix(folder) != first and not list(folder.glob(first.name + "*"))


# -- 9, 12: data.test is read before training, and a test split that overlaps the training data is said ---------


def test_fault_31_09_a_test_split_equal_to_the_training_data_is_flagged(tmp_path, capsys):
    from transferkit.summary import run_summary

    images = make_image_folder(tmp_path / "images", per_class=4, size=16)
    config = _one_epoch(images)
    config["data"]["test"] = str(images)
    run = train(build_run_config(config), tmp_path / "run")
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["also_in_train"] + test["also_in_val"] == test["num_examples"] == 12
    assert test["also_in_val"] == json.loads((run / "metrics.json").read_text())["num_examples"]
    assert "the test score is not a held-out score" in run_summary(run)


@pytest.mark.parametrize("kind", ["empty_folder", "missing", "another_tasks_csv"])
def test_fault_31_12_a_bad_test_split_stops_the_run_before_training(tmp_path, kind):
    images = make_image_folder(tmp_path / "images", per_class=4, size=16)
    test = tmp_path / "test"
    if kind == "empty_folder":
        test.mkdir()
    elif kind == "another_tasks_csv":
        test = tmp_path / "boxes.csv"
        test.write_text("image,xmin,ymin,xmax,ymax,label\na.png,1,1,5,5,cat\n")
    config = _one_epoch(images)
    config["data"]["test"] = str(test)
    with pytest.raises(TransferkitError):
        train(build_run_config(config), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_fault_31_show_answers_without_importing_tensorflow(tmp_path):
    import subprocess
    import sys

    run = _fake_run(tmp_path / "run")
    code = ("import sys; from transferkit.cli import main; "
            f"main(['show', {str(run)!r}]); main(['show', {str(tmp_path / 'none')!r}]); "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr[-2000:]
    assert "no info.json" in result.stderr
