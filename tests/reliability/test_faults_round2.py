"""Fault injection, round 2 (issue 24): each test is named after the fault it guards and fails without its fix."""

import io
import threading
import tracemalloc
from pathlib import Path

import grpc
import numpy as np
import pytest

from transferkit.cli import main
from transferkit.config import build_run_config
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.plugins.object_detection.testing import make_detection_dataset, tiny_detection_config
from transferkit.runner import train
from transferkit.serving.errors import ServingError
from transferkit.serving.export import export_run


@pytest.fixture(scope="module")
def served_version(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults2")
    images = make_image_folder(root / "images", per_class=4, size=32)
    run_dir = train(build_run_config(tiny_config(images, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 1}])), root / "run")
    export_run(run_dir, root / "models", "m", version=1)
    good = [p.read_bytes() for p in sorted(Path(images).rglob("*.png"))[:2]]
    return root / "models", good


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1: `data pack` never replaces or sits in its sources -----------------------------------------------


@pytest.mark.parametrize("layout", ["out_is_source", "out_contains_source", "out_inside_source"])
def test_fault_24_01_pack_never_deletes_its_sources(tmp_path, layout, capsys):
    data = tmp_path / "d"
    make_image_folder(data / "train", per_class=3, size=16)
    before = _snapshot(data)
    out = {"out_is_source": data / "train", "out_contains_source": data,
           "out_inside_source": data / "train" / "packed"}[layout]
    assert main(["data", "pack", str(data / "train"), str(out), "--force"]) == 2
    error = capsys.readouterr().err.strip()
    assert "source" in error and len(error.splitlines()) == 1
    assert _snapshot(data) == before


def test_fault_24_01_pack_force_replaces_only_a_pack(tmp_path, capsys):
    source = make_image_folder(tmp_path / "src", per_class=3, size=16)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["data", "pack", str(source), str(other), "--force"]) == 2
    assert "not a pack" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"
    out = tmp_path / "pack"
    assert main(["data", "pack", str(source), str(out)]) == 0
    assert main(["data", "pack", str(source), str(out), "--force"]) == 0  # a pack may be replaced
    assert (out / "transferkit-pack.json").is_file()


def test_fault_24_01_pack_from_a_csv_refuses_an_output_holding_its_images(tmp_path, capsys):
    source = make_image_folder(tmp_path / "d" / "imgs", per_class=3, size=16)
    rows = ["path,label"] + [f"{p},{p.parent.name}" for p in sorted(Path(source).rglob("*.png"))]
    csv = tmp_path / "list.csv"
    csv.write_text("\n".join(rows) + "\n")
    (tmp_path / "d" / "transferkit-pack.json").write_text("{}")  # looks like a pack, yet holds the images
    before = _snapshot(tmp_path / "d")
    assert main(["data", "pack", str(csv), str(tmp_path / "d"), "--force"]) == 2
    assert "holds" in capsys.readouterr().err
    assert _snapshot(tmp_path / "d") == before


# -- 2: declared shapes are checked before anything is allocated ------------------------------------------


def _request(key, proto, signature=""):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(proto)
    return request


@pytest.mark.parametrize("case", ["string", "float"])
def test_fault_24_02_a_tiny_request_declaring_a_huge_shape_allocates_nothing(served_version, case):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    from transferkit.serving.model_manager import LoadedVersion, run_predict

    base, _ = served_version
    loaded = LoadedVersion("m", 1, base / "m" / "1", batching=None)
    dims = [1, 50_000_000] if case == "string" else [1, 250_000_000]
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING if case == "string" else types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d)
                                                            for d in dims]))
    if case == "string":
        proto.string_val.append(b"x")
        request = _request("images", proto)
    else:
        proto.float_val.append(0.5)
        request = _request("pixels", proto, "serving_pixels")
    tracemalloc.start()
    try:
        with pytest.raises(ServingError) as caught:
            run_predict(loaded, request, max_batch=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape" in caught.value.message
    assert peak < 20 * 2**20, f"allocated {peak / 2**20:.0f} MB before refusing"


def test_fault_24_02_open_dimensions_are_bounded():
    import tensorflow as tf

    from transferkit.serving.model_manager import MAX_VARIABLE_DIM, check_declared_shape

    token_ids = tf.TensorShape([None, None])
    check_declared_shape("token_ids", [4, 128], token_ids, max_batch=256)  # an ordinary request passes
    for dims in ([1, MAX_VARIABLE_DIM + 1], [300, 8], [1, -1], [1, 2, 3]):
        with pytest.raises(ServingError) as caught:
            check_declared_shape("token_ids", dims, token_ids, max_batch=256)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


# -- 3: the pixel cap holds for every format the decoder reads ---------------------------------------------


def _encoded(image, fmt, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_fault_24_03_pixel_cap_holds_for_webp_bmp_and_gif(tmp_path):
    import tensorflow as tf
    from PIL import Image

    from transferkit.vision.images import decode_encoded, header_pixels

    big_webp = _encoded(Image.new("RGB", (12000, 12000)), "WEBP", lossless=True)
    assert len(big_webp) < 10_000
    assert int(header_pixels(tf.constant(big_webp))) == 144_000_000
    with pytest.raises(tf.errors.InvalidArgumentError, match="more pixels than the cap"):
        decode_encoded(tf.constant(big_webp))
    lossy = _encoded(Image.new("RGB", (300, 100)), "WEBP", quality=50)
    assert int(header_pixels(tf.constant(lossy))) == 30_000
    assert decode_encoded(tf.constant(lossy)).shape == (100, 300, 3)
    extended = _encoded(Image.new("RGBA", (123, 45)), "WEBP", lossless=True, exif=b"Exif\x00\x00II*\x00")
    assert extended[12:16] == b"VP8X" and int(header_pixels(tf.constant(extended))) == 123 * 45
    assert int(header_pixels(tf.constant(_encoded(Image.new("RGB", (70, 30)), "BMP")))) == 2100
    # A GIF decodes every frame at the canvas size: only its first frame may be decoded.
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (1500, 1500, 3), dtype=np.uint8)).quantize(8) for _ in range(3)]
    frames += [Image.new("RGB", (1500, 1500), (i, 0, 0)).quantize(2) for i in range(40)]
    gif = _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    first = decode_encoded(tf.constant(gif), max_pixels=3_000_000).numpy()
    expected = tf.io.decode_image(gif, channels=3, expand_animations=True)[0].numpy()
    np.testing.assert_array_equal(first, expected)


def test_fault_24_03_served_webp_bomb_is_invalid_argument(served_version):
    from PIL import Image

    from transferkit.serving.model_manager import LoadedVersion, run_predict
    from transferkit.serving.tensors import string_tensor

    base, _ = served_version
    loaded = LoadedVersion("m", 1, base / "m" / "1", batching=None)
    bomb = _encoded(Image.new("RGB", (12000, 12000)), "WEBP", lossless=True)
    with pytest.raises(ServingError) as caught:
        run_predict(loaded, _request("images", string_tensor([bomb])), max_batch=256)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "pixels" in caught.value.message


# -- 4: with batching, a bad input fails only its own request ---------------------------------------------


def test_fault_24_04_a_bad_input_fails_only_its_own_batched_request(served_version):
    from transferkit.serving.client import GrpcClient
    from transferkit.serving.model_manager import BatchingOptions
    from transferkit.serving.server import EmbeddedServer

    base, good = served_version
    server = EmbeddedServer(base, grpc_port=0, rest_port=None,
                            batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=50_000)).start()
    outcomes: dict[tuple[str, int], str] = {}
    try:
        server.manager.wait_until_available("m", 1, timeout=60)
        with GrpcClient(server.grpc_address, timeout=60, retries=0) as client:
            def send(kind: str, i: int):
                image = good[i % len(good)] if kind == "good" else b"not an image at all"
                try:
                    client.predict_images("m", [image])
                    outcomes[kind, i] = "ok"
                except ServingError as error:
                    outcomes[kind, i] = error.code.name

            threads = [threading.Thread(target=send, args=(kind, i))
                       for i in range(6) for kind in ("good", "good", "bad")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        server.stop()
    assert {v for (kind, _), v in outcomes.items() if kind == "good"} == {"ok"}
    assert {v for (kind, _), v in outcomes.items() if kind == "bad"} == {"INVALID_ARGUMENT"}


# -- 5: one image with thousands of boxes does not set every image's padding --------------------------------


def test_fault_24_05_boxes_per_image_are_capped_and_the_cut_is_listed(tmp_path):
    from transferkit.registry import get_task

    labels = make_detection_dataset(tmp_path / "det", count=8, size=64)
    lines = labels.read_text().splitlines()
    first = lines[1].split(",")
    crowded = [",".join(first[:4] + [str(x), str(x), str(x + 2), str(x + 2)]) for x in range(40) for _ in range(25)]
    labels.write_text("\n".join(lines + crowded) + "\n")
    config = build_run_config(tiny_detection_config(labels, data={"val_split": 0.25}))
    assert config.task_config.data.max_boxes == 100
    task = get_task(config.task)(config)
    data = task.datasets()
    assert data.info["max_boxes"] == 100
    cut = [p for p in data.problems if "more than data.max_boxes=100" in p["reason"]]
    assert len(cut) == 1 and cut[0]["path"].endswith(first[0].split("/")[-1])


# -- 19: every serve option is checked before anything starts --------------------------------------------


@pytest.mark.parametrize("option", [["--poll-seconds", "0"], ["--poll-seconds", "-1"], ["--port", "99999"],
                                    ["--max-batch-size", "0"], ["--batch-timeout-micros", "-5"],
                                    ["--rest-port", "70000"], ["--poll-seconds", "nan"]])
def test_fault_24_19_serve_options_out_of_range_are_one_line_errors(tmp_path, option, capsys):
    assert main(["serve", "--model-base", str(tmp_path), "--batching", *option]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and option[0] in error and option[1] in error


# -- 9: non-finite and out-of-range numbers are config errors; a diverging loss stops the run ------------------


@pytest.mark.parametrize("key, value", [("stages.0.learning_rate", ".inf"), ("stages.0.learning_rate", ".nan"),
                                        ("model.box_loss_weight", "-1"), ("model.box_loss_weight", ".nan"),
                                        ("model.anchor_size", ".inf")])
def test_fault_24_09_non_finite_and_out_of_range_numbers_are_config_errors(tmp_path, key, value, capsys):
    import yaml

    labels = make_detection_dataset(tmp_path / "det", count=4, size=32)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_detection_config(labels)))
    assert main(["config", "check", str(path), "--set", f"{key}={value}"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and key.split(".")[-1] in error


def test_fault_24_09_lr_find_refuses_an_infinite_rate(tmp_path, capsys):
    import yaml

    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(images)))
    assert main(["lr-find", str(path), "--max-lr", "inf", "--steps", "10"]) == 2
    assert "--max-lr" in capsys.readouterr().err


def test_fault_24_09_a_diverging_loss_stops_the_run_with_a_message(tmp_path, capsys):
    import yaml

    images = make_image_folder(tmp_path / "images", per_class=4, size=16)
    config = tiny_config(images, image_size=16, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 3, "learning_rate": 1e38}])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training loss became" in error and "'head'" in error
    assert not (tmp_path / "run" / "metrics.json").exists()


# -- 10: an unknown backbone stops `compare` before any cell ------------------------------------------------


def test_fault_24_10_compare_refuses_an_unknown_backbone_before_any_cell(tmp_path, capsys):
    import yaml

    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(images)))
    out = tmp_path / "compare"
    assert main(["compare", str(path), "--backbones", "efficientnet-lite0,efficientnet-lit1", "--seeds", "1",
                 "--fractions", "1", "--output", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'efficientnet-lit1'" in error and "efficientnet-lite1" in error
    assert not out.exists()



# -- 16, 23, 24, 32: bounded readers; damaged files are one-line errors ------------------------------------------


def _alias_bomb(levels: int, width: int = 10) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_fault_24_16_yaml_aliases_are_refused_in_configs_and_yolo_names(tmp_path, capsys):
    import yaml

    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    config = yaml.safe_dump(tiny_config(images))
    path = tmp_path / "bomb.yaml"
    path.write_text(config + "extra:\n" + "".join("  " + line + "\n" for line in _alias_bomb(8).splitlines()))
    assert main(["config", "check", str(path)]) == 2
    assert "aliases" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "bomb.yaml"), "--set", "data.batch_size=*a"]) == 2

    from transferkit.errors import DataError
    from transferkit.plugins.object_detection.annotations import read_annotations

    labels = make_detection_dataset(tmp_path / "det", count=4, size=32, fmt="yolo")
    (labels / "data.yaml").write_text(_alias_bomb(7) + "names: [circle, square]\n")
    with pytest.raises(DataError, match="aliases"):
        read_annotations(str(labels), "yolo", None, None, "skip")


def test_fault_24_24_a_latin1_yolo_names_file_is_a_one_line_error(tmp_path):
    from transferkit.errors import DataError
    from transferkit.plugins.object_detection.annotations import read_annotations

    labels = make_detection_dataset(tmp_path / "det", count=4, size=32, fmt="yolo")
    (labels / "data.yaml").write_bytes("names: [caf\xe9, square]\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_annotations(str(labels), "yolo", None, None, "skip")


def test_fault_24_32_a_damaged_run_folder_is_a_one_line_error(tmp_path, capsys):
    import shutil

    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    run_dir = train(build_run_config(tiny_config(images, image_size=16, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 1}])), tmp_path / "run")
    image = str(sorted(Path(images).rglob("*.png"))[0])
    for name, damage in (("info.json", b"{not json"), ("config.yaml", b"task: [unclosed"),
                         ("config.yaml", b"\xff\xfe\x00garbage")):
        broken = tmp_path / f"broken-{name}"
        shutil.copytree(run_dir, broken, dirs_exist_ok=True)
        (broken / name).write_bytes(damage)
        for command in (["predict", str(broken), image], ["evaluate", str(broken)],
                        ["export", str(broken), "--model-base", str(tmp_path / "m"), "--name", "m"]):
            assert main(command) == 2, (name, command)
            error = capsys.readouterr().err.strip()
            assert len(error.splitlines()) == 1 and name in error, (name, command, error)


# -- 22: a CSV field over the csv module's limit is a one-line error ---------------------------------------------


@pytest.fixture
def default_csv_field_limit():
    import csv

    previous = csv.field_size_limit(131072)  # the module's default; the text task raises it process-wide
    yield
    csv.field_size_limit(previous)


def test_fault_24_22_a_huge_csv_field_is_a_one_line_error(tmp_path, capsys, default_csv_field_limit):
    from transferkit.errors import DataError
    from transferkit.plugins.object_detection.annotations import read_annotations

    labels = make_detection_dataset(tmp_path / "det", count=4, size=32)
    lines = labels.read_text().splitlines()
    first = lines[1].split(",")
    lines.append(",".join(first[:3] + ["c" * 200_000] + first[4:]))
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels.csv: line 6: not a readable CSV row"):
        read_annotations(str(labels), "csv", None, None, "skip")
    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    listing = tmp_path / "list.csv"
    rows = [f"{p},{p.parent.name}" for p in sorted(Path(images).rglob("*.png"))]
    listing.write_text("path,label\n" + "\n".join(rows) + f"\n{rows[0].split(',')[0]},{'x' * 200_000}\n")
    assert main(["data", "pack", str(listing), str(tmp_path / "pack")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "list.csv: line" in error


# -- 25, 26: text settings that fail at training time are config errors -----------------------------------------


@pytest.mark.parametrize("key, value, expected", [("data.encoding", "rot13", "codec name for text"),
                                                  ("data.fallback_encoding", "hex", "codec name for text"),
                                                  ("data.sequence_length", "4096", "at most")])
def test_fault_24_25_26_text_settings_are_checked_by_config_check(tmp_path, key, value, expected, capsys):
    import yaml

    from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config

    root = tmp_path / "text"
    make_text_dataset(root, count=12)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_text_config(root)))
    assert main(["config", "check", str(path)]) == 0
    capsys.readouterr()
    assert main(["config", "check", str(path), "--set", f"{key}={value}"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and key in error and expected in error


# -- 21, 31: packs -----------------------------------------------------------------------------------------------


def test_fault_24_21_a_killed_packs_temporaries_are_removed_by_the_next_pack(tmp_path):
    import os

    source = make_image_folder(tmp_path / "src", per_class=3, size=16)
    dead = tmp_path / ".tmp-4000000-deadbeef-pack"  # pid 4,000,000 exceeds Linux's pid_max: never alive
    dead.mkdir()
    (dead / "train-00000-of-00001.tfrecord").write_bytes(b"x" * 1000)
    alive = tmp_path / f".tmp-{os.getppid()}-cafebabe-pack"  # a live writer's: kept
    alive.mkdir()
    unrelated = tmp_path / ".tmp-4000000-deadbeef-other"  # another output's: kept
    unrelated.mkdir()
    assert main(["data", "pack", str(source), str(tmp_path / "pack")]) == 0
    assert not dead.exists() and alive.exists() and unrelated.exists()


@pytest.mark.parametrize("damage", [{"class_counts": {"a": 1}}, {"shards": "train-0.tfrecord"},
                                    {"class_names": "abc"}, "a list"])
def test_fault_24_31_a_pack_manifest_of_wrong_types_is_a_one_line_error(tmp_path, damage, capsys):
    import json

    from transferkit.errors import DataError
    from transferkit.vision.packing import MANIFEST, Pack

    source = make_image_folder(tmp_path / "src", per_class=3, size=16)
    assert main(["data", "pack", str(source), str(tmp_path / "pack")]) == 0
    manifest = tmp_path / "pack" / MANIFEST
    spec = json.loads(manifest.read_text())
    if damage == "a list":
        spec = [spec]
    elif "class_names" in damage:
        spec.update(damage)
    else:
        spec["splits"]["train"].update(damage)
    manifest.write_text(json.dumps(spec))
    with pytest.raises(DataError, match="unreadable pack manifest"):
        Pack.open(tmp_path / "pack")


# -- 30: TF_CONFIG -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster, named", [({"worker": ["localhost"]}, "host:port"),
                                            ({"worker": [12345]}, "host:port"),
                                            ({"worker": ["a:1"], "ps": ["b:2"]}, "'ps'")])
def test_fault_24_30_bad_tf_config_addresses_and_jobs_are_named(monkeypatch, cluster, named):
    import json

    from transferkit.errors import ConfigError
    from transferkit.multi_worker import read_tf_config

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ConfigError, match="TF_CONFIG.cluster") as caught:
        read_tf_config()
    assert named in str(caught.value)


# -- 6, 23: COCO ids ---------------------------------------------------------------------------------------------


def test_fault_24_06_coco_images_sharing_an_id_are_reported_and_skipped(tmp_path):
    import json

    from transferkit.plugins.object_detection.annotations import read_annotations

    path = make_detection_dataset(tmp_path / "det", count=4, size=32, fmt="coco")
    spec = json.loads(path.read_text())
    shared, second = spec["images"][0]["id"], spec["images"][1]["id"]
    spec["images"][1]["id"] = shared
    for box in spec["annotations"]:  # the second image's boxes name the shared id too
        box["image_id"] = shared if box["image_id"] == second else box["image_id"]
    names = {spec["images"][0]["file_name"], spec["images"][1]["file_name"]}
    path.write_text(json.dumps(spec))
    annotations, problems = read_annotations(str(path), "coco", None, None, "skip")
    kept = {Path(a.path).name for a in annotations}
    assert len(annotations) == 2 and not kept & {Path(n).name for n in names}
    reasons = [p["reason"] for p in problems]
    assert any(f"id {shared!r} is shared by 2 images" in r for r in reasons)
    assert not any("is not in 'images'" in r for r in reasons)


def test_fault_24_23_unhashable_coco_ids_and_deep_nesting_are_listed(tmp_path):
    import json

    from transferkit.plugins.object_detection.annotations import read_annotations

    path = make_detection_dataset(tmp_path / "det", count=4, size=32, fmt="coco")
    spec = json.loads(path.read_text())
    spec["images"][0]["id"] = [1]
    spec["categories"][0]["id"] = [0]
    spec["annotations"][-1]["image_id"] = {"a": 1}
    path.write_text(json.dumps(spec))
    annotations, problems = read_annotations(str(path), "coco", None, None, "skip")
    assert len(annotations) == 3 and problems
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    from transferkit.errors import DataError

    with pytest.raises(DataError, match="nested too deeply"):
        read_annotations(str(deep), "coco", None, None, "skip")


# -- 11: JSON Lines values that are not strings ------------------------------------------------------------------


def test_fault_24_11_jsonl_objects_and_lists_are_problems_not_strings(tmp_path):
    import json

    from transferkit.plugins.text_classification.config import DataConfig
    from transferkit.plugins.text_classification.data import read_examples

    rows = [{"text": f"a fine film number {i}", "label": "pos" if i % 2 else "neg"} for i in range(6)]
    rows += [{"text": {"a": 1}, "label": "pos"}, {"text": "a list label", "label": ["pos"]},
             {"text": "true label", "label": True}, {"text": 12345, "label": 1}]  # numbers are read as text
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = read_examples(str(path), DataConfig(train=str(path)))
    labels = sorted({e.label for e in result.examples})
    assert labels == ["1", "neg", "pos"] and len(result.examples) == 7
    reasons = {p["path"].rsplit(":", 1)[1]: p["reason"] for p in result.problems}
    assert "JSON object" in reasons["7"] and "JSON array" in reasons["8"] and "boolean" in reasons["9"]


# -- 28: REST bodies that numpy cannot take are 400s, not 500s ----------------------------------------------------


def test_fault_24_28_ragged_extra_inputs_and_huge_numbers_are_400(served_version):
    import base64
    import json
    import urllib.error
    import urllib.request

    import tensorflow as tf

    from transferkit.serving.rest_server import parse_predict_body
    from transferkit.serving.server import EmbeddedServer

    specs = {"max_detections": tf.TensorSpec([], tf.int32), "images": tf.TensorSpec([None], tf.string)}
    with pytest.raises(ServingError) as caught:
        parse_predict_body({"inputs": {"max_detections": 10**30, "images": ["x"]}}, specs)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    base, good = served_version
    server = EmbeddedServer(base, grpc_port=0, rest_port=0, poll_seconds=0.5).start()
    try:
        server.manager.wait_until_available("m", 1, timeout=60)
        body = {"inputs": {"images": [{"b64": base64.b64encode(good[0]).decode()}], "bogus": [[1], [1, 2]]}}
        request = urllib.request.Request(f"{server.rest_address}/v1/models/m:predict",
                                         data=json.dumps(body).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code == 400
        assert "bogus" in json.loads(error.value.read())["error"]
    finally:
        server.stop()


# -- 29: lr-find with another task's weights ---------------------------------------------------------------------


def test_fault_24_29_lr_find_with_weights_of_another_model_is_a_one_line_error(tmp_path, capsys):
    import yaml

    labels = make_detection_dataset(tmp_path / "det", count=6, size=32)
    detector = train(build_run_config(tiny_detection_config(labels, image_size=32, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 1}])), tmp_path / "det_run")
    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(images, image_size=32)))
    assert main(["lr-find", str(path), "--weights", str(detector), "--steps", "10"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "do not fit this config's model" in error


# -- 27: an error of ours raised inside a tf.data function reaches the user as its one line ------------------------


def test_fault_24_27_an_error_raised_in_a_tf_data_function_is_one_line(tmp_path, monkeypatch, capsys):
    import csv

    import numpy as np
    import tensorflow as tf

    from transferkit import cli
    from transferkit.plugins.text_classification.config import DataConfig
    from transferkit.plugins.text_classification.data import read_examples

    path = tmp_path / "texts.csv"

    def write(rows):
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerows([["text", "label"], *rows])

    write([["good film", "pos"], ["bad film", "neg"]])
    examples = read_examples(str(path), DataConfig(train=str(path))).examples
    write([["an inserted row", "pos"], ["good film", "pos"], ["bad film", "neg"]])  # changed after reading

    def streamed_epoch(args):  # what a streamed text epoch does: read each text back inside tf.data
        texts = tf.data.Dataset.range(len(examples)).map(
            lambda i: tf.numpy_function(lambda j: np.bytes_(examples[int(j)].text.encode()), [i], tf.string))
        list(texts)
        return 0

    monkeypatch.setattr(cli, "_cmd_evaluate", streamed_epoch)
    assert main(["evaluate", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"transferkit: error: {path}:2: the file changed after it was read (size 41 -> 62); its texts are no "
        f"longer where they were. Start the run again"]
    assert "Traceback" not in captured.err


# -- 18: a file that cannot be written is a one-line error, never a crash ------------------------------------------


def test_fault_24_18_a_full_disk_during_train_and_export_is_one_line(tmp_path):
    import subprocess
    import sys

    import yaml

    images = make_image_folder(tmp_path / "images", per_class=4, size=16)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(images, image_size=16)))
    command = f"ulimit -f 100; exec {sys.executable} -m transferkit train {path} --output {tmp_path / 'run'}"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "ulimit -f" in last and "best.weights.h5" in last and "Traceback" not in result.stderr
    assert not list((tmp_path / "run").glob(".*.h5"))  # no temporary left behind
    run_dir = train(build_run_config(tiny_config(images, image_size=16, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 1}])), tmp_path / "good_run")
    command = (f"ulimit -f 200; exec {sys.executable} -m transferkit export {run_dir} --model-base "
               f"{tmp_path / 'models'} --name m")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "could not be written" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "models" / "m" / "1").exists()


# -- 15: a damaged disk cache is found, removed and written again -------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "delete", "truncate"])
def test_fault_24_15_a_damaged_disk_cache_is_rebuilt(tmp_path, damage):
    import tensorflow as tf

    from transferkit.streaming import disk_cache_prefix

    folder = tmp_path / "cache"

    def values(prefix):
        return [int(v) for v in tf.data.Dataset.range(50).map(lambda v: v * 3).cache(str(prefix))]

    first = disk_cache_prefix(folder)
    assert values(first) == list(range(0, 150, 3))
    assert disk_cache_prefix(folder) == first  # found complete: reused (and its sums recorded)
    assert disk_cache_prefix(folder) == first  # intact: reused again
    data = next(folder.glob(first.name + ".data-*"))
    if damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "delete":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    rebuilt = disk_cache_prefix(folder)
    assert rebuilt != first and not list(folder.glob(first.name + "*"))
    assert values(rebuilt) == list(range(0, 150, 3))


# -- 7: a damaged shard of a pack is named, counted and handled as on_bad_image says ------------------------------


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_fault_24_07_a_damaged_shard_is_named_and_counted(tmp_path, damage, monkeypatch):
    from transferkit.errors import DataError
    from transferkit.registry import get_task

    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path / "home"))
    source = make_image_folder(tmp_path / "src", per_class=6, size=16)
    assert main(["data", "pack", str(source), str(tmp_path / "pack"), "--val-split", "0.25",
                 "--shard-mb", "0.002"]) == 0
    shards = sorted((tmp_path / "pack").glob("train-*.tfrecord"))
    assert len(shards) >= 3
    config = build_run_config(tiny_config(tmp_path / "pack", image_size=16, data={"cache": "none"}))
    whole = get_task("image_classification")(config).datasets()
    kept = 18 - round(18 * 0.25)  # the shared splitter holds out round(18 x 0.25) = 4 images, stratified
    assert not whole.problems and whole.info["num_train"] == kept
    raw = bytearray(shards[1].read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    shards[1].write_bytes(bytes(raw))
    data = get_task("image_classification")(config).datasets()
    named = [p for p in data.problems if p["path"].endswith(shards[1].name)]
    assert len(named) == 1 and "left out" in named[0]["reason"]
    lost = int(named[0]["reason"].split("; its ")[1].split(" record")[0])
    assert lost >= 1 and data.info["num_train"] == kept - lost
    assert sum(int(y.shape[0]) for _, y in data.train_plain) == kept - lost
    strict = build_run_config(tiny_config(tmp_path / "pack", image_size=16,
                                          data={"cache": "none", "on_bad_image": "error"}))
    with pytest.raises(DataError, match=shards[1].name):
        get_task("image_classification")(strict).datasets()


# -- 8: with data.cache none, a file whose body does not decode is listed as it is with memory ----------------------


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_fault_24_08_an_undecodable_body_is_listed_whatever_the_cache(tmp_path, cache):
    import json

    images = make_image_folder(tmp_path / "images", per_class=6, size=32)
    png = (images / "circle" / "circle_001.png").read_bytes()
    (images / "circle" / "truncated.png").write_bytes(png[:60])  # a valid header, no pixels
    val = make_image_folder(tmp_path / "val", per_class=2, size=32, seed=1)
    # Augmented: no feature cache, so every epoch streams the files (the case that dropped it silently).
    config = build_run_config(tiny_config(images, data={"cache": cache, "val": str(val)}, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 2}], augment={"flip": "horizontal"}))
    run_dir = train(config, tmp_path / "run")
    for listing in (json.loads((run_dir / "problems.json").read_text()),
                    json.loads((run_dir / "metrics.json").read_text())["problems"]):
        assert [p["path"] for p in listing if p["path"].endswith("truncated.png")], listing
