"""Loading and versioning SavedModels the way TF Serving does.

`ModelManager` watches model base folders (from `--model-base` or a
`models.config`), loads the versions its version policy asks for (the
latest by default), replays each version's warmup requests before marking it
AVAILABLE, and swaps versions in while requests keep being served. Requests
are resolved through `ModelSpec`s into a `LoadedVersion` and run by
`predict()`, which raises `ServingError` with TF Serving's status codes and
messages for anything a client got wrong.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from transferkit.serving.batching import BatchingOptions, BatchScheduler, QueueFullError
from transferkit.serving.errors import ServingError
from transferkit.serving.metrics import PHASES
from transferkit.serving.saved_models import list_versions, load_op_libraries, read_saved_model

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One served model: its name, base folder, version policy and labels."""

    name: str
    base_path: Path
    policy: str = "latest"  # latest | all | specific
    latest_count: int = 1
    specific_versions: tuple[int, ...] = ()
    version_labels: dict[str, int] = dataclasses.field(default_factory=dict)

    def wanted(self, available: list[int]) -> list[int]:
        if self.policy == "all":
            return list(available)
        if self.policy == "specific":
            return [v for v in available if v in self.specific_versions]
        return available[-self.latest_count:]


class Signature:
    """A callable signature with its input specs and, when batching is on, its batch scheduler.

    `run` takes and returns numpy arrays: batching concatenates requests
    before a single conversion to tensors, and splits the outputs after.
    """

    def __init__(self, name: str, function, batching: BatchingOptions | None):
        self.name = name
        self.function = function
        self.input_specs = dict(function.structured_input_signature[1])
        self.output_names = sorted(function.structured_outputs)
        self.options = batching if batching and self.batchable else None
        self.scheduler = None
        if self.options:
            import tensorflow as tf

            self.scheduler = BatchScheduler(self.call, self.options, isolate=(tf.errors.InvalidArgumentError, ValueError, TypeError),
                                            name=f"batch-{name}")

    @property
    def batchable(self) -> bool:
        """Every input has an open batch dimension (a scalar option such as a threshold cannot be stacked)."""
        return all(spec.shape.rank and spec.shape[0] is None for spec in self.input_specs.values())

    def call(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run of the graph, unbatched."""
        import tensorflow as tf

        start = time.perf_counter()
        tensors = {k: tf.constant(v, dtype=self.input_specs[k].dtype) for k, v in inputs.items()}
        converted = time.perf_counter()
        outputs = self.function(**tensors)
        ran = time.perf_counter()
        arrays = {k: v.numpy() for k, v in outputs.items()}
        PHASES.add("to_tensor", converted - start)
        PHASES.add("graph", ran - converted)
        PHASES.add("from_tensor", time.perf_counter() - ran)
        return arrays

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.scheduler is None:
            return self.call(inputs)
        try:
            return self.scheduler.run(inputs)
        except QueueFullError as error:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, str(error)) from None

    def warm_up_batches(self, inputs: dict[str, np.ndarray], done: set[int] = frozenset()) -> list[int]:
        """Runs the graph once at each batch size the scheduler will form (but those `done`), from one
        request's rows; returns the sizes run."""
        if self.options is None:
            return []
        sizes = [size for size in self.options.warmup_sizes() if size not in done]
        for size in sizes:
            self.call({k: np.resize(v, (size, *v.shape[1:])) for k, v in inputs.items()})
        return sizes

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()


class LoadedVersion:
    """A SavedModel version that is (or is becoming) AVAILABLE."""

    def __init__(self, name: str, version: int, path: Path, batching: BatchingOptions | None):
        import tensorflow as tf

        from transferkit.serving.export import check_file_digests

        self.name, self.version, self.path = name, version, path
        self.stamp = version_stamp(path)
        check_file_digests(path)  # a damaged transferkit export fails to load with the file's name
        load_op_libraries(path)
        self.module = tf.saved_model.load(str(path))
        self.signatures = {key: Signature(key, fn, batching) for key, fn in self.module.signatures.items()}
        self.signature_defs = _read_signature_defs(path)
        self.warmed_batch_sizes: dict[str, list[int]] = {}

    def feed_names(self, signature: str) -> dict[str, str]:
        definition = self.signature_defs.get(signature)
        return {k: v.name for k, v in definition.inputs.items()} if definition else {}

    def warm_up(self) -> int:
        from transferkit.serving.warmup import read_warmup_requests

        requests = read_warmup_requests(self.path)
        first_inputs: dict[str, dict[str, np.ndarray]] = {}
        replayed_sizes: dict[str, set[int]] = {}
        for request in requests:
            run_predict(self, request)
            key = request.model_spec.signature_name or "serving_default"
            if key in self.signatures:
                inputs = request_arrays(request)
                first_inputs.setdefault(key, inputs)
                replayed_sizes.setdefault(key, set()).update(len(v) for v in inputs.values() if np.ndim(v))
        # A batch size that has never run pays for oneDNN's kernel set-up on its first call (2-3x the
        # time): with batching, each size the scheduler can form runs now, not on a user's request.
        self.warmed_batch_sizes = {key: self.signatures[key].warm_up_batches(inputs, replayed_sizes[key])
                                   for key, inputs in first_inputs.items()}
        return len(requests)

    def close(self) -> None:
        for signature in self.signatures.values():
            signature.close()


def version_stamp(path: Path) -> tuple:
    """Changes when any file of a version folder changes (export --force, a slow copy finishing).

    Every file counts, not only saved_model.pb and the variables index: a
    version copied in piece by piece fails to load until its last variables
    shard arrives, and must be retried then.
    """
    stamps = []
    for root, _, files in os.walk(path):
        for name in sorted(files):
            file = Path(root) / name
            try:
                info = file.stat()
            except FileNotFoundError:
                continue
            stamps.append((str(file.relative_to(path)), info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(sorted(stamps))


def _read_signature_defs(path: Path):
    proto = read_saved_model(path)
    for meta_graph in proto.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
    return {}


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error_code: int = 0
    error_message: str = ""


# Requests with a larger first dimension are refused: each element may be an image to decode.
DEFAULT_MAX_REQUEST_BATCH = 256


class ModelManager:
    """Serves the versions of a set of models and keeps them current."""

    def __init__(self, sources: list[ModelSource], batching: BatchingOptions | None = None,
                 poll_seconds: float = 1.0, max_request_batch: int = DEFAULT_MAX_REQUEST_BATCH):
        if max_request_batch < 1:
            raise ValueError(f"max_request_batch must be >= 1; received max_request_batch={max_request_batch}")
        self.max_request_batch = max_request_batch
        self.sources = {s.name: s for s in sources}
        self.batching = batching
        self.poll_seconds = poll_seconds
        self._versions: dict[str, dict[int, LoadedVersion]] = {s.name: {} for s in sources}
        self._status: dict[str, dict[int, VersionStatus]] = {s.name: {} for s in sources}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed_stamps: dict[tuple[str, int], tuple] = {}
        from transferkit.serving.metrics import RequestMetrics

        self.metrics = RequestMetrics(served_models=lambda: self.sources.keys())

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "ModelManager":
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        with self._lock:
            loaded = [v for versions in self._versions.values() for v in versions.values()]
        for version in loaded:
            version.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # a bad version must not stop the poller
                logger.exception("model refresh failed")

    def refresh(self) -> None:
        """Loads versions the policy now wants and unloads the ones it no longer does."""
        for source in self.sources.values():
            available = _numeric_versions(source.base_path)
            wanted = source.wanted(available)
            for version in wanted:
                loaded = self._versions[source.name].get(version)
                stamp = version_stamp(source.base_path / str(version))
                if loaded is not None and loaded.stamp == stamp:
                    continue
                if self._failed_stamps.get((source.name, version)) == stamp:
                    continue  # failed with these very files; wait until they change
                # New, rewritten in place, or failed before and changed since: (re)load.
                self._load(source, version)
            loaded_wanted = [v for v in wanted if v in self._versions[source.name]]
            for version in list(self._versions[source.name]):
                # Keep an old version until a newer wanted one is AVAILABLE: no gap in service.
                if version not in wanted and loaded_wanted:
                    with self._lock:
                        gone = self._versions[source.name].pop(version, None)
                        self._status[source.name][version].state = "END"
                    if gone is not None:
                        gone.close()

    def _load(self, source: ModelSource, version: int) -> None:
        path = source.base_path / str(version)
        stamp = version_stamp(path)
        status = VersionStatus(version, "LOADING")
        with self._lock:
            # A version being reloaded keeps serving its old copy meanwhile.
            if version not in self._versions[source.name]:
                self._status[source.name][version] = status
        try:
            loaded = LoadedVersion(source.name, version, path, self.batching)
            count = loaded.warm_up()
        except Exception as error:
            status.state, status.error_code = "END", grpc.StatusCode.UNKNOWN.value[0]
            status.error_message = f"Failed to load {path}: {type(error).__name__}: {error}"
            logger.error("%s", status.error_message)
            self._failed_stamps[(source.name, version)] = stamp
            with self._lock:
                if version not in self._versions[source.name]:
                    self._status[source.name][version] = status
            return
        self._failed_stamps.pop((source.name, version), None)
        with self._lock:
            replaced = self._versions[source.name].get(version)
            self._versions[source.name][version] = loaded
            status.state = "AVAILABLE"
            self._status[source.name][version] = status
        if replaced is not None:
            replaced.close()
        logger.info("model %s version %d AVAILABLE (%d warmup requests replayed)", source.name, version, count)

    # -- lookups ---------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        if not name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        with self._lock:
            versions = self._versions.get(name)
            source = self.sources.get(name)
        if label:
            if source is None or label not in source.version_labels:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: {label}")
            version = source.version_labels[label]
        if version is not None:
            if not versions or version not in versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({name}, {version})")
            return versions[version]
        if not versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return versions[max(versions)]

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        with self._lock:
            statuses = self._status.get(name)
            if statuses is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
            if version is not None:
                if version not in statuses:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find version {version} of model {name}")
                return [dataclasses.replace(statuses[version])]
            return [dataclasses.replace(s) for _, s in sorted(statuses.items())]

    def wait_until_available(self, name: str, version: int | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.resolve(name, version)
                return
            except ServingError:
                time.sleep(0.05)
        raise TimeoutError(f"model {name} version {version or 'latest'} not AVAILABLE after {timeout}s")


def _numeric_versions(base: Path) -> list[int]:
    return list_versions(base, complete_only=True)


# -- running a PredictRequest ---------------------------------------------------------


def select_signature(loaded: LoadedVersion, signature_name: str) -> Signature:
    key = signature_name or "serving_default"
    signature = loaded.signatures.get(key)
    if signature is None:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
    return signature


# TensorFlow's DataTypeString names, used in its argument-type messages.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}


def _type_name(dtype) -> str:
    return _TF_TYPE_NAMES.get(dtype.name, dtype.name)


def check_inputs(signature: Signature, inputs: dict[str, np.ndarray],
                 feed_names: dict[str, str] | None = None, max_batch: int | None = None) -> dict[str, Any]:
    """Validates input names and dtypes against the signature, as TF Serving does, and the batch size.

    Returns the inputs as numpy arrays in the signature's order.
    """
    import tensorflow as tf

    for key, value in inputs.items():
        shape, spec = np.shape(value), signature.input_specs.get(key)
        if shape and shape[0] == 0 and spec is not None and spec.shape.rank:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input {key!r} is an empty batch; expected at least one example")
    if max_batch is not None:
        for key, value in inputs.items():
            shape = np.shape(value)
            if shape and shape[0] > max_batch:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {key!r} has a batch of {shape[0]}, more than this server's maximum "
                                   f"request batch of {max_batch} (transferkit serve --max-request-batch)")

    expected = sorted(signature.input_specs)
    sent = sorted(inputs)
    if len(sent) != len(expected):
        extra = sorted(set(sent) - set(expected))
        missing = sorted(set(expected) - set(sent))
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sent)}}}) != "
            f"len({{{','.join(expected)}}}). Sent extra: {{{','.join(extra)}}}. "
            f"Missing but required: {{{','.join(missing)}}}.")
    for alias in expected:
        if alias not in inputs:
            feed = (feed_names or {}).get(alias, alias)
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Signature input alias: {alias}(feed name: {feed}) not found in request and no default value "
                f"provided. Inputs expected to be in the request {{{','.join(sent)}}}, or default input alias "
                f"set: ")
    tensors = {}
    for index, key in enumerate(expected):
        spec = signature.input_specs[key]
        value = inputs[key]
        dtype = tf.string if value.dtype == object or value.dtype.kind in "SU" else tf.as_dtype(value.dtype)
        if dtype != spec.dtype:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expects arg[{index}] to be {_type_name(spec.dtype)} but {_type_name(dtype)} "
                               f"is provided")
        if not spec.shape.is_compatible_with(value.shape):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input {key} has shape {list(value.shape)}, the signature expects "
                               f"{spec.shape.as_list()}")
        tensors[key] = value
    return tensors


# The longest a dimension that the signature leaves open past the batch (a text's token count) may be.
MAX_VARIABLE_DIM = 8192


def check_declared_shape(key: str, dims: list[int], spec_shape, max_batch: int | None) -> None:
    """Checks a request tensor's declared shape against the signature before anything is allocated.

    A TensorProto may declare a huge shape with a single value that broadcasts to it (a few bytes
    on the wire, gigabytes in memory), so the rank, the fixed sizes, the batch and every open size
    are checked on the declaration alone.
    """
    expected = spec_shape.as_list() if spec_shape.rank is not None else None

    def refuse(reason: str):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key} has shape {dims}, the signature expects {expected}: {reason}")

    if any(d < 0 for d in dims):
        refuse("sizes must be >= 0")
    if expected is not None:
        if len(dims) != len(expected):
            refuse(f"rank {len(dims)} instead of {len(expected)}")
        for axis, (size, want) in enumerate(zip(dims, expected)):
            if want is not None and size != want:
                refuse(f"dimension {axis} is {size}, expected {want}")
            if want is None and axis > 0 and size > MAX_VARIABLE_DIM:
                refuse(f"dimension {axis} is {size}, more than this server's limit of {MAX_VARIABLE_DIM}")
    elif int(np.prod(dims, dtype=np.float64)) > MAX_VARIABLE_DIM * (max_batch or 1):
        refuse("more elements than this server accepts for an input of open shape")
    if max_batch is not None and dims and dims[0] > max_batch:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key!r} has a batch of {dims[0]}, more than this server's maximum "
                           f"request batch of {max_batch} (transferkit serve --max-request-batch)")


def op_error_message(error) -> str:
    """The user-facing line of a TensorFlow op error (no graph-execution preamble)."""
    text = getattr(error, "message", None) or str(error)
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or line[0] in " \t" or stripped.startswith(
                ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")):
            continue
        return stripped.split(" [Op:")[0].split("\t [[")[0]
    return text.strip()


def run_signature(signature: Signature, inputs: dict[str, np.ndarray], output_filter=(),
                  feed_names: dict[str, str] | None = None, max_batch: int | None = None) -> dict[str, Any]:
    import tensorflow as tf

    start = time.perf_counter()
    tensors = check_inputs(signature, inputs, feed_names, max_batch)
    PHASES.add("check", time.perf_counter() - start)
    for key in output_filter:
        if key not in signature.output_names:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {key} Outputs expected to be in "
                               f"the set {{{','.join(signature.output_names)}}}.")
    try:
        outputs = signature.run(tensors)
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, op_error_message(error)) from None
    keys = list(output_filter) or signature.output_names
    return {k: outputs[k] for k in keys}


def run_predict(loaded: LoadedVersion, request, max_batch: int | None = None):
    """Runs a PredictRequest on a loaded version; returns a PredictResponse."""
    from tensorflow_serving.apis import predict_pb2

    from transferkit.serving.tensors import fill_tensor_proto

    signature = select_signature(loaded, request.model_spec.signature_name)
    start = time.perf_counter()
    inputs = request_arrays(request, signature, max_batch)
    PHASES.add("decode", time.perf_counter() - start)
    outputs = run_signature(signature, inputs, list(request.output_filter), loaded.feed_names(signature.name),
                            max_batch)
    start = time.perf_counter()
    response = predict_pb2.PredictResponse()
    response.model_spec.name = loaded.name
    response.model_spec.version.value = loaded.version
    response.model_spec.signature_name = signature.name
    for key, value in outputs.items():
        fill_tensor_proto(response.outputs[key], value)
    PHASES.add("encode", time.perf_counter() - start)
    return response


def request_arrays(request, signature: Signature | None = None, max_batch: int | None = None) -> dict[str, np.ndarray]:
    """A PredictRequest's inputs as numpy arrays, each declared shape checked before it is allocated."""
    from transferkit.serving.tensors import to_ndarray

    inputs = {}
    for key, proto in request.inputs.items():
        if signature is not None:
            spec = signature.input_specs.get(key)
            if spec is None:  # named in the error check_inputs raises; never parsed
                inputs[key] = np.empty((0,), np.float32)
                continue
            check_declared_shape(key, [d.size for d in proto.tensor_shape.dim], spec.shape, max_batch)
        try:
            inputs[key] = to_ndarray(proto)
        except Exception:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {key}") from None
    return inputs
