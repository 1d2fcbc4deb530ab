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
into extra graph inputs. See README, "Export for phones and other runtimes".
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_path, atomic_write_text
from transferkit.logs import held_stderr, verbose

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


def export_edge(run_dir: str | os.PathLike, output: str | os.PathLike, options: EdgeExportOptions) -> dict[str, Any]:
    """Converts a finished run's model, scores the file on the validation set, keeps it if within tolerance."""
    import tensorflow as tf

    from transferkit.runner import load_run
    from transferkit.streaming import pipeline_options

    run_dir, output = Path(run_dir), Path(output)
    config, task, model, info = load_run(run_dir)
    preprocessor = task.preprocessor(info)
    specs = model_input_specs(model)
    if specs is None or "class_names" not in info:
        raise EdgeExportError(f"{run_dir}: task {config.task!r} is not exported for edge runtimes yet: only "
                              f"classifiers whose model takes one image tensor (image and audio classification) "
                              f"or token ids and a padding mask (text classification)")
    if output.is_dir():
        raise EdgeExportError(f"--output {output}: is a folder; expected a file name such as model.{options.format}")
    task_data = task.datasets().with_options(pipeline_options(config.training.data_autotune))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        saved_model = Path(scratch) / "saved_model"
        _write_saved_model(model, saved_model, specs)
        with atomic_path(output, suffix=output.suffix) as tmp:
            if options.format == "tflite":
                calibration = _calibration_inputs(task_data.train_plain, options) if options.quantize == "int8" \
                    else None
                tmp.write_bytes(_convert_tflite(saved_model, options, calibration, images=PIXELS in specs))
                runner = _LiteRtRunner(tmp)
            else:
                _convert_onnx(model, tmp, specs)
                runner = _OnnxRunner(tmp)
            report = _score(model, runner, task_data.val, info["class_names"])
            saved_model_bytes = sum(p.stat().st_size for p in saved_model.rglob("*") if p.is_file())
            report.update(format=options.format, quantize=options.quantize, file=str(output.resolve()),
                          bytes=tmp.stat().st_size, saved_model_bytes=saved_model_bytes,
                          tolerance_points=options.tolerance, runtime=runner.name,
                          seconds=round(time.perf_counter() - started, 1), input=runner.input_facts())
            if report["drop_points"] > options.tolerance:
                raise EdgeExportError(
                    f"{output}: accuracy {report['exported']['accuracy']:.4f} against the Keras model's "
                    f"{report['keras']['accuracy']:.4f} on {report['examples']} validation examples, a drop of "
                    f"{report['drop_points']:.2f} points, beyond the tolerance of {options.tolerance} "
                    f"(--max-drop); nothing was written")
    signature = {"input": runner.input_facts(), "output": {"name": "probabilities", "shape": [None, len(info["class_names"])],
                                                          "meaning": "class probabilities in labels order"},
                 "labels": list(info["class_names"]),
                 "preprocessor": preprocessor.get_config() if preprocessor is not None else None,
                 "app_steps": APP_STEPS["image" if PIXELS in specs else "tokens"]}
    atomic_write_text(_sibling(output, ".signature.json"), json.dumps(signature, indent=2) + "\n")
    atomic_write_text(_sibling(output, ".export_report.json"), json.dumps(report, indent=2) + "\n")
    return report


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.stem + suffix)


PIXELS = "pixels"
APP_STEPS = {
    "image": ["decode the image upright (apply EXIF orientation) to RGB",
              "resize as the preprocessor says (resize, crop_fraction, interpolation)",
              "feed NHWC pixels 0..255 (quantised with the input's scale and zero point for int8)",
              "read probabilities; argmax gives the label"],
    "tokens": ["normalise the text as the preprocessor says (lowercase, strip_accents: NFD, drop marks)",
               "split it into WordPiece tokens with the preprocessor's vocabulary (its ids are list positions)",
               "feed token_ids = [CLS] tokens [SEP], cut and padded with [PAD] to sequence_length, and "
               "padding_mask = 1 for real tokens, 0 for padding (int32, shape [N, sequence_length])",
               "read probabilities; argmax gives the label"],
}


def model_input_specs(model) -> dict[str, Any] | None:
    """The exported file's inputs: one NHWC image named "pixels", or the model's token inputs by name
    (int32 `[N, length]`); None for a model of another shape (a detector's several outputs)."""
    import tensorflow as tf

    inputs = model.inputs
    if len(inputs) == 1 and len(inputs[0].shape) == 4:
        return {PIXELS: tf.TensorSpec([None, *(int(d) for d in inputs[0].shape[1:])], tf.float32, name=PIXELS)}
    names = sorted(tensor.name.split(":")[0] for tensor in inputs)
    if names == ["padding_mask", "token_ids"] and all(len(t.shape) == 2 for t in inputs):
        return {tensor.name.split(":")[0]: tf.TensorSpec([None, int(tensor.shape[1])], tf.int32,
                                                         name=tensor.name.split(":")[0]) for tensor in inputs}
    return None


def _write_saved_model(model, folder: Path, specs: dict[str, Any]) -> None:
    """A SavedModel with one endpoint, the model's inputs -> {"probabilities"}, that the converters read."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    names = sorted(specs)

    def serve(*tensors):
        inputs = tensors[0] if names == [PIXELS] else dict(zip(names, tensors))
        return {"probabilities": tf.cast(model(inputs, training=False), tf.float32)}

    archive.add_endpoint("serve", serve, input_signature=[specs[name] for name in names])
    archive.write_out(str(folder), verbose=False)


def _calibration_inputs(train_plain, options: EdgeExportOptions) -> list[dict[str, np.ndarray]]:
    """A seeded sample of the run's own training examples (model inputs), for int8 calibration."""
    batches = [batch[0] for batch in train_plain]
    if isinstance(batches[0], dict):
        examples = {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}
    else:
        examples = {PIXELS: np.concatenate([np.asarray(b, np.float32) for b in batches])}
    count = len(next(iter(examples.values())))
    rng = np.random.default_rng(options.seed)
    chosen = np.sort(rng.choice(count, size=min(options.calibration_images, count), replace=False))
    return [{k: v[i:i + 1] for k, v in examples.items()} for i in chosen]


def _convert_tflite(saved_model: Path, options: EdgeExportOptions, calibration: list | None,
                    images: bool = True) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if options.quantize in ("float16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if options.quantize == "int8":
        def representative():
            yield from calibration

        converter.representative_dataset = representative
        # Builtin int8 kernels only: a float fallback would hide an op that phones' int8 accelerators lack.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if images:  # token ids stay int32; only a float input or output takes the integer type
            io_type = tf.uint8 if options.io_type == "uint8" else tf.int8
            converter.inference_input_type = io_type
        converter.inference_output_type = tf.uint8 if options.io_type == "uint8" else tf.int8
    try:
        # The converter prints its MLIR passes' statistics on stderr: kept for --verbose, else only errors.
        with held_stderr(lambda line: verbose() or "error" in line.lower()):
            return converter.convert()
    except Exception as error:  # the converter's errors are long; its first line names the op
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise EdgeExportError(f"LiteRT conversion ({options.quantize}) failed: {first}") from None


def _convert_onnx(model, path: Path, specs: dict[str, Any]) -> None:
    try:
        import tf2onnx
    except ImportError:
        raise EdgeExportError("--format onnx needs tf2onnx and onnxruntime: pip install tf2onnx onnxruntime "
                              "(make venv installs them)") from None
    if PIXELS in specs:
        # from_keras, not from_function: the latter turns Normalization's constants into extra graph inputs.
        tf2onnx.convert.from_keras(model, input_signature=[specs[PIXELS]], opset=ONNX_OPSET, output_path=str(path))
        return
    import tensorflow as tf

    # from_keras would feed a dict-input model a list; a function takes the inputs by name.
    names = sorted(specs)

    @tf.function(input_signature=[specs[name] for name in names])
    def classify(*tensors):
        return {"probabilities": tf.cast(model(dict(zip(names, tensors)), training=False), tf.float32)}

    tf2onnx.convert.from_function(classify, input_signature=[specs[name] for name in names], opset=ONNX_OPSET,
                                  output_path=str(path))


class _LiteRtRunner:
    """Runs a .tflite file batch by batch with ai-edge-litert (TensorFlow's interpreter when it is absent).

    Called with an array (the pixels) or a dict of arrays by input name (token ids and padding mask).
    """

    def __init__(self, path: Path, threads: int = 2):
        try:
            from ai_edge_litert.interpreter import Interpreter

            self.name = "ai-edge-litert"
        except ImportError:
            import warnings

            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
            warnings.filterwarnings("ignore", message=r".*tf.lite.Interpreter is deprecated")
            self.name = "tf.lite.Interpreter"
        with held_stderr(lambda line: verbose() or "error" in line.lower()):  # "Created ... XNNPACK delegate"
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        self._details()
        self.shapes: dict[str, tuple] = {}

    def _details(self) -> None:
        # Converted names read "serving_default_token_ids:0"; the input's own name is their last part.
        self.inputs = {self._short(d["name"]): d for d in self.interpreter.get_input_details()}
        self.output = self.interpreter.get_output_details()[0]

    @staticmethod
    def _short(name: str) -> str:
        base = name.split(":")[0]
        for prefix in ("serving_default_", "serve_"):
            base = base.removeprefix(prefix)
        return PIXELS if base not in ("token_ids", "padding_mask") else base

    def input_facts(self) -> dict[str, Any]:
        if list(self.inputs) == [PIXELS]:
            detail = self.inputs[PIXELS]
            scale, zero_point = detail["quantization"]
            facts = {"name": PIXELS, "shape": [None, *[int(d) for d in detail["shape"][1:]]], "layout": "NHWC RGB",
                     "dtype": np.dtype(detail["dtype"]).name, "range": [0, 255]}
            if scale:
                facts["quantization"] = {"scale": float(scale), "zero_point": int(zero_point),
                                         "real_value": "(q - zero_point) * scale"}
            return facts
        return {name: {"shape": [None, *[int(d) for d in detail["shape"][1:]]],
                       "dtype": np.dtype(detail["dtype"]).name} for name, detail in sorted(self.inputs.items())}

    def __call__(self, inputs) -> np.ndarray:
        inputs = inputs if isinstance(inputs, dict) else {PIXELS: inputs}
        shapes = {name: np.shape(value) for name, value in inputs.items()}
        if shapes != self.shapes:
            for name, value in inputs.items():
                self.interpreter.resize_tensor_input(self.inputs[name]["index"], list(np.shape(value)))
            with held_stderr(lambda line: verbose() or "error" in line.lower()):
                self.interpreter.allocate_tensors()
                self._details()
                for name, value in inputs.items():  # the delegate is made at the first invoke; its note dropped
                    self.interpreter.set_tensor(self.inputs[name]["index"],
                                                np.zeros(np.shape(value), self.inputs[name]["dtype"]))
                self.interpreter.invoke()
            self.shapes = shapes
        for name, value in inputs.items():
            detail = self.inputs[name]
            scale, zero_point = detail["quantization"]
            dtype = np.dtype(detail["dtype"])
            if scale and dtype.kind in "iu" and np.asarray(value).dtype.kind == "f":
                info = np.iinfo(dtype)
                value = np.clip(np.round(np.asarray(value) / scale + zero_point), info.min, info.max)
            self.interpreter.set_tensor(detail["index"], np.asarray(value).astype(dtype))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"]).astype(np.float32)
        out_scale, out_zero = self.output["quantization"]
        return (out - out_zero) * out_scale if out_scale else out


class _OnnxRunner:
    """Runs an .onnx file with onnxruntime on the CPU, 2 threads."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 2):
        import onnx
        import onnxruntime

        onnx.checker.check_model(str(path))
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        self.feeds = {feed.name.split(":")[0]: feed for feed in self.session.get_inputs()}
        if len(self.feeds) != 1 and sorted(self.feeds) != ["padding_mask", "token_ids"]:
            # a constant turned into an input is the converter's known failure
            raise EdgeExportError(f"ONNX conversion left {len(self.feeds)} graph inputs ({', '.join(self.feeds)}); "
                                  f"expected only the pixels, or token_ids and padding_mask")

    def input_facts(self) -> dict[str, Any]:
        if len(self.feeds) == 1:
            feed = next(iter(self.feeds.values()))
            return {"name": feed.name, "shape": [None, *feed.shape[1:]], "layout": "NHWC RGB",
                    "dtype": "float32", "range": [0, 255]}
        return {name: {"shape": [None, *feed.shape[1:]], "dtype": "int32"} for name, feed in sorted(self.feeds.items())}

    def __call__(self, inputs) -> np.ndarray:
        if not isinstance(inputs, dict):
            feed = next(iter(self.feeds.values()))
            return np.asarray(self.session.run(None, {feed.name: np.asarray(inputs, np.float32)})[0], np.float32)
        feeds = {self.feeds[name].name: np.asarray(value, np.int32) for name, value in inputs.items()}
        return np.asarray(self.session.run(None, feeds)[0], np.float32)


def _score(model, runner, val, class_names) -> dict[str, Any]:
    """Accuracy of the Keras model and of the exported file on the same validation batches."""
    from transferkit.models.inference import traced_forward
    from transferkit.progress import dataset_length, progress

    forward = traced_forward(model, val.element_spec[0])
    keras_hits = file_hits = count = 0
    max_diff = 0.0
    for features, targets, *_ in progress(val, "scoring the exported file", dataset_length(val), unit="batch"):
        features = ({k: np.asarray(v) for k, v in features.items()} if isinstance(features, dict)
                    else np.asarray(features, np.float32))
        labels = np.asarray(targets).argmax(axis=1)
        expected = np.asarray(forward(features), np.float32)
        got = runner(features)
        keras_hits += int((expected.argmax(axis=1) == labels).sum())
        file_hits += int((got.argmax(axis=1) == labels).sum())
        max_diff = max(max_diff, float(np.abs(got - expected).max()))
        count += len(labels)
    if not count:
        raise EdgeExportError("the run's validation split is empty: nothing to score the exported file on")
    keras_accuracy, file_accuracy = keras_hits / count, file_hits / count
    return {"examples": count, "keras": {"accuracy": round(keras_accuracy, 6)},
            "exported": {"accuracy": round(file_accuracy, 6)},
            "drop_points": round(100 * (keras_accuracy - file_accuracy), 3),
            "max_abs_diff": round(max_diff, 6), "classes": len(class_names)}


def runner_for(path: str | os.PathLike):
    """The runner of an exported .tflite or .onnx file."""
    path = Path(path)
    if path.suffix.lower() == ".tflite":
        return _LiteRtRunner(path)
    if path.suffix.lower() == ".onnx":
        return _OnnxRunner(path)
    raise EdgeExportError(f"{path}: expected a .tflite or .onnx file written by `transferkit export`")


def predict_edge(path: str | os.PathLike, inputs: list[str], top_k: int = 3):
    """Yields (input, [(label, probability), ...]) from an exported file, prepared as its signature says.

    `inputs` are image (or WAV) paths for an image model, texts for a text model.
    """
    from transferkit.registry import preprocessor_classes

    path = Path(path)
    signature_path = _sibling(path, ".signature.json")
    if not signature_path.is_file():
        raise EdgeExportError(f"{path}: no {signature_path.name} next to it; it says how to prepare inputs "
                              f"(export the run again with `transferkit export --format ...`)")
    signature = json.loads(signature_path.read_text(encoding="utf-8"))
    config = signature.get("preprocessor") or {}
    preprocessor_class = preprocessor_classes().get(config.get("class_name"))
    if preprocessor_class is None:
        raise EdgeExportError(f"{path}: {signature_path.name} names the preprocessor {config.get('class_name')!r}, "
                              f"which no installed task provides")
    preprocessor = preprocessor_class.from_config(config)
    runner, labels = runner_for(path), signature["labels"]
    k = max(1, min(int(top_k), len(labels)))
    for item in inputs:
        probabilities = runner(_prepared(preprocessor, item))[0]
        order = np.argsort(-probabilities)[:k]
        yield item, [(labels[i], float(probabilities[i])) for i in order]


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
    from transferkit.streaming import pipeline_options

    config, task, model, info = load_run(run_dir)
    config = task.config_for_evaluation(info, data)
    task = get_task(config.task)(config, info)
    task_data = task.datasets().with_options(pipeline_options(config.training.data_autotune))
    runner = runner_for(path)
    report = _score(model, runner, task_data.val, info["class_names"])
    return {**report, "file": str(Path(path).resolve()), "runtime": runner.name}
