"""Versions, warmup, batching, TLS and shutdown of `transferkit serve`."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from transferkit.serving.client import GrpcClient, RestClient
from transferkit.serving.errors import ServingError
from transferkit.serving.export import export_run
from transferkit.serving.model_manager import BatchingOptions
from transferkit.serving.server import EmbeddedServer
from transferkit.serving.warmup import warmup_path

pytestmark = pytest.mark.timeout(600)


def _copy_version(model_base, tmp_path, name="m", version=1):
    target = tmp_path / "base" / name / str(version)
    shutil.copytree(model_base / "shapes" / "1", target)
    return tmp_path / "base"


def test_new_version_is_picked_up_without_dropping_requests(trained_run, model_base, tmp_path, sample_images):
    base = _copy_version(model_base, tmp_path)
    server = EmbeddedServer(base, grpc_port=0, rest_port=None, poll_seconds=0.1).start()
    failures, versions, stop = [], set(), threading.Event()

    def hammer():
        with GrpcClient(server.grpc_address, timeout=30, retries=0) as client:
            while not stop.is_set():
                try:
                    versions.add(int(client.predict_images("m", sample_images[:1])["model_version"]))
                except ServingError as error:
                    failures.append(error)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        export_run(trained_run, base, "m")  # version 2, written atomically while serving
        server.manager.wait_until_available("m", 2, timeout=60)
        deadline = time.monotonic() + 30
        while 2 not in versions and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        statuses = {s.version: s.state for s in server.manager.status("m")}
        server.stop()
    assert not failures, failures[:3]
    assert versions == {1, 2}
    assert statuses == {1: "END", 2: "AVAILABLE"}


def test_warmup_runs_before_available(model_base, tmp_path):
    base = _copy_version(model_base, tmp_path)
    # A warmup request for a signature the model does not have fails the load, as in TF Serving.
    from transferkit.serving.warmup import write_warmup_file

    path = warmup_path(base / "m" / "1")
    path.unlink()
    write_warmup_file(base / "m" / "1", "m", [{"images": b"not an image"}])
    server = EmbeddedServer(base, grpc_port=0, rest_port=None).start()
    try:
        (status,) = server.manager.status("m")
        assert status.state == "END" and status.error_code != 0
        assert "Unknown image file format" in status.error_message
        with pytest.raises(ServingError, match="Servable not found for request: Latest\\(m\\)"):
            server.manager.resolve("m")
    finally:
        server.stop()


def test_models_config_policies_and_labels(model_base, tmp_path, sample_images):
    base = _copy_version(model_base, tmp_path)
    shutil.copytree(base / "m" / "1", base / "m" / "2")
    (tmp_path / "models.config").write_text(f"""
model_config_list {{
  config {{
    name: "m"
    base_path: "{base / 'm'}"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
}}""")
    server = EmbeddedServer(tmp_path / "models.config", grpc_port=0, rest_port=None).start()
    try:
        with GrpcClient(server.grpc_address) as client:
            assert client.predict_images("m", sample_images[:1])["model_version"] == 2
            assert client.predict_images("m", sample_images[:1], label="stable")["model_version"] == 1
            assert client.predict_images("m", sample_images[:1], version=1)["model_version"] == 1
            assert [s["state"] for s in client.status("m")] == ["AVAILABLE", "AVAILABLE"]
    finally:
        server.stop()


def test_server_side_batching_gives_the_same_answers(model_base, tmp_path, sample_images):
    base = _copy_version(model_base, tmp_path)
    server = EmbeddedServer(base, grpc_port=0, rest_port=None,
                            batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=20000)).start()
    try:
        with GrpcClient(server.grpc_address, timeout=60) as client:
            expected = client.predict_images("m", sample_images)["probabilities"]
            results = {}

            def one(i):
                results[i] = client.predict_images("m", [sample_images[i % len(sample_images)]])["probabilities"]

            threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for i, probs in results.items():
            np.testing.assert_allclose(probs[0], expected[i % len(sample_images)], atol=1e-5)
        assert len(results) == 12
    finally:
        server.stop()


def _self_signed(tmp_path):
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_grpc_and_rest(model_base, tmp_path, sample_images):
    from transferkit.serving.server import TlsFiles

    cert, key = _self_signed(tmp_path)
    base = _copy_version(model_base, tmp_path)
    server = EmbeddedServer(base, grpc_port=0, rest_port=0, tls=TlsFiles(cert, key)).start()
    try:
        with GrpcClient(f"localhost:{server.grpc_port}", root_cert=cert) as client:
            assert client.predict_images("m", sample_images[:1])["scores"].shape == (1, 3)
        rest = RestClient(f"https://localhost:{server.rest_port}", root_cert=cert)
        assert rest.predict_images("m", sample_images[:1])[0]["labels"]
        with GrpcClient(f"localhost:{server.grpc_port}", timeout=5, retries=0) as plain:
            with pytest.raises(ServingError):
                plain.predict_images("m", sample_images[:1])
    finally:
        server.stop()


def test_cli_serve_answers_then_stops_gracefully_on_sigterm(model_base, tmp_path, sample_images):
    base = _copy_version(model_base, tmp_path)
    image = tmp_path / "query.png"
    image.write_bytes(sample_images[0])
    process = subprocess.Popen([sys.executable, "-m", "transferkit", "serve", "--model-base", str(base),
                                "--port", "0", "--rest-port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving m: gRPC 127.0.0.1:"), line + process.stderr.read()[-3000:]
        address = line.split("gRPC ")[1].split(",")[0]
        rest_url = line.split("REST ")[1].strip()
        answers = {}
        for flag, target in (("--server", address), ("--rest", rest_url)):
            result = subprocess.run([sys.executable, "-m", "transferkit", "predict", flag, target, "--model", "m",
                                     str(image), "--top-k", "2"], capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr[-2000:]
            lines = result.stdout.splitlines()
            assert len(lines) == 4 and lines[2].split()[1] in {"circle", "square", "triangle"}
            answers[flag] = lines[1:]
        assert result.stdout.splitlines()[0] == f"# REST {rest_url}, m"
        assert answers["--server"] == answers["--rest"]  # same labels and scores either way
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_rewritten_version_is_reloaded_and_failed_one_retried(trained_run, model_base, tmp_path, sample_images):
    base = _copy_version(model_base, tmp_path)
    server = EmbeddedServer(base, grpc_port=0, rest_port=None, poll_seconds=0.1).start()
    try:
        # A half-copied version 2 (no variables yet) fails to load...
        partial = base / "m" / "2"
        partial.mkdir()
        shutil.copy(model_base / "shapes" / "1" / "saved_model.pb", partial / "saved_model.pb")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = {s.version: s for s in server.manager.status("m")}
            if 2 in status and status[2].state == "END":
                break
            time.sleep(0.05)
        assert status[2].state == "END" and status[2].error_code != 0
        assert server.manager.resolve("m").version == 1  # still serving version 1
        # ...and is retried once the copy completes.
        shutil.rmtree(partial)
        shutil.copytree(model_base / "shapes" / "1", tmp_path / "staging")
        os.replace(tmp_path / "staging", partial)
        server.manager.wait_until_available("m", 2, timeout=60)
        first = server.manager.resolve("m", 2)
        # export --force rewrites version 2 in place: the server loads the new files.
        export_run(trained_run, base, "m", version=2, force=True)
        deadline = time.monotonic() + 60
        while server.manager.resolve("m", 2) is first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.manager.resolve("m", 2) is not first
        with GrpcClient(server.grpc_address) as client:
            assert client.predict_images("m", sample_images[:1])["model_version"] == 2
    finally:
        server.stop()
