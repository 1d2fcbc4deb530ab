"""The Python API: `tk.train`, `tk.load` and the `Run` they return, as the CLI uses them.

`import transferkit as tk` stays cheap; these functions import TensorFlow when they first need it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from transferkit.config import RunConfig, load_config
from transferkit.errors import ConfigError, TransferkitError

ConfigLike = "str | os.PathLike | Mapping[str, Any] | RunConfig"


def _as_config(config, overrides: Sequence[str] = ()) -> RunConfig:
    """A RunConfig from a YAML path, a plain mapping (as the YAML would hold) or a RunConfig."""
    if isinstance(config, RunConfig):
        if overrides:
            raise ConfigError("overrides: give them with a YAML path or a mapping, not with a RunConfig "
                              f"(received overrides={list(overrides)!r})")
        return config
    if isinstance(config, Mapping):
        return load_config(None, list(overrides), base=config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, list(overrides))
    raise ConfigError(f"config: expected a YAML path, a mapping or a RunConfig. Received: {type(config).__name__}")


class TaskConfig:
    """A typed run config for one task: `tk.ImageClassificationConfig(data={...}, backbone={...}, stages=[...])`.

    Each section is a mapping as in the YAML, or the task's own typed section (a dataclass from the
    plugin's `config.py`, or `StageConfig`s); the result is the validated, frozen `RunConfig` that
    `tk.train` takes, and a wrong key or value is refused naming it.

    Example:

    ```python
    config = tk.ImageClassificationConfig(data={"train": "flowers/", "image_size": [224, 224]},
                                          backbone={"preset": "efficientnet-lite0"})
    run = tk.train(config, output="runs/flowers")
    ```
    """

    task: str = ""

    def __new__(cls, **sections: Any) -> RunConfig:
        from transferkit.config_loading import build_run_config
        from transferkit.typed import to_dict

        if "task" in sections:
            raise ConfigError(f"{cls.__name__}: the task is {cls.task!r}; do not pass task=. "
                              f"Received: task={sections['task']!r}")
        plain = {name: to_dict(value) for name, value in sections.items()}
        return build_run_config({"task": cls.task, **plain}, source=cls.__name__)


class ImageClassificationConfig(TaskConfig):
    """`TaskConfig` of `task: image_classification`."""

    task = "image_classification"


class ObjectDetectionConfig(TaskConfig):
    """`TaskConfig` of `task: object_detection`."""

    task = "object_detection"


class TextClassificationConfig(TaskConfig):
    """`TaskConfig` of `task: text_classification`."""

    task = "text_classification"


class AudioClassificationConfig(TaskConfig):
    """`TaskConfig` of `task: audio_classification`."""

    task = "audio_classification"


class MultilabelClassificationConfig(TaskConfig):
    """`TaskConfig` of `task: multilabel_classification`."""

    task = "multilabel_classification"


def train(config, output: str | os.PathLike | None = None, *, overrides: Sequence[str] = (), resume: bool = True,
          time_limit: float | None = None, verbose: bool = False) -> "Run":
    """Trains every stage of `config` into `output` (default: `runs/<task>`) and returns the finished `Run`.

    Example:

    ```python
    import transferkit as tk

    run = tk.train("benchmarks/configs/hymenoptera.yaml", output="runs/hymenoptera")
    print(run.summary())
    run.predict(["ant.jpg"])
    ```
    """
    from transferkit.logs import quiet_tensorflow_import

    run_config = _as_config(config, overrides)
    if output is None:
        output = Path("runs") / run_config.task
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise TransferkitError(f"time_limit: expected seconds > 0. Received: time_limit={time_limit!r}")
    with quiet_tensorflow_import(verbose=verbose):
        from transferkit.runner import train as run_training

        run_dir = run_training(run_config, output, resume=resume, time_limit=time_limit)
    return Run(run_dir)


def load(run_dir: str | os.PathLike) -> "Run":
    """The `Run` of a finished `transferkit train` folder (nothing heavy is loaded until it is needed)."""
    return Run(run_dir)


class Run:
    """A finished run folder: its config, figures and files, and its model for `predict`, `evaluate`, `export`.

    Example:

    ```python
    run = tk.load("runs/hymenoptera")
    run.metrics["accuracy"], len(run.history)
    for path, prediction in run.predict(["ant.jpg", "bee.jpg"]):
        print(path, prediction)
    run.export(format="tflite", quantize="int8", output="model.tflite")
    ```
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "info.json").is_file() or not (self.run_dir / "config.yaml").is_file():
            raise TransferkitError(f"{self.run_dir}: no info.json and config.yaml; expected a run folder written "
                                   f"by `transferkit train` or `tk.train`")
        self._loaded = None

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"

    def _json(self, name: str, default):
        path = self.run_dir / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as error:
            raise TransferkitError(f"{path}: not readable JSON ({error})") from None

    @property
    def config(self) -> RunConfig:
        """The run's resolved config.yaml, as a `RunConfig`."""
        from transferkit.config_loading import load_saved_config

        return load_saved_config(self.run_dir / "config.yaml")

    @property
    def info(self) -> dict[str, Any]:
        """info.json: what the run recorded for loading, predicting and exporting (classes, preprocessor, ...)."""
        return self._json("info.json", {})

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json: the task's evaluation of the best weights (and `test`, with a `data.test`)."""
        return self._json("metrics.json", {})

    @property
    def history(self) -> list[dict[str, Any]]:
        """One row per epoch: stage, losses, the monitor, elapsed seconds."""
        return self._json("history.json", [])

    @property
    def report_files(self) -> list[Path]:
        """The files in the run's report/ folder (plots, worst-classified sheets), sorted."""
        return sorted(p for p in (self.run_dir / "report").glob("*") if p.is_file())

    def summary(self) -> str:
        """The page `transferkit train` and `transferkit show` print."""
        from transferkit.summary import run_summary

        return run_summary(self.run_dir)

    def _model(self):
        if self._loaded is None:
            from transferkit.logs import quiet_tensorflow_import

            with quiet_tensorflow_import():
                from transferkit.runner import load_run

                self._loaded = load_run(self.run_dir)
        return self._loaded

    def predict(self, inputs, **options: Any) -> list[tuple[str, Any]]:
        """`(input, prediction)` per input: file paths (images, clips), texts for a text task, or numpy arrays
        (an image as [height, width, 3] or [height, width] uint8; a clip as [samples] float in -1..1 at
        `sample_rate=`, 16000 by default), named `array[i]`. `options` go to the task (`top_k=3`,
        `save_dir=...` for annotated detections)."""
        import numpy as np

        if isinstance(inputs, (str, os.PathLike, np.ndarray)):
            inputs = [inputs]
        items = list(inputs)
        if not items:
            raise TransferkitError("predict: expected one or more inputs. Received: none")
        if any(isinstance(item, np.ndarray) for item in items):
            import tempfile

            with tempfile.TemporaryDirectory(prefix="transferkit-predict-") as folder:
                files = [_array_file(item, Path(folder) / f"array_{i}", options.get("sample_rate", 16000), i)
                         if isinstance(item, np.ndarray) else item for i, item in enumerate(items)]
                options.pop("sample_rate", None)
                named = {str(f): f"array[{i}]" for i, (f, item) in enumerate(zip(files, items))
                         if isinstance(item, np.ndarray)}
                return [(named.get(path, path), prediction) for path, prediction in self.predict(files, **options)]
        options.pop("sample_rate", None)
        _, task, model, info = self._model()
        if task.takes_texts and not all(os.path.isfile(str(item)) for item in items):
            return list(zip(items, task.predict_texts(model, [str(item) for item in items], info,
                                                      top_k=options.get("top_k", 3))))
        missing = [str(item) for item in items if not os.path.isfile(str(item))]
        if missing:
            raise TransferkitError(f"{missing[0]}: input file not found ({len(missing)} of {len(items)} missing)")
        save_dir = options.pop("save_dir", None)
        return list(task.predict(model, [str(item) for item in items], info,
                                 save_dir=Path(save_dir) if save_dir else None, **options))

    def evaluate(self, data: str | os.PathLike | None = None) -> dict[str, Any]:
        """The task's evaluation on the validation data (rewrites metrics.json) or on `data` (its own folder)."""
        from transferkit.runner import evaluate_run

        self._loaded = None  # evaluate_run loads the model itself
        return evaluate_run(self.run_dir, data=None if data is None else str(data))

    def export(self, format: str = "saved_model", *, output: str | os.PathLike | None = None,
               model_base: str | os.PathLike | None = None, name: str | None = None, version: int | None = None,
               quantize: str = "none", force: bool = False) -> Path:
        """A SavedModel for TF Serving (`model_base`, `name`) or a LiteRT / ONNX file (`format="tflite"` or
        `"onnx"`, `output`, `quantize`); returns where it was written."""
        if format == "saved_model":
            if not model_base or not name:
                raise TransferkitError("export: a SavedModel needs model_base= and name= "
                                       "(or format='tflite'|'onnx' with output=)")
            from transferkit.serving.export import export_run

            return Path(export_run(self.run_dir, model_base, name, version=version, force=force))
        if format not in ("tflite", "onnx"):
            raise TransferkitError(f"export: format must be 'saved_model', 'tflite' or 'onnx'. Received: {format!r}")
        if not output:
            raise TransferkitError(f"export: format={format!r} needs output= (a file path, e.g. model.{format})")
        from transferkit.serving.edge_export import EdgeExportOptions, export_edge

        report = export_edge(self.run_dir, output, EdgeExportOptions(format=format, quantize=quantize), force=force)
        return Path(report["file"])


def _array_file(array, stem: Path, sample_rate: int, index: int) -> Path:
    """An input array written as the file the task reads: a PNG image, or a 16-bit WAV clip."""
    import numpy as np

    if array.ndim in (2, 3) and (array.ndim == 2 or array.shape[-1] in (1, 3, 4)) and min(array.shape[:2]) > 0:
        from PIL import Image

        pixels = np.clip(array, 0, 255).astype(np.uint8)
        Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels).save(
            stem.with_suffix(".png"))
        return stem.with_suffix(".png")
    if array.ndim == 1 and array.size > 0:
        from scipy.io import wavfile

        if not (isinstance(sample_rate, int) and 1000 <= sample_rate <= 384000):
            raise TransferkitError(f"predict: sample_rate must be an integer number of Hz in [1000, 384000]. "
                                   f"Received: sample_rate={sample_rate!r}")
        wavfile.write(stem.with_suffix(".wav"), sample_rate,
                      (np.clip(array.astype(np.float64), -1, 1) * 32767).astype(np.int16))
        return stem.with_suffix(".wav")
    raise TransferkitError(f"predict: array[{index}] has shape {tuple(array.shape)}; expected an image "
                           f"[height, width, 3] or [height, width], or a clip [samples]")


def compare(config, output: str | os.PathLike = "runs/compare", **options: Any) -> dict[str, Any]:
    """`transferkit compare` from Python: `options` are `CompareOptions` fields (recipes, fractions, seeds,
    backbones, ...); returns compare.json's content."""
    from transferkit.compare import CompareOptions, run_compare

    unknown = sorted(set(options) - set(CompareOptions.__dataclass_fields__))
    if unknown:
        raise TransferkitError(f"compare: unknown options {unknown}; expected any of "
                               f"{sorted(CompareOptions.__dataclass_fields__)}")
    typed = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return run_compare(None, output, CompareOptions(**typed), base=_as_config(config))


def lr_find(config, stage: int = 1, output: str | os.PathLike = "runs/lr_find", *, steps: int = 200,
            weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """The learning-rate range test of stage `stage` (1-based, as `transferkit lr-find --stage`); returns
    lr_find.json's content (the rate under `suggested_learning_rate`) and writes lr_find.png into `output`."""
    from transferkit.lr_find import find_learning_rate

    if not isinstance(stage, int) or isinstance(stage, bool):
        raise TransferkitError(f"lr_find: stage must be a stage number (1, 2, ...). Received: stage={stage!r}")
    return find_learning_rate(_as_config(config), stage - 1, output, steps=steps, weights=weights, log=lambda *a: None)


@contextlib.contextmanager
def serve(model_base: str | os.PathLike, grpc_port: int = 0, rest_port: int | None = 0,
          host: str = "127.0.0.1") -> Iterator[Any]:
    """The embedded TF Serving-compatible server for a block; yields it (`.grpc_address`, `.rest_address`).
    Port 0 picks a free one.

    Example:

    ```python
    with tk.serve("models") as server, tk.Client(server.grpc_address) as client:
        client.predict_records("flowers", [open("rose.jpg", "rb").read()])
    ```
    """
    from transferkit.serving.server import EmbeddedServer

    server = EmbeddedServer(model_base, host=host, grpc_port=grpc_port, rest_port=rest_port).start()
    try:
        yield server
    finally:
        server.stop()


def Client(address: str, **options: Any):  # noqa: N802  (reads as the class it returns)
    """A gRPC client of a TF Serving (or `tk.serve`) address `HOST:PORT`; `http://...` gives the REST client."""
    from transferkit.serving.client import GrpcClient, RestClient

    return RestClient(address, **options) if address.startswith(("http://", "https://")) else GrpcClient(address, **options)
