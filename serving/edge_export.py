"""Export for phones and other runtimes: LiteRT (TFLite) float32/float16/dynamic/int8, and ONNX.

The exported file holds the model from pixels to probabilities; what the
runtimes here cannot run stays with the app, said in a signature file next to
the model (`FILE.signature.json`): decode the image, prepare it with the run's
`ImagePreprocessor` (its settings are in the file), feed NHWC RGB pixels
0..255 (as float32, or as uint8/int8 with the file's quantisation for int8),
read the class probabilities in `labels` order. LiteRT's Python interpreters
have no image decoder (`DecodeImage` needs the Flex delegate, which neither
`ai-edge-litert` nor TensorFlow's interpreter ships), so decoding in the graph
would make a file no one here can check.

Every file is scored on the run's validation set before it is kept: the Keras
model's accuracy, the file's, the drop in points and the largest probability
difference, written to `FILE.export_report.json` and returned. A drop beyond
the tolerance (default 0.5 points for float16, 1.5 for int8, 0.1 otherwise)
fails the export with the numbers, and no file is left behind.

Conversion goes through a SavedModel written by Keras' `ExportArchive`:
`TFLiteConverter.from_concrete_functions` with a Keras 3 model as its
trackable converts without error but without the weights (every output NaN),
and `tf2onnx.convert.from_function` turns a `Normalization` layer's constants
into extra graph inputs. See docs/edge-export.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_path, atomic_write_text, file_sha256
from transferkit.logs import held_chatter, held_tensorflow_notes
from transferkit.version import __version__

FORMATS = ("tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# Largest accepted accuracy drop, in points, by quantisation (the defaults).
DEFAULT_MAX_DROP = {"none": 0.1, "float16": 0.5, "dynamic": 1.5, "int8": 1.5}
ONNX_OPSET = 17


class EdgeExportError(TransferkitError):
    """An edge export that cannot be made, or whose accuracy drop is beyond the tolerance."""


@dataclasses.dataclass(frozen=True)
class EdgeExportOptions:
    """What `export_edge` makes. `max_drop` None: the quantisation's default tolerance (points of accuracy)."""

    format: str = "tflite"
    quantize: str = "none"
    calibration_images: int = 200
    io_type: str = "uint8"  # int8 files: the type of the input and output tensors (uint8 or int8)
    max_drop: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.format not in FORMATS:
            raise EdgeExportError(f"--format: expected one of {', '.join(FORMATS)}. Received: {self.format!r}")
        if self.quantize not in QUANTIZATIONS:
            raise EdgeExportError(f"--quantize: expected one of {', '.join(QUANTIZATIONS)}. "
                                  f"Received: {self.quantize!r}")
        if self.format == "onnx" and self.quantize != "none":
            raise EdgeExportError(f"--quantize {self.quantize}: ONNX files are exported in float32 only. "
                                  f"Received: --format onnx --quantize {self.quantize}")
        if self.io_type not in ("uint8", "int8"):
            raise EdgeExportError(f"--io-type: expected uint8 or int8. Received: {self.io_type!r}")
        if self.calibration_images < 1:
            raise EdgeExportError(f"--calibration-images: expected an integer >= 1. "
                                  f"Received: {self.calibration_images}")
        if self.max_drop is not None and not self.max_drop >= 0:
            raise EdgeExportError(f"--max-drop: expected a number of points >= 0. Received: {self.max_drop}")

    @property
    def tolerance(self) -> float:
        return DEFAULT_MAX_DROP[self.quantize] if self.max_drop is None else float(self.max_drop)


def export_edge(run_dir: str | os.PathLike, output: str | os.PathLike, options: EdgeExportOptions,
                force: bool = False) -> dict[str, Any]:
    """Converts a finished run's model, scores the file on the validation set, keeps it if within tolerance.

    An existing `output` (or its signature or report) is replaced only with `force`, and only when it is
    an earlier transferkit export: its signature file records its sha256.
    """
    from transferkit.runner import load_run

    run_dir, output = Path(run_dir), Path(output)
    check_replaceable(output, options.format, force)
    config, task, model, info = load_run(run_dir)
    preprocessor = task.preprocessor(info)
    edge = task.edge_model(model, info)
    if edge is None:
        raise EdgeExportError(f"{run_dir}: task {config.task!r} has no edge export (Task.edge_model); exported "
                              f"today: image, audio and text classification, object detection")
    task_data = _task_data(task, config)
    started = time.perf_counter()
    with _writing(output), tempfile.TemporaryDirectory() as scratch:
        saved_model = Path(scratch) / "saved_model"
        _write_saved_model(saved_model, edge)
        with atomic_path(output, suffix=output.suffix) as tmp:
            if options.format == "tflite":
                calibration = None
                if options.quantize == "int8":  # the first pass over a data pipeline logs oneDNN notes
                    with held_tensorflow_notes():
                        calibration = _calibration_inputs(task_data.train_plain, options, edge)
                tmp.write_bytes(_convert_tflite(saved_model, options, calibration, edge))
                runner = _LiteRtRunner(tmp)
            else:
                _convert_onnx(tmp, edge)
                runner = _OnnxRunner(tmp, input_names=edge.input_names)
            report = _score(edge, runner, task_data)
            saved_model_bytes = sum(p.stat().st_size for p in saved_model.rglob("*") if p.is_file())
            report.update(format=options.format, quantize=options.quantize, file=str(output.resolve()),
                          bytes=tmp.stat().st_size, saved_model_bytes=saved_model_bytes,
                          tolerance_points=options.tolerance, runtime=runner.name,
                          seconds=round(time.perf_counter() - started, 1), input=runner.input_facts(edge.input_notes))
            if options.format == "tflite" and options.quantize == "int8":
                report["float_ops"] = _float_ops(tmp.read_bytes())
            if report["drop_points"] > options.tolerance:
                metric = report["metric"]
                raise EdgeExportError(
                    f"{output}: {metric} {report['exported'][metric]:.4f} against the Keras model's "
                    f"{report['keras'][metric]:.4f} on {report['examples']} validation examples, a drop of "
                    f"{report['drop_points']:.2f} points, beyond the tolerance of {options.tolerance} "
                    f"(--max-drop); nothing was written")
    signature = {"transferkit": SIGNATURE_KIND, "version": __version__, "task": config.task,
                 "format": options.format, "quantize": options.quantize, "file": output.name,
                 "sha256": file_sha256(output), "bytes": output.stat().st_size,
                 "input": runner.input_facts(edge.input_notes), "output": runner.output_facts(),
                 "labels": list(info["class_names"]),
                 "preprocessor": preprocessor.get_config() if preprocessor is not None else None,
                 "app_steps": [*(preprocessor.edge_steps if preprocessor is not None else ()),
                               *edge.output_steps]}
    with _writing(output):
        atomic_write_text(_sibling(output, ".signature.json"), json.dumps(signature, indent=2) + "\n")
        atomic_write_text(_sibling(output, ".export_report.json"), json.dumps(report, indent=2) + "\n")
    return report


@contextlib.contextmanager
def _writing(output: Path):
    """Turns a full disk, a file-size limit or an unwritable folder into one error naming `output`; the
    temporary files are gone by then (atomic_path and the scratch folder remove theirs)."""
    import errno

    import tensorflow as tf

    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise EdgeExportError(f"--output {output}: could not be written ({error.strerror}); nothing was "
                              f"half-written") from None
    except (tf.errors.OutOfRangeError, tf.errors.ResourceExhaustedError, tf.errors.InternalError,
            tf.errors.UnknownError, tf.errors.PermissionDeniedError) as error:
        first = " ".join(getattr(error, "message", str(error)).split())[:300]
        raise EdgeExportError(f"--output {output}: could not be written ({first}); nothing was half-written, "
                              f"free some space and export again") from None


SIGNATURE_KIND = "edge-export"
SIGNATURE_MAX_BYTES = 16 << 20  # labels and settings; far beyond any real signature


def signature_path(path: str | os.PathLike) -> Path:
    return _sibling(Path(path), ".signature.json")


def _read_signature_json(path: Path) -> dict[str, Any]:
    """The signature file's JSON object; EdgeExportError naming the file when it is not one."""
    try:
        size = path.stat().st_size
        if size > SIGNATURE_MAX_BYTES:
            raise EdgeExportError(f"{path}: {size} bytes; a signature file is at most {SIGNATURE_MAX_BYTES} bytes")
        signature = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeExportError(f"{path}: missing; it says how to prepare the model's inputs (export the run "
                              f"again with `transferkit export --format ...`)") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise EdgeExportError(f"{path}: not a readable signature file ({type(error).__name__}: {error}); "
                              f"export the run again") from None
    if not isinstance(signature, dict):
        raise EdgeExportError(f"{path}: expected a JSON object written by `transferkit export`. "
                              f"Received: {type(signature).__name__}")
    return signature


def read_signature(path: str | os.PathLike) -> dict[str, Any]:
    """The checked signature of an exported file: its own sha256 and size match the file, its labels are a
    non-empty list of names, its preprocessor a config. Read before any interpreter sees the file's bytes,
    so a truncated or replaced file is an error, not a crash."""
    path = Path(path)
    if path.suffix.lower() not in ("." + f for f in FORMATS):
        raise EdgeExportError(f"{path}: expected a .tflite or .onnx file written by `transferkit export`")
    if not path.is_file():
        raise EdgeExportError(f"{path}: no such file")
    if path.suffix.lower() == ".tflite":
        with open(path, "rb") as handle:
            head = handle.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":  # the FlatBuffer file identifier of every LiteRT model
            raise EdgeExportError(f"{path}: not a LiteRT model (no TFL3 identifier); expected a .tflite file "
                                  f"written by `transferkit export`")
    sig_path = signature_path(path)
    signature = _read_signature_json(sig_path)
    if signature.get("transferkit") != SIGNATURE_KIND or not isinstance(signature.get("sha256"), str):
        raise EdgeExportError(f"{sig_path}: no checksum of {path.name} (written by an older transferkit, or not "
                              f"by transferkit); export the run again")
    if path.stat().st_size != signature.get("bytes") or file_sha256(path) != signature["sha256"]:
        raise EdgeExportError(f"{path}: does not match {sig_path.name} (sha256 differs: truncated, damaged or "
                              f"replaced since export); export the run again")
    labels = signature.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise EdgeExportError(f"{sig_path}: labels: expected a non-empty list of class names. "
                              f"Received: {_short_json(labels)}")
    if not isinstance(signature.get("preprocessor"), (dict, type(None))) or not isinstance(
            signature.get("task"), str):
        raise EdgeExportError(f"{sig_path}: expected a task name and a preprocessor config (export the run again)")
    return signature


def _short_json(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_replaceable(output: Path, format: str, force: bool) -> None:
    """Refuses an --output that would replace a file transferkit did not write, or any file without --force."""
    if output.is_dir():
        raise EdgeExportError(f"--output {output}: is a folder; expected a file name such as model.{format}")
    if output.suffix.lower() != f".{format}":
        raise EdgeExportError(f"--output {output}: expected a file name ending in .{format} for --format {format}")
    present = [p for p in (output, signature_path(output), _sibling(output, ".export_report.json"))
               if p.exists() or p.is_symlink()]
    if not present:
        return
    if not force:
        raise EdgeExportError(f"--output {output}: {present[0]} already exists; pass --force to replace an "
                              f"earlier export")
    try:
        signature = _read_signature_json(signature_path(output))
        ours = signature.get("transferkit") == SIGNATURE_KIND and (
            not output.exists() or (output.is_file() and not output.is_symlink()
                                    and file_sha256(output) == signature.get("sha256")))
    except EdgeExportError:
        ours = False
    if not ours:
        raise EdgeExportError(f"--output {output}: {present[0]} exists and is not a transferkit export (no "
                              f"{signature_path(output).name} recording its sha256); not replaced, even with "
                              f"--force")


def _task_data(task, config):
    """The run's datasets. Building them runs their first ops, when TensorFlow logs oneDNN notes about
    int64: held back."""
    from transferkit.streaming import pipeline_options

    with held_tensorflow_notes():
        return task.datasets().with_options(pipeline_options(config.training.data_autotune))


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.stem + suffix)


def _write_saved_model(folder: Path, edge) -> None:
    """A SavedModel with one endpoint, the edge model's function, that the converters read."""
    import keras

    archive = keras.export.ExportArchive()
    # Not archive.track(model): the archive keeps the endpoint's variables on its own, and tracking the
    # model as well saved every weight twice (BBC: 173 MB against 87).
    archive.add_endpoint("serve", edge.function, input_signature=[edge.inputs[n] for n in edge.input_names])
    archive.write_out(str(folder), verbose=False)


def _calibration_inputs(train_plain, options: EdgeExportOptions, edge) -> list[dict[str, np.ndarray]]:
    """A seeded sample of the run's own training examples (model inputs by name), for int8 calibration.

    Two passes over the training data, one to count and one to keep the chosen rows, so memory holds the
    sample only, not the whole training split.
    """
    def features(batch) -> dict[str, np.ndarray]:
        if isinstance(batch[0], dict):
            return {k: np.asarray(v) for k, v in batch[0].items()}
        return {edge.input_names[0]: np.asarray(batch[0], np.float32)}

    count = sum(len(next(iter(features(batch).values()))) for batch in train_plain)
    rng = np.random.default_rng(options.seed)
    chosen = set(rng.choice(count, size=min(options.calibration_images, count), replace=False).tolist())
    sample, start = [], 0
    for batch in train_plain:
        arrays = features(batch)
        size = len(next(iter(arrays.values())))
        sample += [{k: v[i - start:i - start + 1].copy() for k, v in arrays.items()}
                   for i in range(start, start + size) if i in chosen]
        start += size
    return edge.calibration(sample) if edge.calibration is not None else sample


def _convert_tflite(saved_model: Path, options: EdgeExportOptions, calibration: list | None, edge) -> bytes:
    import tensorflow as tf

    def converter_for(quantize: str):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        if quantize in ("float16", "dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter

    converter = converter_for(options.quantize)
    if options.quantize != "int8":
        return _run_converter(converter.convert, options.quantize)

    def representative():
        yield from calibration

    converter.representative_dataset = representative
    io_type = tf.uint8 if options.io_type == "uint8" else tf.int8
    # Token ids stay int32; a detector's pixels and outputs (boxes, counts) stay float.
    input_type = io_type if edge.float_inputs and edge.int8_integer_scope is None else tf.float32
    output_type = tf.float32 if edge.one_example else io_type
    # A selective file keeps named ops in float: a detector's post-processing (int8_integer_scope), a
    # transformer's slow or inaccurate int8 ops (int8_float_ops).
    float_nodes: list[str] = []
    if edge.int8_integer_scope is not None or edge.int8_float_ops or edge.int8_float_layers:
        float_graph = _run_converter(converter_for("none").convert, "none")
        if edge.int8_integer_scope is not None:
            float_nodes += _nodes_outside(float_graph, edge.int8_integer_scope)
        if edge.int8_float_layers:
            float_nodes += _nodes_of_layers(float_graph, edge.int8_float_layers)
        if edge.int8_float_ops:
            float_nodes += _nodes_of_types(float_graph, edge.int8_float_ops)
    if not float_nodes:
        # Builtin int8 kernels only: a float fallback would hide an op that phones' int8 accelerators lack.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if input_type != tf.float32:
            converter.inference_input_type = input_type
        if output_type != tf.float32:
            converter.inference_output_type = output_type
        flatbuffer = _run_converter(converter.convert, options.quantize)
    else:
        # Selective quantisation: the debugger quantises the calibrated graph with the named ops denylisted.
        # It does not read supported_ops, so an op with no int8 kernel stays float too (the report's float_ops
        # lists every op type computed in float).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]

        def quantize_selectively():
            from tensorflow.lite.python.util import modify_model_io_type

            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative,
                debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes))
            # The debugger's file has float inputs and outputs; integer ones as asked (the converter's own step).
            return modify_model_io_type(debugger.get_nondebug_quantized_model(), input_type, output_type)

        flatbuffer = _run_converter(quantize_selectively, options.quantize)
    _check_io_types(flatbuffer, input_type, output_type)
    return flatbuffer


def _check_io_types(flatbuffer: bytes, input_type, output_type) -> None:
    """An int8 file's float inputs and its outputs have the integer type asked for (--io-type).

    `modify_model_io_type` only logs a warning when an output does not come out of a dequantize step."""
    interpreter = _interpreter_class()[0](model_content=flatbuffer)
    for kind, details, wanted in (("input", interpreter.get_input_details(), input_type),
                                  ("output", interpreter.get_output_details(), output_type)):
        if wanted.is_floating:
            continue
        for detail in details:
            dtype = np.dtype(detail["dtype"])
            if dtype != wanted.as_numpy_dtype and (kind == "output" or dtype.kind == "f"):
                raise EdgeExportError(f"int8 conversion left the {kind} {detail['name']!r} as {dtype.name}; "
                                      f"expected {wanted.name} (--io-type)")


@dataclasses.dataclass(frozen=True)
class _GraphOp:
    type: str
    outputs: tuple[str, ...]  # tensor names
    dtypes: tuple[np.dtype, ...]  # of the outputs


def _graph_ops(flatbuffer: bytes) -> tuple[list[_GraphOp], set[str]]:
    """A LiteRT graph's ops in graph order, and the names of the graph's outputs."""
    interpreter = _interpreter_class()[0](model_content=flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = [_GraphOp(op["op_name"], tuple(tensors[i]["name"] for i in op["outputs"] if i in tensors),
                    tuple(np.dtype(tensors[i]["dtype"]) for i in op["outputs"] if i in tensors))
           for op in interpreter._get_ops_details()]
    return ops, {detail["name"] for detail in interpreter.get_output_details()}


def _float_ops(flatbuffer: bytes) -> dict[str, int]:
    """How many ops of each type an int8 file computes in float (its (de)quantize steps aside)."""
    counts: dict[str, int] = {}
    for op in _graph_ops(flatbuffer)[0]:
        if op.type not in ("QUANTIZE", "DEQUANTIZE") and np.dtype(np.float32) in op.dtypes:
            counts[op.type] = counts.get(op.type, 0) + 1
    return dict(sorted(counts.items()))


def _nodes_outside(flatbuffer: bytes, scope: str) -> list[str]:
    """The names of a LiteRT graph's op outputs that are not under `scope` (or a numbered copy of it)."""
    inside = re.compile(rf"(^|;){re.escape(scope)}(_\d+)?/")
    return sorted({name for op in _graph_ops(flatbuffer)[0] for name in op.outputs if not inside.search(name)})


def _nodes_of_layers(flatbuffer: bytes, layers) -> list[str]:
    """The output names of a LiteRT graph's ops made by the named Keras layers (or numbered copies of them)."""
    inside = re.compile(rf"(^|[/;])({'|'.join(re.escape(layer) for layer in layers)})(_\d+)?(/|;|$)")
    return sorted({name for op in _graph_ops(flatbuffer)[0] for name in op.outputs if inside.search(name)})


def _nodes_of_types(flatbuffer: bytes, op_types) -> list[str]:
    """The output names of a LiteRT graph's ops of `op_types`, but for the graph's own outputs (kept
    integer, so that the file's outputs can be uint8 or int8)."""
    ops, graph_outputs = _graph_ops(flatbuffer)
    return sorted({name for op in ops if op.type in op_types for name in op.outputs if name not in graph_outputs})


def _run_converter(convert, quantize: str) -> bytes:
    import warnings

    try:
        # The converter prints its MLIR passes' statistics on stderr: kept for --verbose, else only errors;
        # int8 calibration runs TensorFlow's own interpreter, which warns that it is deprecated.
        with held_chatter(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*tf.lite.Interpreter is deprecated")
            return convert()
    except Exception as error:  # the converter's errors are long; its first line names the op
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise EdgeExportError(f"LiteRT conversion ({quantize}) failed: {first}") from None


def _convert_onnx(path: Path, edge) -> None:
    try:
        import tf2onnx
    except ImportError:
        raise EdgeExportError("--format onnx needs tf2onnx and onnxruntime: pip install tf2onnx onnxruntime "
                              "(make venv installs them)") from None
    import tensorflow as tf

    specs = [edge.inputs[name] for name in edge.input_names]
    if edge.keras_model is not None:
        # from_keras, not from_function: the latter turns Normalization's constants into extra graph inputs.
        tf2onnx.convert.from_keras(edge.keras_model, input_signature=specs, opset=ONNX_OPSET, output_path=str(path))
        return
    tf2onnx.convert.from_function(tf.function(edge.function, input_signature=specs), input_signature=specs,
                                  opset=ONNX_OPSET, output_path=str(path))


def _quantize(value, detail) -> np.ndarray:
    """A float array into a quantized input's integer type (as is for any other input)."""
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    value = np.asarray(value)
    if scale and dtype.kind in "iu" and value.dtype.kind == "f":
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
    return value.astype(dtype)


def _interpreter_class():
    """ai-edge-litert's interpreter, or TensorFlow's (deprecated) when it is absent; and its name."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        import warnings

        import tensorflow as tf

        warnings.filterwarnings("ignore", message=r".*tf.lite.Interpreter is deprecated")
        return tf.lite.Interpreter, "tf.lite.Interpreter"


class _LiteRtRunner:
    """Runs a .tflite file with ai-edge-litert (TensorFlow's interpreter when it is absent), through its
    signature: called with an array (the one input) or a dict by input name; returns outputs by name."""

    def __init__(self, path: Path, threads: int = 2):
        Interpreter, self.name = _interpreter_class()
        with held_chatter():  # "Created ... XNNPACK delegate"
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.signature = self.interpreter.get_signature_runner()
        self.inputs = self.signature.get_input_details()
        self.outputs = self.signature.get_output_details()
        self.invoked = False

    def input_facts(self, notes: Mapping[str, dict] | None = None) -> dict[str, Any]:
        facts = {}
        for name, detail in sorted(self.inputs.items()):
            shape = [int(d) for d in detail["shape_signature"]]
            facts[name] = {"shape": [1 if shape[0] == 1 else None, *shape[1:]], "dtype": np.dtype(detail["dtype"]).name}
            scale, zero_point = detail["quantization"]
            if scale:
                facts[name]["quantization"] = {"scale": float(scale), "zero_point": int(zero_point),
                                               "real_value": "(q - zero_point) * scale"}
        return _described_inputs(facts, notes)

    def output_facts(self) -> dict[str, Any]:
        return {name: {"shape": [None if d < 0 else int(d) for d in detail["shape_signature"]],
                       "dtype": np.dtype(detail["dtype"]).name} for name, detail in sorted(self.outputs.items())}

    def __call__(self, inputs) -> dict[str, np.ndarray]:
        inputs = inputs if isinstance(inputs, dict) else {next(iter(self.inputs)): inputs}
        feeds = {name: _quantize(value, self.inputs[name]) for name, value in inputs.items()}
        if not self.invoked:  # the delegate is made at the first invoke; its note is dropped
            with held_chatter():
                results = self.signature(**feeds)
            self.invoked = True
        else:
            results = self.signature(**feeds)
        outputs = {}
        for name, value in results.items():
            scale, zero_point = self.outputs[name]["quantization"]
            outputs[name] = (value.astype(np.float32) - zero_point) * scale if scale else value
        return outputs


def _described_inputs(facts: dict[str, dict], notes: Mapping[str, dict] | None) -> dict[str, Any]:
    """The signature's `input`: each input's shape and dtype with the task's notes on it (`EdgeModel.
    input_notes`); one input is written flat, with its name."""
    facts = {name: {**fact, **dict((notes or {}).get(name, {}))} for name, fact in facts.items()}
    if len(facts) == 1:
        (name, fact), = facts.items()
        return {"name": name, **fact}
    return facts


class _OnnxRunner:
    """Runs an .onnx file with onnxruntime on the CPU, 2 threads; outputs by name.

    `output_names` (from the signature file) name the outputs in the order the converter wrote them,
    which is the function's outputs in sorted order; a file of one output is `probabilities`.
    """

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 2, output_names: list[str] | None = None,
                 input_names: list[str] | None = None):
        import onnx
        import onnxruntime

        onnx.checker.check_model(str(path))
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        self.feeds = {feed.name.split(":")[0]: feed for feed in self.session.get_inputs()}
        # A constant turned into an input is the converter's known failure; checked when exporting (the
        # file a signature vouches for passed it then). One input may be renamed by the converter.
        expected = sorted(input_names) if input_names is not None else None
        if expected is not None and (len(self.feeds) != len(expected) or
                                     (len(expected) > 1 and sorted(self.feeds) != expected)):
            raise EdgeExportError(f"ONNX conversion left {len(self.feeds)} graph inputs ({', '.join(self.feeds)}); "
                                  f"expected {', '.join(expected)}")
        files = [output.name for output in self.session.get_outputs()]
        self.output_names = output_names if output_names and len(output_names) == len(files) else (
            ["probabilities"] if len(files) == 1 else [name.split(":")[0] for name in files])

    def input_facts(self, notes: Mapping[str, dict] | None = None) -> dict[str, Any]:
        facts = {name: {"shape": [d if isinstance(d, int) else None for d in feed.shape],
                        "dtype": "float32" if "float" in feed.type else "int32"} for name, feed in sorted(self.feeds.items())}
        if len(facts) == 1 and notes and len(notes) == 1:  # the converter may have renamed the one input
            facts = {next(iter(notes)): next(iter(facts.values()))}
        return _described_inputs(facts, notes)

    def output_facts(self) -> dict[str, Any]:
        return {name: {"shape": [None if not isinstance(d, int) else d for d in output.shape]}
                for name, output in zip(self.output_names, self.session.get_outputs())}

    def __call__(self, inputs) -> dict[str, np.ndarray]:
        if not isinstance(inputs, dict):
            inputs = {next(iter(self.feeds)): inputs}
        feeds = {}
        for name, value in inputs.items():
            feed = self.feeds[name]
            feeds[feed.name] = np.asarray(value, np.float32 if "float" in feed.type else np.int32)
        return dict(zip(self.output_names, self.session.run(None, feeds)))


def _score(edge, runner, task_data) -> dict[str, Any]:
    """The task's score of the Keras model (the edge function in TensorFlow) and of the exported file,
    on the same validation batches; `drop_points` is the difference in points of the task's metric."""
    import tensorflow as tf

    from transferkit.progress import dataset_length, progress

    names = edge.input_names
    keras_function = tf.function(edge.function, input_signature=[edge.inputs[n] for n in names])
    keras_score, file_score = edge.score(task_data), edge.score(task_data)
    count, max_diff = 0, 0.0
    batches = task_data.val_indexed
    for features, targets, rows in progress(batches, "scoring the exported file", dataset_length(batches),
                                            unit="batch"):
        features = ({k: np.asarray(v) for k, v in features.items()} if isinstance(features, dict)
                    else {names[0]: np.asarray(features, np.float32)})
        size = len(np.asarray(rows))
        pieces = [{k: v[i:i + 1] for k, v in features.items()} for i in range(size)] if edge.one_example \
            else [features]
        expected = _merged([{k: np.asarray(v) for k, v in keras_function(*[p[n] for n in names]).items()}
                            for p in pieces])
        got = _merged([runner(p) for p in pieces])
        keras_score.update(expected, np.asarray(targets), np.asarray(rows))
        file_score.update(got, np.asarray(targets), np.asarray(rows))
        key = keras_score.compared
        if np.shape(got[key]) == np.shape(expected[key]):
            max_diff = max(max_diff, float(np.abs(np.asarray(got[key], np.float32) - expected[key]).max()))
        count += size
    if not count:
        raise EdgeExportError("the run's validation split is empty: nothing to score the exported file on")
    keras_result, file_result = keras_score.result(), file_score.result()
    metric = keras_score.metric
    return {"examples": count, "metric": metric,
            "keras": {k: round(v, 6) for k, v in keras_result.items()},
            "exported": {k: round(v, 6) for k, v in file_result.items()},
            "drop_points": round(100 * (keras_result[metric] - file_result[metric]), 3),
            "max_abs_diff": round(max_diff, 6), "compared_output": keras_score.compared}


def _merged(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return outputs[0] if len(outputs) == 1 else {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def runner_for(path: str | os.PathLike, signature: dict[str, Any] | None = None):
    """The runner of an exported .tflite or .onnx file, once its signature file vouches for its bytes."""
    path = Path(path)
    signature = read_signature(path) if signature is None else signature
    if path.suffix.lower() == ".tflite":
        return _LiteRtRunner(path)
    names = signature.get("output")
    return _OnnxRunner(path, output_names=sorted(names) if isinstance(names, dict) else None)


def _preprocessor_of(path: Path, signature: dict[str, Any]):
    from transferkit.registry import preprocessor_classes

    config = signature.get("preprocessor") or {}
    preprocessor_class = preprocessor_classes().get(config.get("class_name"))
    if preprocessor_class is None:
        raise EdgeExportError(f"{path}: {signature_path(path).name} names the preprocessor "
                              f"{_short_json(config.get('class_name'))}, which no installed task provides")
    try:
        return preprocessor_class.from_config(config)
    except (TypeError, ValueError, KeyError) as error:
        raise EdgeExportError(f"{signature_path(path)}: preprocessor: not a valid {preprocessor_class.__name__} "
                              f"config ({type(error).__name__}: {error})") from None


def takes_texts(preprocessor) -> bool:
    return hasattr(preprocessor, "encoder")


def predict_edge(path: str | os.PathLike, inputs: list[str], top_k: int = 3, texts: bool = False):
    """Yields (input, records) from an exported file, its inputs prepared as its signature says: for a
    classifier `[(label, probability), ...]` best first, for a detector `[(label, score, box), ...]`
    with xyxy boxes in model-input pixels.

    `inputs` are image (or WAV) paths, or, with `texts`, texts for a text model.
    """
    path = Path(path)
    signature = read_signature(path)
    preprocessor = _preprocessor_of(path, signature)
    if takes_texts(preprocessor) != texts:
        wanted = "texts (--text or --file)" if takes_texts(preprocessor) else "files (images or clips), not texts"
        raise EdgeExportError(f"{path}: this {signature['task']} file takes {wanted}")
    runner, labels = runner_for(path, signature), signature["labels"]
    task_class = edge_task_class(path, signature)
    for item in inputs:
        outputs = runner(_prepared(preprocessor, item))
        try:
            yield item, task_class.decode_edge(outputs, labels, top_k)[0]
        except (ValueError, KeyError, IndexError) as error:
            raise EdgeExportError(f"{path}: its outputs do not fit {signature_path(path).name} ({error})") from None


def edge_task_class(path: str | os.PathLike, signature: dict[str, Any] | None = None):
    """The task that exported the file (its signature's `task`): it decodes and describes the records."""
    from transferkit.registry import get_task

    signature = _read_signature_json(signature_path(path)) if signature is None else signature
    try:
        return get_task(str(signature.get("task")))
    except TransferkitError:
        raise EdgeExportError(f"{path}: exported by task {_short_json(signature.get('task'))}, which is not "
                              f"installed") from None


def _prepared(preprocessor, item: str):
    """One model input from a file path (images, audio) or a text, batched."""
    if hasattr(preprocessor, "read_file"):
        try:
            return preprocessor.read_file(item).astype(np.float32)[None]
        except Exception as error:
            raise TransferkitError(f"{item}: unreadable input: {type(error).__name__}: {error}") from None
    import tensorflow as tf

    if hasattr(preprocessor, "encoder"):  # texts
        encoded = preprocessor.encoder(tf.constant([item]))
        return {key: np.asarray(value, np.int32) for key, value in encoded.items()}
    try:  # any other file (a WAV clip): the preprocessor's own graph on the file's bytes
        return np.asarray(preprocessor.preprocess(tf.io.read_file(item)), np.float32)[None]
    except Exception as error:
        raise TransferkitError(f"{item}: unreadable input: {type(error).__name__}: {error}") from None


def evaluate_edge(run_dir: str | os.PathLike, path: str | os.PathLike, data: str | None = None) -> dict[str, Any]:
    """Scores an exported file on the run's validation split (or `data`) next to the run's Keras model."""
    from transferkit.registry import get_task
    from transferkit.runner import load_run

    signature = read_signature(path)
    config, task, model, info = load_run(run_dir)
    _check_matches_run(Path(path), signature, config.task, task.preprocessor(info), info)
    config = task.config_for_evaluation(info, data)
    task = get_task(config.task)(config, info)
    edge = task.edge_model(model, info)
    if edge is None:
        raise EdgeExportError(f"{run_dir}: task {config.task!r} has no edge export to score")
    task_data = _task_data(task, config)
    runner = runner_for(path, signature)
    report = _score(edge, runner, task_data)
    return {**report, "file": str(Path(path).resolve()), "runtime": runner.name}


def _check_matches_run(path: Path, signature: dict[str, Any], task_name: str, preprocessor, info) -> None:
    """An exported file is scored only against the run it came from: same task, labels and preprocessing."""
    name = signature_path(path).name
    if signature["task"] != task_name:
        raise EdgeExportError(f"{path}: exported from a {signature['task']} run ({name}); this run is "
                              f"{task_name}")
    if list(signature["labels"]) != list(info.get("class_names", [])):
        raise EdgeExportError(f"{path}: its labels ({_short_json(signature['labels'])}) are not this run's "
                              f"({_short_json(list(info.get('class_names', [])))})")
    expected = preprocessor.get_config() if preprocessor is not None else None
    if json.loads(json.dumps(expected)) != signature.get("preprocessor"):
        raise EdgeExportError(f"{path}: its preprocessor settings ({name}) differ from this run's")
