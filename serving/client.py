"""Clients for TF Serving's gRPC and REST APIs (a real TF Serving or `transferkit serve`).

Example:

```python
from transferkit.serving.client import GrpcClient

with GrpcClient("localhost:8500") as client:
    result = client.predict_images("flowers", [open("rose.jpg", "rb").read()])
    print(result["labels"][0], result["scores"][0])
```
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import grpc
import numpy as np

from transferkit.serving.errors import ServingError
from transferkit.serving.tensors import fill_string_tensor, fill_tensor_proto, to_ndarray

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


def _model_spec(spec, name: str, version: int | None, label: str | None, signature: str | None) -> None:
    if version is not None and label is not None:
        raise ValueError(f"give a version or a label, not both. Received: version={version}, label={label!r}")
    spec.name = name
    if version is not None:
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = label
    if signature:
        spec.signature_name = signature


class GrpcClient:
    """TF Serving's PredictionService and ModelService over gRPC.

    Args:
        address: "host:port".
        timeout: seconds per call.
        retries: extra attempts on UNAVAILABLE, with exponential backoff and jitter.
        root_cert / client_cert / client_key: PEM files for TLS (mutual TLS with a client pair).
    """

    def __init__(self, address: str, timeout: float = 10.0, retries: int = 3, backoff: float = 0.2,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, root_cert: str | Path | None = None,
                 client_cert: str | Path | None = None, client_key: str | Path | None = None,
                 server_name: str | None = None):
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if timeout <= 0:
            raise ValueError(f"GrpcClient: timeout must be > 0. Received: timeout={timeout}")
        if retries < 0:
            raise ValueError(f"GrpcClient: retries must be >= 0. Received: retries={retries}")
        self.address, self.timeout, self.retries, self.backoff = address, timeout, retries, backoff
        self._encoded_inputs: dict[tuple[str, str], str] = {}  # (model, signature) -> its string input
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if root_cert or client_cert:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(root_cert).read_bytes() if root_cert else None,
                private_key=Path(client_key).read_bytes() if client_key else None,
                certificate_chain=Path(client_cert).read_bytes() if client_cert else None)
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request, timeout: float | None):
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self.timeout)
            except grpc.RpcError as error:
                code = error.code()
                if code in RETRYABLE and attempt < self.retries:
                    time.sleep(self.backoff * (2 ** attempt) * (1 + random.random() * 0.1))
                    attempt += 1
                    continue
                raise ServingError(code, error.details() or code.name) from None

    # -- Predict ---------------------------------------------------------------

    def predict(self, model: str, inputs: dict[str, Any], signature: str | None = None, version: int | None = None,
                label: str | None = None, output_filter: Sequence[str] = (), timeout: float | None = None
                ) -> dict[str, np.ndarray]:
        """A raw Predict call: named inputs in, named arrays out.

        An input is a TensorProto, a list of bytes or str (a string batch, written straight into the
        request), or anything numpy takes.
        """
        from tensorflow.core.framework import tensor_pb2
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        _model_spec(request.model_spec, model, version, label, signature)
        for key, value in inputs.items():
            if isinstance(value, tensor_pb2.TensorProto):
                request.inputs[key].CopyFrom(value)
            elif isinstance(value, (list, tuple)) and (not value or isinstance(value[0], (bytes, str))):
                fill_string_tensor(request.inputs[key], value)  # encoded files: no copy through numpy
            else:
                fill_tensor_proto(request.inputs[key], value)
        request.output_filter.extend(output_filter)
        response = self._call(self.prediction.Predict, request, timeout)
        outputs = {key: to_ndarray(proto) for key, proto in response.outputs.items()}
        outputs["model_version"] = response.model_spec.version.value
        return outputs

    def predict_images(self, model: str, images: Sequence[bytes], **kwargs) -> dict[str, Any]:
        """Encoded images (JPEG/PNG/BMP/GIF bytes) through `serving_default`."""
        return _decode_labels(self.predict(model, {"images": list(images)}, **kwargs))

    def predict_encoded(self, model: str, files: Sequence[bytes], signature: str | None = None,
                        **kwargs) -> dict[str, Any]:
        """Encoded files (images, WAV clips) through the one string input of a signature, whatever its name.

        The input's name is read once per model and signature from the server's metadata, so one
        call serves every task that takes encoded files.
        """
        key = (model, signature or "serving_default")
        name = self._encoded_inputs.get(key)
        if name is None:
            from tensorflow.core.framework import types_pb2

            definition = self.metadata(model).signature_def.get(key[1])
            strings = [k for k, v in (definition.inputs.items() if definition else []) if v.dtype == types_pb2.DT_STRING]
            if len(strings) != 1:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"signature {key[1]!r} of model {model!r} has no single string input to send "
                                   f"encoded files to (inputs: {sorted(definition.inputs) if definition else []})")
            name = self._encoded_inputs[key] = strings[0]
        return _decode_labels(self.predict(model, {name: list(files)}, signature=signature, **kwargs))

    def predict_records(self, model: str, files: Sequence[bytes], top_k: int | None = None, **kwargs) -> list[Any]:
        """Encoded files through `serving_default`, decoded by their task: one record per file."""
        return decode_records(self.predict_encoded(model, files, **kwargs), top_k)

    def detect(self, model: str, images: Sequence[bytes], extra_inputs: dict[str, Any] | None = None,
               **kwargs) -> list[Any]:
        """Encoded images through a detector: the records its task decodes (its detections) per image.

        `extra_inputs` feeds the other inputs of a signature, e.g. the
        thresholds of `serving_thresholds` (`signature="serving_thresholds"`).
        """
        inputs = {"images": list(images), **(extra_inputs or {})}
        return decode_records(self.predict(model, inputs, **kwargs))

    def classify_texts(self, model: str, texts: Sequence[str], **kwargs) -> dict[str, Any]:
        """Raw texts through a text classifier's `serving_default` (tokenised in the served graph)."""
        return _decode_labels(self.predict(model, {"text": [t.encode("utf-8") for t in texts]},
                                           **kwargs))

    def predict_pixels(self, model: str, pixels: np.ndarray, **kwargs) -> dict[str, Any]:
        """float32 pixels (N, H, W, 3), 0..255, through `serving_pixels`."""
        kwargs.setdefault("signature", "serving_pixels")
        return _decode_labels(self.predict(model, {"pixels": np.asarray(pixels, np.float32)}, **kwargs))

    # -- metadata and status ---------------------------------------------------

    def metadata(self, model: str, version: int | None = None, label: str | None = None,
                 timeout: float | None = None):
        """The model's SignatureDefMap (`signature_def` metadata field)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        _model_spec(request.model_spec, model, version, label, None)
        request.metadata_field.append("signature_def")
        response = self._call(self.prediction.GetModelMetadata, request, timeout)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return signatures

    def status(self, model: str, version: int | None = None, label: str | None = None,
               timeout: float | None = None) -> list[dict[str, Any]]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        _model_spec(request.model_spec, model, version, label, None)
        response = self._call(self.models.GetModelStatus, request, timeout)
        return [{"version": s.version,
                 "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                 "error_code": s.status.error_code, "error_message": s.status.error_message}
                for s in response.model_version_status]


def decode_records(outputs: dict[str, Any], top_k: int | None = None) -> list[Any]:
    """A served answer as the records of the task that produced it (`Task.decode`): the same records
    `transferkit predict` prints for a run folder, whatever the task."""
    from transferkit.registry import task_for_outputs

    return task_for_outputs(outputs).decode(outputs, top_k=top_k)


def batch_rows(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """REST's row format (one dict per instance) as batched arrays, like a gRPC answer."""
    if not rows:
        return {}
    return {key: np.asarray([row[key] for row in rows], dtype=object if key == "labels" else None) for key in rows[0]}


def _decode_labels(outputs: dict[str, Any]) -> dict[str, Any]:
    labels = outputs.get("labels")
    if labels is not None and labels.dtype == object:
        decoded = np.empty(labels.size, dtype=object)
        decoded[:] = [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in labels.reshape(-1)]
        outputs["labels"] = decoded.reshape(labels.shape)
    return outputs


class RestClient:
    """The same operations over TF Serving's REST API."""

    def __init__(self, base_url: str, timeout: float = 10.0, retries: int = 3, backoff: float = 0.2,
                 root_cert: str | Path | None = None, client_cert: str | Path | None = None,
                 client_key: str | Path | None = None):
        if not base_url.startswith(("http://", "https://")):
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.context = None
        if base_url.startswith("https://"):
            self.context = ssl.create_default_context(cafile=str(root_cert) if root_cert else None)
            if client_cert:
                self.context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)

    def _url(self, model: str, version: int | None, label: str | None, suffix: str = "") -> str:
        url = f"{self.base_url}/v1/models/{model}"
        if version is not None:
            url += f"/versions/{int(version)}"
        elif label is not None:
            url += f"/labels/{label}"
        return url + suffix

    def _request(self, url: str, body: dict | None = None, timeout: float | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        attempt = 0
        while True:
            request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=timeout or self.timeout, context=self.context) as reply:
                    return json.loads(reply.read())
            except urllib.error.HTTPError as error:
                payload = error.read()
                try:
                    message = json.loads(payload).get("error", payload.decode(errors="replace"))
                except ValueError:
                    message = payload.decode(errors="replace")
                code = _grpc_code_for_http(error.code)
                if code in RETRYABLE and attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff * 2 ** attempt)
                    continue
                raise ServingError(code, message) from None
            except (ConnectionError, http.client.HTTPException) as error:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   f"{url}: connection failed ({type(error).__name__}: {error}); "
                                   f"is it an https:// server?") from None
            except urllib.error.URLError as error:
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff * 2 ** attempt)
                    continue
                raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{url}: {error.reason}") from None

    def predict(self, model: str, body: dict[str, Any], version: int | None = None, label: str | None = None,
                timeout: float | None = None) -> dict[str, Any]:
        return self._request(self._url(model, version, label, ":predict"), body, timeout)

    def predict_images(self, model: str, images: Sequence[bytes], signature: str | None = None,
                       **kwargs) -> list[dict[str, Any]]:
        body = {"instances": [{"b64": base64.b64encode(image).decode()} for image in images]}
        if signature:
            body["signature_name"] = signature
        return self.predict(model, body, **kwargs)["predictions"]

    def classify_texts(self, model: str, texts: Sequence[str], signature: str | None = None,
                       **kwargs) -> list[dict[str, Any]]:
        """Raw texts through a text classifier's `serving_default`: one row per text."""
        body = {"instances": [{"text": text} for text in texts]}
        if signature:
            body["signature_name"] = signature
        return self.predict(model, body, **kwargs)["predictions"]

    def predict_records(self, model: str, files: Sequence[bytes], top_k: int | None = None, **kwargs) -> list[Any]:
        """Encoded files through `serving_default`, decoded by their task: one record per file."""
        return decode_records(batch_rows(self.predict_images(model, files, **kwargs)), top_k)

    def detect(self, model: str, images: Sequence[bytes], **kwargs) -> list[Any]:
        """Encoded images through a detector's `serving_default`: the records its task decodes per image."""
        return decode_records(batch_rows(self.predict_images(model, images, **kwargs)))

    def predict_pixels(self, model: str, pixels: np.ndarray, **kwargs) -> list[dict[str, Any]]:
        body = {"signature_name": "serving_pixels", "instances": np.asarray(pixels, np.float32).tolist()}
        return self.predict(model, body, **kwargs)["predictions"]

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        return self._request(self._url(model, version, label, "/metadata"))

    def status(self, model: str, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        return self._request(self._url(model, version, label))


def _grpc_code_for_http(status: int) -> grpc.StatusCode:
    return {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
            503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED,
            429: grpc.StatusCode.RESOURCE_EXHAUSTED, 501: grpc.StatusCode.UNIMPLEMENTED,
            401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
            }.get(status, grpc.StatusCode.UNKNOWN)
