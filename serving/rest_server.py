"""TF Serving's REST API over a ModelManager, on aiohttp.

    GET  /v1/models/NAME[/versions/N | /labels/L]            model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   signature defs
    POST /v1/models/NAME[/versions/N | /labels/L]:predict    {"instances": [...]} or {"inputs": ...}

Binary strings travel as {"b64": "..."}; errors are {"error": "..."} with the
HTTP status TF Serving maps the canonical code to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from aiohttp import web

from transferkit.serving.errors import ServingError
from transferkit.serving.metrics import PROMETHEUS_PATH
from transferkit.serving.model_manager import ModelManager, run_signature, select_signature

ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<suffix>/metadata|:predict)?$")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Unable to base64 decode") from None
        return {k: _decode_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    return value


def _to_array(value: Any, dtype) -> np.ndarray:
    if dtype.name == "string":
        array = np.array(value, dtype=object)
        flat = array.reshape(-1)
        for item in flat:
            if not isinstance(item, (bytes, str)):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Expected a string or {{\"b64\": ...}} value, received {type(item).__name__}")
        return np.array([i.encode() if isinstance(i, str) else i for i in flat], dtype=object).reshape(array.shape)
    try:
        return np.asarray(value, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError) as error:  # ragged lists, strings, 10**30 into int32
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Failed to process element: {error}") from None


def parse_predict_body(body: dict[str, Any], input_specs: dict[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
    """Request JSON -> input arrays; returns (inputs, row_format)."""
    if ("instances" in body) == ("inputs" in body):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "Missing 'inputs' or 'instances' key" if "instances" not in body else
                           "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists")
    names = sorted(input_specs)
    if "instances" in body:
        instances = _decode_value(body["instances"])
        if not isinstance(instances, list) or not instances:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "'instances' must be a non-empty list")
        if all(isinstance(i, dict) for i in instances):
            columns = {}
            for key in instances[0]:
                columns[key] = [i.get(key) for i in instances]
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"the signature has inputs {names}: each instance must be an object naming them")
        row_format = True
    else:
        inputs = _decode_value(body["inputs"])
        columns = inputs if isinstance(inputs, dict) else ({names[0]: inputs} if len(names) == 1 else None)
        if columns is None:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"the signature has inputs {names}: 'inputs' must be an object naming them")
        row_format = False
    arrays = {}
    for key, value in columns.items():
        spec = input_specs.get(key)
        # An input the signature lacks is named in check_inputs' error; its value is never parsed.
        arrays[key] = _to_array(value, spec.dtype) if spec is not None else np.empty((0,), np.float32)
    return arrays, row_format


def _jsonable(name: str, array: np.ndarray) -> Any:
    """TF Serving's rule: string outputs named *_bytes go as {"b64": ...}, others as text."""
    if array.dtype == object:
        if name.endswith("_bytes"):
            def convert(item):
                return {"b64": base64.b64encode(item).decode()}
        else:
            def convert(item):
                return item.decode("utf-8", errors="replace")
        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def format_outputs(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    if row_format:
        keys = sorted(outputs)
        if len(keys) == 1:
            return {"predictions": _jsonable(keys[0], outputs[keys[0]])}
        rows = len(next(iter(outputs.values())))
        columns = {k: _jsonable(k, outputs[k]) for k in keys}
        return {"predictions": [{k: columns[k][i] for k in keys} for i in range(rows)]}
    if len(outputs) == 1:
        return {"outputs": _jsonable(*next(iter(outputs.items())))}
    return {"outputs": {k: _jsonable(k, v) for k, v in outputs.items()}}


class RestApp:
    """The aiohttp application; blocking TensorFlow work runs in a thread pool."""

    def __init__(self, manager: ModelManager, workers: int = 16, max_body_bytes: int = 64 * 1024 * 1024):
        self.manager = manager
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        self.max_body_bytes = max_body_bytes
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)

    async def dispatch(self, request: web.Request) -> web.Response:
        if request.path == PROMETHEUS_PATH:
            return web.Response(text=self.manager.metrics.render(), content_type="text/plain")
        match = ROUTE.match(request.path)
        try:
            if not match:
                # Under /v1/models/ a path that does not parse (/versions/abc) is a bad request, as in TF Serving.
                code = (grpc.StatusCode.INVALID_ARGUMENT if request.path.startswith("/v1/models/")
                        else grpc.StatusCode.NOT_FOUND)
                raise ServingError(code, f"Malformed request: {request.method} {request.path}")
            name, suffix = match["name"], match["suffix"]
            version = int(match["version"]) if match["version"] else None
            label = match["label"]
            loop = asyncio.get_running_loop()
            if suffix == ":predict":
                if request.method != "POST":
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "predict takes a POST request")
                try:
                    raw = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    return web.json_response({"error": f"request body larger than {self.max_body_bytes} bytes"},
                                             status=413)
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as error:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {error}") from None
                except RecursionError:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "JSON Parse error: nested too deeply") from None
                if not isinstance(body, dict):
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "JSON Value: request is not an object")
                started = time.perf_counter()
                try:
                    result = await loop.run_in_executor(self.pool, self.predict, name, version, label, body)
                except RecursionError:
                    self.manager.metrics.record(name, "predict", "REST", "INVALID_ARGUMENT",
                                                time.perf_counter() - started)
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "request values nested too deeply") from None
                except ServingError as error:
                    self.manager.metrics.record(name, "predict", "REST", error.code.name,
                                                time.perf_counter() - started)
                    raise
                except Exception as error:  # a bug or resource error: report it as JSON, keep serving
                    self.manager.metrics.record(name, "predict", "REST", "INTERNAL", time.perf_counter() - started)
                    raise ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}") from error
                self.manager.metrics.record(name, "predict", "REST", "OK", time.perf_counter() - started)
            elif request.method != "GET":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{request.method} is not supported here")
            elif suffix == "/metadata":
                result = await loop.run_in_executor(self.pool, self.metadata, name, version, label)
            else:
                result = self.status(name, version, label)
            return web.json_response(result)
        except ServingError as error:
            return web.json_response({"error": error.message}, status=error.http_status)

    def predict(self, name, version, label, body) -> dict[str, Any]:
        loaded = self.manager.resolve(name, version, label)
        signature_name = body.get("signature_name") or "serving_default"
        if not isinstance(signature_name, str):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "'signature_name' key must be a string value.")
        if signature_name not in loaded.signatures:
            # REST checks the signature itself, with its own wording.
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f'Serving signature name: "{signature_name}" not found in signature def')
        signature = select_signature(loaded, signature_name)
        output_filter = body.get("output_filter", ())
        if not isinstance(output_filter, (list, tuple)) or not all(isinstance(k, str) for k in output_filter):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"'output_filter' must be a list of output names; received {output_filter!r:.60}")
        inputs, row_format = parse_predict_body(body, signature.input_specs)
        outputs = run_signature(signature, inputs, output_filter,
                                loaded.feed_names(signature.name), self.manager.max_request_batch)
        return format_outputs(outputs, row_format)

    def metadata(self, name, version, label) -> dict[str, Any]:
        from google.protobuf import json_format

        loaded = self.manager.resolve(name, version, label)
        signatures = {k: json_format.MessageToDict(v, preserving_proto_field_name=True,
                                                   always_print_fields_with_no_presence=True)
                      for k, v in loaded.signature_defs.items()}
        return {"model_spec": {"name": loaded.name, "signature_name": "", "version": str(loaded.version)},
                "metadata": {"signature_def": {"signature_def": signatures}}}

    def status(self, name, version, label) -> dict[str, Any]:
        if label:
            version = self.manager.resolve(name, None, label).version
        statuses = self.manager.status(name, version)
        return {"model_version_status": [
            {"version": str(s.version), "state": s.state,
             "status": {"error_code": _code(s.error_code).name if s.error_code else "OK",
                        "error_message": s.error_message}}
            for s in statuses]}


def _code(value: int):
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
