"""Client against server: parity and TF Serving's errors, over gRPC and REST."""

import base64
import json
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf

from transferkit.serving.client import GrpcClient, RestClient
from transferkit.serving.errors import ServingError

MODEL = "shapes"


@pytest.fixture(scope="module")
def client(served):
    with GrpcClient(served.grpc_address, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def rest(served):
    if not served.rest_address:
        pytest.skip("no REST address for this server (set TRANSFERKIT_TFS_REST)")
    return RestClient(served.rest_address, timeout=30)


def test_parity_keras_savedmodel_grpc_rest(trained_run, model_base, client, rest, sample_images):
    from transferkit.runner import load_run

    _, task, model, info = load_run(trained_run)
    pixels = tf.stack([task.preprocessor(info).preprocess(b) for b in sample_images])
    keras_probs = np.asarray(model(pixels))
    saved = tf.saved_model.load(str(model_base / MODEL / "1")).signatures["serving_default"]
    saved_probs = saved(images=tf.constant(sample_images))["probabilities"].numpy()
    grpc_out = client.predict_images(MODEL, sample_images)
    rest_out = rest.predict_images(MODEL, sample_images)
    rest_probs = np.array([row["probabilities"] for row in rest_out])
    for probs in (saved_probs, grpc_out["probabilities"], rest_probs):
        np.testing.assert_allclose(probs, keras_probs, atol=1e-4)
        np.testing.assert_array_equal(probs.argmax(1), keras_probs.argmax(1))
    names = info["class_names"]
    assert list(grpc_out["labels"][:, 0]) == [names[i] for i in keras_probs.argmax(1)]
    assert [row["labels"][0] for row in rest_out] == list(grpc_out["labels"][:, 0])
    assert grpc_out["model_version"] == 1
    # The pixels signature answers the same.
    np.testing.assert_allclose(client.predict_pixels(MODEL, pixels.numpy())["probabilities"], keras_probs,
                               atol=1e-4)
    np.testing.assert_allclose([r["probabilities"] for r in rest.predict_pixels(MODEL, pixels.numpy())],
                               keras_probs, atol=1e-4)


def test_metadata_and_status(client, rest):
    signatures = client.metadata(MODEL)
    assert set(signatures.signature_def) >= {"serving_default", "serving_pixels"}
    assert signatures.signature_def["serving_default"].inputs["images"].dtype == tf.string.as_datatype_enum
    assert client.status(MODEL)[-1]["state"] == "AVAILABLE"
    status = rest.status(MODEL)
    assert status["model_version_status"][-1]["state"] == "AVAILABLE"
    assert status["model_version_status"][-1]["status"]["error_code"] == "OK"
    meta = rest.metadata(MODEL)
    assert meta["model_spec"]["name"] == MODEL
    assert "serving_pixels" in meta["metadata"]["signature_def"]["signature_def"]


def _expect(code, message, call):
    with pytest.raises(ServingError) as error:
        call()
    assert error.value.code == code, error.value
    assert message in error.value.message, error.value.message


def test_grpc_errors_match_tf_serving(client, sample_images):
    image = sample_images[:1]
    _expect(grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)",
            lambda: client.predict_images("nope", image))
    _expect(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({MODEL}, 99)",
            lambda: client.predict_images(MODEL, image, version=99))
    _expect(grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.',
            lambda: client.predict_images(MODEL, image, signature="nope"))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "Signature input alias: images",
            lambda: client.predict(MODEL, {"image": np.array([b"x"], dtype=object)}))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature: 2!=1",
            lambda: client.predict(MODEL, {"images": np.array([b"x"], dtype=object),
                                           "extra": np.zeros(1, np.float32)}))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be string but float is provided",
            lambda: client.predict(MODEL, {"images": np.zeros(1, np.float32)}))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "Unknown image file format",
            lambda: client.predict_images(MODEL, [b"definitely not an image"]))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: nope",
            lambda: client.predict_images(MODEL, image, output_filter=["nope"]))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary",
            lambda: client.predict_images(MODEL, image, label="canary"))
    _expect(grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope",
            lambda: client.status("nope"))


def test_oversized_message_and_timeout(served, client, sample_images):
    if served.server is None:
        pytest.skip("message limits are set on the embedded server only")
    big = [b"\xff\xd8\xff" + bytes(5 * 1024 * 1024)]
    _expect(grpc.StatusCode.RESOURCE_EXHAUSTED, "", lambda: client.predict_images(MODEL, big))
    _expect(grpc.StatusCode.DEADLINE_EXCEEDED, "",
            lambda: client.predict_images(MODEL, sample_images * 16, timeout=1e-4))
    # The server keeps serving after every bad request above.
    assert client.predict_images(MODEL, sample_images[:1])["scores"].shape == (1, 3)


def test_rest_errors_and_formats(served, rest, sample_images):
    _expect(grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)",
            lambda: rest.predict_images("nope", sample_images[:1]))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, 'Serving signature name: "nope" not found in signature def',
            lambda: rest.predict_images(MODEL, sample_images[:1], signature="nope"))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "Unknown image file format",
            lambda: rest.predict(MODEL, {"instances": [{"b64": base64.b64encode(b"junk").decode()}]}))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key",
            lambda: rest.predict(MODEL, {"nothing": 1}))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "Unable to base64 decode",
            lambda: rest.predict(MODEL, {"instances": [{"b64": "%%%"}]}))
    # Columnar format answers with "outputs".
    encoded = [{"b64": base64.b64encode(b).decode()} for b in sample_images[:2]]
    columnar = rest.predict(MODEL, {"inputs": {"images": encoded}})
    assert np.asarray(columnar["outputs"]["probabilities"]).shape == (2, 3)
    request = urllib.request.Request(f"{served.rest_address}/v1/models/{MODEL}:predict", data=b"{not json",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 400
    assert json.loads(error.value.read())["error"].startswith("JSON Parse error")
    assert rest.predict_images(MODEL, sample_images[:1])[0]["scores"][0] > 0


def test_client_retries_unavailable_until_the_server_is_up(model_base, sample_images):
    import socket
    import threading

    from transferkit.serving.server import EmbeddedServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = {}

    def start_late():
        import time

        time.sleep(1.0)
        started["server"] = EmbeddedServer(model_base, grpc_port=port, rest_port=None).start()

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        with GrpcClient(f"127.0.0.1:{port}", timeout=20, retries=8, backoff=0.25) as late_client:
            result = late_client.predict_images(MODEL, sample_images[:1])
        assert result["scores"].shape == (1, 3)
    finally:
        thread.join()
        started["server"].stop()
    with GrpcClient(f"127.0.0.1:{port}", timeout=2, retries=1, backoff=0.01) as dead:
        _expect(grpc.StatusCode.UNAVAILABLE, "", lambda: dead.predict_images(MODEL, sample_images[:1]))


def test_prometheus_metrics_count_requests(served, client, rest, sample_images):
    if served.server is None:
        pytest.skip("checks the embedded server's own counters")
    client.predict_images(MODEL, sample_images[:1])
    rest.predict_images(MODEL, sample_images[:1])
    with pytest.raises(ServingError):
        client.predict_images("nope", sample_images[:1])
    with urllib.request.urlopen(f"{served.rest_address}/monitoring/prometheus/metrics", timeout=30) as reply:
        text = reply.read().decode()
    counts = {line.split(" ")[0]: int(float(line.split(" ")[1])) for line in text.splitlines()
              if line.startswith(":tensorflow:serving:request_count{")}
    assert counts[f':tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}}'] >= 2
    assert counts[':tensorflow:serving:request_count{model_name="_unserved",status="NOT_FOUND"}'] >= 1
    from prometheus_client.parser import text_string_to_metric_families

    latency = {f.name: f for f in text_string_to_metric_families(text)}[":tensorflow:serving:request_latency"]
    assert any(s.name.endswith("_bucket") and s.labels["entrypoint"] == "REST" and s.labels["status"] == "OK"
               and s.labels["le"] == "+Inf" and s.value >= 1 for s in latency.samples)
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text


def test_phone_photo_orientation_is_the_same_in_training_and_serving(trained_run, client, sample_images, tmp_path):
    """A JPEG with EXIF orientation 6: the server sees the pixels training saw."""
    import io

    from PIL import Image

    from transferkit.runner import load_run

    _, task, model, info = load_run(trained_run)
    upright = Image.open(io.BytesIO(sample_images[0])).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)
    pixels = task.preprocessor(info).read_file(str(path))
    expected = np.asarray(model(pixels[None].astype("float32")))
    served = client.predict_images(MODEL, [path.read_bytes()])["probabilities"]
    np.testing.assert_allclose(served, expected, atol=1e-4)
