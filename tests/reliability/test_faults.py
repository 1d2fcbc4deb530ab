"""Fault injection: each test is named after the issue-9 fault it guards and fails without its fix."""

import os
import shutil
import time
from pathlib import Path

import pytest

from transferkit.vision.preprocessor import ImagePreprocessor
from transferkit.config import build_run_config
from transferkit.errors import TransferkitError
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import train
from transferkit.serving.export import ExportError, export_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    images = make_image_folder(root / "images", per_class=5, size=32)
    run_dir = train(build_run_config(tiny_config(images, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 1}])), root / "run")
    version = export_run(run_dir, root / "models", "m")
    return run_dir, version


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_fault_01_a_version_copied_in_slowly_is_loaded_once_complete(exported, tmp_path):
    from transferkit.serving.server import EmbeddedServer

    _, version_one = exported
    base = tmp_path / "base"
    shutil.copytree(version_one, base / "m" / "1")
    server = EmbeddedServer(base, grpc_port=0, rest_port=None, poll_seconds=0.1).start()
    try:
        server.manager.wait_until_available("m", 1, timeout=60)
        # Everything but the variables' data shard, as a slow copy would leave it for a while.
        two = base / "m" / "2"
        shutil.copytree(version_one, two, ignore=shutil.ignore_patterns("variables.data-*"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = {s.version: s for s in server.manager.status("m")}
            if 2 in states and states[2].error_code:
                break
            time.sleep(0.1)
        assert states[2].error_code, "the incomplete version should have failed to load first"
        for shard in (version_one / "variables").glob("variables.data-*"):
            shutil.copy2(shard, two / "variables" / shard.name)
        server.manager.wait_until_available("m", 2, timeout=60)
    finally:
        server.stop()


def test_fault_02_a_second_server_cannot_share_a_port(exported):
    from transferkit.serving.server import EmbeddedServer

    base = exported[1].parent.parent
    first = EmbeddedServer(base, grpc_port=0, rest_port=0, poll_seconds=0.5).start()
    try:
        with pytest.raises(TransferkitError, match=rf"gRPC port 127.0.0.1:{first.grpc_port}: cannot bind"):
            EmbeddedServer(base, grpc_port=first.grpc_port, rest_port=None).start()
        with pytest.raises(TransferkitError, match=rf"REST port 127.0.0.1:{first.rest_port}: cannot start"):
            EmbeddedServer(base, grpc_port=0, rest_port=first.rest_port).start()
    finally:
        first.stop()


@pytest.mark.parametrize("name", ["evil\n", "a/b", "..", "", "x\r"])
def test_fault_09_names_are_matched_whole(exported, tmp_path, name):
    run_dir, _ = exported
    with pytest.raises(ExportError, match="--name"):
        export_run(run_dir, tmp_path / "models", name)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_fault_13_stale_temporaries_of_dead_writers_are_cleaned(exported, tmp_path):
    from transferkit.models.checkpoints import CheckpointStore

    run_dir, version_one = exported
    base = tmp_path / "models"
    model_dir = base / "m"
    dead = model_dir / f".tmp-{_dead_pid()}-deadbeef-7"
    live = model_dir / f".tmp-{os.getppid()}-cafe0000-8"  # our parent: alive
    for folder in (dead, live):
        (folder / "variables").mkdir(parents=True)
    export_run(run_dir, base, "m")
    assert not dead.exists() and live.exists()
    # Checkpoints: a SIGKILL mid-write leaves a temporary folder; the next save removes it.
    store = CheckpointStore(tmp_path / "ckpt")
    store.root.mkdir(parents=True)
    stale = store.root / f".tmp-{_dead_pid()}-0badf00d-epoch-0001-1"
    stale.mkdir()
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    store.save(model, None, {"global_epoch": 1})
    assert not stale.exists()
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".tmp-")] == []


def test_fault_07_on_bad_image_error_also_covers_csv_problems(tmp_path):
    from transferkit.errors import DataError
    from transferkit.registry import get_task

    images = make_image_folder(tmp_path / "images", per_class=3, size=32)
    rows = ["path,label"] + [f"images/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(images.rglob("*.png"))]
    rows += ["images/missing.png,circle", ","]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    config = build_run_config(tiny_config(tmp_path / "data.csv", data={"on_bad_image": "error"}))
    with pytest.raises(DataError, match=r"2 bad input\(s\) with data.on_bad_image: error: .*data.csv:\d+: file not found"):
        get_task("image_classification")(config).datasets()
    # The default, skip, lists them and trains on the rest.
    skipping = build_run_config(tiny_config(tmp_path / "data.csv"))
    data = get_task("image_classification")(skipping).datasets()
    assert len(data.problems) == 2 and data.info["num_train"] + data.info["num_val"] == 9


def test_fault_08_a_symlink_at_the_data_root_is_not_a_class(tmp_path):
    from transferkit.plugins.image_classification.data import list_samples

    images = make_image_folder(tmp_path / "images", per_class=3, size=32)
    os.symlink(".", images / "loop")
    os.symlink(images.parent, images / "parent")
    os.symlink(images / "circle", images / "circle_again")
    samples, problems = list_samples(images)
    assert sorted({s.label for s in samples}) == ["circle", "square", "triangle"]
    assert len(samples) == 9
    reasons = {Path(p["path"]).name: p["reason"] for p in problems}
    assert "inside or above the dataset root" in reasons["loop"] and "inside or above" in reasons["parent"]
    assert "inside or above" in reasons["circle_again"]


def test_fault_03_metric_labels_are_escaped_and_bounded():
    from prometheus_client.parser import text_string_to_metric_families

    from transferkit.serving.metrics import UNKNOWN_MODEL, RequestMetrics

    metrics = RequestMetrics(served_models=lambda: {'m"x', "m"})
    metrics.record('m"x', "predict", "GRPC", "OK", 0.001)
    metrics.record('x"} 1\nfake_metric{a="b', "predict", "GRPC", "NOT_FOUND", 0.001)
    for i in range(2000):
        metrics.record(f"unknown-{i}", "predict", "REST", "NOT_FOUND", 0.002)
    page = metrics.render()
    assert "\nfake_metric" not in page
    families = {f.name: f for f in text_string_to_metric_families(page)}
    counts = {s.labels["model_name"]: s.value for s in families[":tensorflow:serving:request_count"].samples}
    assert counts == {'m"x': 1, UNKNOWN_MODEL: 2001}
    assert len(page) < 10_000


def _self_signed(folder: Path, name: str):
    import subprocess

    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    return cert, key


def _lambda_run(exported, folder: Path) -> Path:
    """A copy of a run whose model.keras holds a Lambda layer (arbitrary code: safe_mode refuses it)."""
    import keras

    run_dir, _ = exported
    bad = folder / "bad_run"
    shutil.copytree(run_dir, bad)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    (bad / "model.keras").unlink()
    model.save(bad / "model.keras")
    return bad


def test_fault_12_bad_inputs_give_one_line_errors_and_exit_2(exported, tmp_path, capsys):
    """The CLI on a table of bad inputs: exit status 2, one line on stderr, no traceback."""
    from transferkit.cli import main

    run_dir, version = exported
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "not_a_preset").mkdir()
    (tmp_path / "not_a_preset" / "notes.txt").write_text("mine")
    cases = [
        (["config", "check", str(tmp_path)], "is a directory; expected a YAML config file"),
        (["config", "check", str(tmp_path / "binary.yaml")], "not a UTF-8 text file"),
        (["train", str(run_dir / "config.yaml"), "--set", f"data.train={tmp_path / 'binary.csv'}", "--output",
          str(tmp_path / "out")], "not a UTF-8 text CSV"),
        (["export", str(run_dir), "--model-base", str(tmp_path / "file"), "--name", "m"],
         "--model-base"),
        (["presets", "import", "efficientnet-lite0", "--to", str(tmp_path / "not_a_preset"), "--force"],
         "not a preset; not replaced even with --force"),
        (["evaluate", str(_lambda_run(exported, tmp_path))], "model.keras: cannot be loaded"),
        (["serve", "--model-base", str(version.parent.parent), "--port", "0", "--rest-port", "-1",
          "--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(tmp_path / "missing.key")],
         "--tls-cert"),
    ]
    if shutil.which("openssl"):
        cert, _ = _self_signed(tmp_path, "one")
        _, other_key = _self_signed(tmp_path, "two")
        cases.append((["serve", "--model-base", str(version.parent.parent), "--port", "0", "--rest-port", "-1",
                       "--tls-cert", str(cert), "--tls-key", str(other_key)], "not a matching PEM certificate"))
    for argv, expected in cases:
        status = main(argv)
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.startswith("transferkit")]
        assert status == 2, (argv, captured.err[-500:])
        assert len(lines) == 1 and expected in lines[0], (argv, captured.err[-500:])
        assert "Traceback" not in captured.err + captured.out
    assert (tmp_path / "not_a_preset" / "notes.txt").read_text() == "mine"


def test_fault_11_malformed_rest_requests_get_400_json_like_tf_serving(exported):
    import json
    import urllib.error
    import urllib.request

    from transferkit.serving.server import EmbeddedServer

    _, version = exported
    server = EmbeddedServer(version.parent.parent, grpc_port=0, rest_port=0, poll_seconds=0.2,
                            max_message_bytes=256 * 1024).start()

    def post(path, body: bytes):
        request = urllib.request.Request(f"{server.rest_address}{path}", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        ok = json.dumps({"instances": [{"b64": ""}], "output_filter": 5}).encode()
        cases = {
            "output_filter": post("/v1/models/m:predict", ok),
            "deep": post("/v1/models/m:predict", b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            "version": post("/v1/models/m/versions/abc:predict", b"{}"),
        }
        for name, (status, body) in cases.items():
            assert status == 400 and isinstance(body.get("error"), str), (name, status, body)
        assert "output_filter" in cases["output_filter"][1]["error"]
        status, body = post("/v1/models/m:predict", b'{"instances": ["' + b"a" * 400_000 + b'"]}')
        assert status == 413 and "larger than" in body["error"]
    finally:
        server.stop()


def test_fault_10_pixel_cap_and_request_batch_cap(exported, tmp_path):
    import io
    import zlib

    import numpy as np
    from PIL import Image

    from transferkit.errors import DataError
    from transferkit.plugins.image_classification.data import load_images, Sample
    from transferkit.serving.client import GrpcClient
    from transferkit.serving.errors import ServingError
    from transferkit.serving.server import EmbeddedServer

    run_dir, version = exported
    # A PNG whose header declares 12000x12000: refused from the header, in training and in the served graph.
    small = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(small, format="PNG")
    data = bytearray(small.getvalue())
    data[16:24] = (12000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid IHDR chunk
    huge = tmp_path / "huge.png"
    huge.write_bytes(bytes(data))
    loaded = load_images([Sample(str(huge), "circle"), *[Sample(str(p), p.parent.name) for p in sorted(
        (run_dir.parent / "images").rglob("*.png"))[:2]]], ["circle", "square", "triangle"], ImagePreprocessor((32, 32)),
        on_bad_image="skip")
    assert loaded.images.shape[0] == 2 and "12000x12000 pixels, more than the cap" in loaded.problems[0]["reason"]
    with pytest.raises(DataError, match="more than the cap"):
        load_images([Sample(str(huge), "circle")], ["circle"], ImagePreprocessor((32, 32)), on_bad_image="error")
    server = EmbeddedServer(version.parent.parent, grpc_port=0, rest_port=None, poll_seconds=0.2,
                            max_request_batch=8).start()
    try:
        with GrpcClient(server.grpc_address, retries=0) as client:
            with pytest.raises(ServingError, match="more pixels than the cap") as error:
                client.predict_images("m", [bytes(data)])
            assert error.value.code.name == "INVALID_ARGUMENT"
            with pytest.raises(ServingError, match="batch of 9, more than this server's maximum request batch of 8"):
                client.predict_images("m", [small.getvalue()] * 9)
            assert client.predict_images("m", [small.getvalue()] * 8)["probabilities"].shape[0] == 8
    finally:
        server.stop()


def test_fault_14_smaller_ones(exported, tmp_path, capsys):
    import numpy as np

    from transferkit.cli import main
    from transferkit.serving.client import GrpcClient
    from transferkit.serving.errors import ServingError
    from transferkit.serving.server import EmbeddedServer

    run_dir, version = exported
    # An empty gRPC batch: a clear INVALID_ARGUMENT, not "Incompatible shapes".
    server = EmbeddedServer(version.parent.parent, grpc_port=0, rest_port=None, poll_seconds=0.2).start()
    try:
        with GrpcClient(server.grpc_address, retries=0) as client:
            with pytest.raises(ServingError, match="'images' is an empty batch"):
                client.predict("m", {"images": np.asarray([], dtype=object)})
    finally:
        server.stop()
    # config check refuses what train would refuse: sizes and freeze plans against the backbone's blocks.
    config = str(run_dir / "config.yaml")
    assert main(["config", "check", config, "--set", "data.image_size=[100000,100000]"]) == 2
    assert "data.image_size: expected two integers in [8, 4096]" in capsys.readouterr().err
    assert main(["config", "check", config, "--set", "stages.0.freeze={top_blocks: 99}"]) == 2
    assert "stages[head].freeze.top_blocks: the backbone" in capsys.readouterr().err
    assert main(["config", "check", config]) == 0
    capsys.readouterr()
    # A changed config on a finished run is called finished, not interrupted.
    assert main(["train", config, "--set", "training.seed=7", "--output", str(run_dir)]) == 2
    assert "holds a finished run with a different config" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_fault_12_plain_rest_client_against_a_tls_server_is_one_line(exported, tmp_path, capsys):
    from transferkit.cli import main
    from transferkit.serving.server import EmbeddedServer, TlsFiles

    run_dir, version = exported
    cert, key = _self_signed(tmp_path, "server")
    server = EmbeddedServer(version.parent.parent, grpc_port=0, rest_port=0, poll_seconds=0.2,
                            tls=TlsFiles(cert, key)).start()
    try:
        plain = server.rest_address.replace("https://", "http://")
        image = str(sorted((run_dir.parent / "images").rglob("*.png"))[0])
        status = main(["predict", "--rest", plain, "--model", "m", image, "--timeout", "10"])
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.startswith("transferkit")]
        assert status == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err[-500:]
        assert "connection failed" in lines[0] or "https" in lines[0], lines[0]
    finally:
        server.stop()
