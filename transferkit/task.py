"""The Task contract: what differs between transfer-learning tasks.

The runner, export, warmup, the CLI and `transferkit.testing.run_task_test`
speak only this contract; nothing in them assumes pixels, pooled features,
softmax or top-k. A task owns its whole model (`build_model`), its loss and
metrics (`compile`), which part of the model the feature cache may compute
once (`cache_split`), its evaluation report, its `predict` output, the files
that travel with the model (`artifacts`) and its serving signatures with the
examples that warmup and the export parity check use.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from transferkit.config_sections import DataSection, RunConfig, StageConfig
    from transferkit.edge import EdgeModel
    from transferkit.evaluation import Evaluation
    from transferkit.models.backbones import FeatureBackbone
    from transferkit.preprocessing import Preprocessor


@dataclasses.dataclass
class TaskData:
    """What `Task.datasets()` returns.

    `train` and `val` yield `(inputs, targets)` or `(inputs, targets,
    sample_weights)` batches, with the model's inputs as `build_model` defines
    them. `train_plain` is the training data without augmentation or
    shuffling (the feature cache reads it once). `train_augmented` says
    whether `train` applies random augmentation: if it does, features cannot
    be cached; `train_unaugmented` is then the same shuffled data without
    augmentation, for stages that turn it off (`stages[].augment: false`).
    `info` carries what must travel with the model (class names, input size,
    ...); it is saved as the run's `info.json`. `examples` are paths of real
    validation inputs, for the export's parity check and TF Serving warmup.
    `problems` lists skipped or repaired inputs with the reason, for the
    run's report.
    """

    train: "tf.data.Dataset"
    val: "tf.data.Dataset | None"
    train_plain: "tf.data.Dataset"
    info: dict[str, Any]
    train_augmented: bool = False
    train_unaugmented: "tf.data.Dataset | None" = None
    problems: list[dict[str, str]] = dataclasses.field(default_factory=list)
    steps_per_epoch: int | None = None
    examples: list[str] = dataclasses.field(default_factory=list)
    # Streamed data may drop an input whose header passed but whose body did not decode (tf.data
    # skips it). When an epoch of `train` yields fewer examples than info["num_train"], the runner
    # calls this to find which, and lists what it returns in the run's problems.
    find_dropped: "Callable[[], list[dict[str, str]]] | None" = None
    # The validation batches again with each example's row: `(inputs, targets, rows)`, unshuffled, for the
    # task's streaming `Evaluation`; `val_records[row]` is what the report names (a path, a text, boxes).
    val_indexed: "tf.data.Dataset | None" = None
    val_records: Sequence[Any] | None = None
    # What each split's inputs are, to tell when a test split overlaps them: {"train": ..., "val": ...},
    # resolved file paths or digests of texts (`input_identity`). Empty when the task cannot say (a pack).
    input_ids: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)

    def with_options(self, options: "tf.data.Options") -> "TaskData":
        """The same data with `options` applied to every pipeline."""
        def apply(dataset):
            return None if dataset is None else dataset.with_options(options)

        return dataclasses.replace(self, train=apply(self.train), val=apply(self.val),
                                   train_plain=apply(self.train_plain),
                                   train_unaugmented=apply(self.train_unaugmented),
                                   val_indexed=apply(self.val_indexed))


@dataclasses.dataclass
class CacheSplit:
    """A model cut in two for the feature cache.

    `extractor` maps the model's inputs to what `trainable` reads (a tensor
    or a dict of tensors); it is frozen for the stage, so its outputs are
    computed once. `trainable` maps those to the model's outputs and trains
    on the cached values; it shares its layers with the full model.
    """

    extractor: "keras.Model"
    trainable: "keras.Model"
    # Names what the extractor computes: stages whose splits share a key share the cached features.
    key: str = "features"


@dataclasses.dataclass(frozen=True)
class ParityCheck:
    """One comparison of the exported SavedModel with the Keras model.

    `tolerance` None means the export's default (1e-4 on raw outputs).
    """

    name: str
    max_abs_diff: float
    tolerance: float | None = None


def input_identity(value: str | bytes) -> str:
    """One input's identity for overlap checks: a file path resolved, or the digest of a text's key."""
    import os

    if isinstance(value, bytes):
        return "key:" + value.hex()
    return os.path.realpath(value)


def input_ids(values) -> frozenset[str]:
    return frozenset(input_identity(v) for v in values)


# A class name is a label a person reads in reports and `labels.txt` (one per line).
MAX_CLASS_NAME = 256


def check_class_names(names, source: str = "the data") -> None:
    """Every class name a non-empty string of at most MAX_CLASS_NAME characters with no line break or control
    character; a DataError naming the first that is not."""
    from transferkit.errors import DataError

    if names is None:
        return
    for position, name in enumerate(names, start=1):
        shown = repr(str(name)[:40]) + ("…" if len(str(name)) > 40 else "")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{source}: class name {position} is {shown}; expected a non-empty name")
        if len(name) > MAX_CLASS_NAME:
            raise DataError(f"{source}: class name {position} ({shown}) has {len(name):,} characters; expected at "
                            f"most {MAX_CLASS_NAME}")
        if any(ord(c) < 32 or c == "\x7f" for c in name):
            raise DataError(f"{source}: class name {position} ({shown}) holds a line break or control character")


class Task(abc.ABC):
    """Base class of a transfer-learning task plugin.

    A task owns what differs between tasks and nothing else: its config
    sections (`config_class`, a frozen dataclass), reading its data into
    `tf.data`, the whole model it builds on a backbone with its loss and
    metrics, its serving signatures and its evaluation report. Freezing,
    stages, checkpoints, the feature cache, export and serving are shared
    machinery in `transferkit.models` and `transferkit.serving`.

    Example of a third-party task, shipped in its own package and declared in
    its `setup.cfg` as `[options.entry_points] transferkit.tasks =
    regression = my_pkg.regression`:

    ```python
    import dataclasses
    import keras
    from transferkit import Task, TaskData, register_task

    @dataclasses.dataclass(frozen=True)
    class RegressionConfig:
        data: dict = dataclasses.field(default_factory=dict)

    @register_task("image_regression")
    class ImageRegression(Task):
        \"\"\"Predicts one number per image.\"\"\"
        config_class = RegressionConfig

        def datasets(self):
            ...  # return TaskData(train=..., val=..., train_plain=..., info={"image_size": [64, 64]})

        def build_model(self, backbone, info, backbone_training=False):
            inputs = keras.Input((*info["image_size"], 3), name="pixels")
            x = backbone.model(backbone.normalization(inputs), training=backbone_training or False)
            x = keras.layers.GlobalAveragePooling2D()(x)
            return keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(x))

        def compile(self, model, optimizer=None):
            model.compile(optimizer=optimizer, loss="mse")
    ```

    Tests of a new task take one call: `transferkit.testing.run_task_test`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type]
    # Backbone layers the task's model never reads (BERT's pooler under a pooling head): kept out
    # of the backbone's blocks, so freeze plans neither count nor unfreeze them.
    unused_backbone_layers: ClassVar[tuple[str, ...]] = ()
    # The typed raw-input -> model-input step (`transferkit.preprocessing.Preprocessor`); None: the task has none.
    preprocessor_class: ClassVar["type[Preprocessor] | None"] = None

    def __init__(self, config: "RunConfig", info: Mapping[str, Any] | None = None):
        self.config = config
        # What the data told the task (class names, input size, ...): set by
        # `datasets()` while training, or from a run's info.json when loaded.
        self.info: dict[str, Any] = dict(info or {})

    # -- configuration ------------------------------------------------------

    @property
    def task_config(self) -> Any:
        return self.config.task_config

    @classmethod
    def default_stages(cls) -> list["StageConfig"]:
        """Schedule used when the config has no `stages`: frozen, then top blocks."""
        from transferkit.config_sections import FreezeConfig, StageConfig

        return [
            StageConfig(name="head", freeze=FreezeConfig(backbone=True), epochs=5, learning_rate=1e-3),
            StageConfig(name="finetune", freeze=FreezeConfig(top_blocks=2), epochs=3,
                        learning_rate=1e-4, decay="cosine"),
        ]

    @classmethod
    def validate_config(cls, config: "RunConfig") -> None:
        """Cross-section checks; raise ConfigError naming the key."""

    @classmethod
    def load_backbone(cls, backbone_config, load_weights: bool | None = None) -> "FeatureBackbone":
        """The backbone a config names, with the layers this task never uses left out of its blocks."""
        import dataclasses as _dataclasses

        from transferkit.models.backbones import load_backbone

        if load_weights is not None:
            backbone_config = _dataclasses.replace(backbone_config, load_weights=load_weights)
        return load_backbone(backbone_config, unused_layers=cls.unused_backbone_layers)

    @classmethod
    def example_config(cls, root: Path) -> dict[str, Any] | None:
        """A tiny run config of this task on data it generates under `root`, or None.

        The shared test kit runs `transferkit.testing.run_task_test` on it for every registered
        task (build, fit each stage, reload, feature-cache parity, export, serving parity), so a
        task that provides one is checked by the suite without a test of its own.
        """
        return None

    @classmethod
    def data_section_of(cls, config: "RunConfig") -> "DataSection | None":
        """The config's `data` section when the task's config declares one of the shared kind (`DataSection`)."""
        from transferkit.config_sections import DataSection

        fields = {f.name for f in dataclasses.fields(config.task_config)}
        data = config.task_config.data if "data" in fields else None
        return data if isinstance(data, DataSection) else None

    def data_section(self) -> "DataSection | None":
        return self.data_section_of(self.config)

    def batch_size(self) -> int:
        """The global batch size of the task's datasets (the feature cache batches the same way)."""
        data = self.data_section()
        return int(data.batch_size) if data is not None else 32

    def config_for_evaluation(self, info: Mapping[str, Any], val: str | None) -> "RunConfig":
        """This run's config re-pointed at new validation data, keeping what the model was trained with.

        The default handles the usual `data` section: `val` is replaced and
        recorded `class_names` are pinned (the model's output order, even if
        the training folder changed since).
        """
        data = self.data_section()
        if data is None:
            return self.config
        changes: dict[str, Any] = {}
        if "class_names" in info:
            changes["class_names"] = list(info["class_names"])
        if val is not None:
            changes["val"] = val
        if not changes:
            return self.config
        new_data = dataclasses.replace(data, **changes)
        return self.config.replace(task_config=dataclasses.replace(self.task_config, data=new_data))

    # -- preprocessing ---------------------------------------------------------

    def build_preprocessor(self) -> "Preprocessor | None":
        """The preprocessor the run's config describes (before any data is read); None without one."""
        return None

    def preprocessor(self, info: Mapping[str, Any] | None = None) -> "Preprocessor | None":
        """The run's preprocessor: recorded in `info` (or `self.info`) once data was read, else from the config.

        `datasets()` records it as `info["preprocessor"]`; runs written before preprocessors existed
        are read through the class's `from_legacy_info`.
        """
        info = self.info if info is None else info
        if self.preprocessor_class is None:
            return None
        if info:
            return self.preprocessor_class.from_info(info)
        return self.build_preprocessor()

    # -- data ----------------------------------------------------------------

    @abc.abstractmethod
    def datasets(self) -> TaskData:
        """Reads the task's data into batched `tf.data` pipelines; the runner sets `self.info` from the result."""

    # -- model ---------------------------------------------------------------

    @abc.abstractmethod
    def build_model(self, backbone: "FeatureBackbone", info: Mapping[str, Any],
                    backbone_training: bool = False) -> "keras.Model":
        """The whole model on `backbone`, from the task's inputs to its outputs.

        The backbone runs in inference mode unless `backbone_training` (a
        stage that trains BatchNormalization). Calling it again with the same
        backbone must reuse the same head layers, so that models built for
        different stages share their weights: build the head once and cache it.
        """

    def register_keras_objects(self) -> None:
        """Imports the modules that register the task's custom Keras layers and losses.

        Called before a saved model is loaded, so that a fresh process (the
        CLI's evaluate, predict or export) can deserialise it.
        """

    def cache_split(self, model: "keras.Model", backbone: "FeatureBackbone") -> CacheSplit | None:
        """The part of `model` the feature cache may compute once, and the rest; None for no cache.

        Called for each stage after its freeze plan is applied: the
        extractor must contain only frozen layers. Most tasks cache only
        while the whole backbone is frozen (`backbone.is_frozen()`); a task
        may also cut below its lowest trainable block
        (`backbone.frozen_prefix()`).
        """
        return None

    @abc.abstractmethod
    def compile(self, model: "keras.Model", optimizer: Any = None) -> None:
        """Compiles `model` (the full model or `cache_split(...).trainable`) with the task's loss and metrics."""

    def monitor(self) -> tuple[str, str]:
        """The validation quantity that picks the best checkpoint, and its mode."""
        return "val_loss", "min"

    def score(self) -> tuple[str, str]:
        """The `metrics.json` value that sums up a finished run (what `compare` reports), and its mode.

        By default the monitor without its `val_` prefix; a task whose
        evaluation computes something better (mAP) names it here.
        """
        name, mode = self.monitor()
        return name.removeprefix("val_"), mode

    # The `metrics.json` figures a run's summary shows, in this order (recorded in info.json as
    # `summary_figures`); empty: every figure of merit the evaluation wrote.
    summary_figures: ClassVar[tuple[str, ...]] = ()

    def baseline(self) -> dict[str, Any] | None:
        """What a user would try first without transfer learning (for text, TF-IDF with logistic regression),
        fitted on this config's training split and scored on its validation split:
        `{"method": str, "metrics": {name: value, ...}, "seconds": float, ...}` with the task's score among
        the metrics. None: the task has no such method; `compare`'s `scratch` recipe is its baseline."""
        return None

    def baseline_is_cheap(self, info: Mapping[str, Any]) -> bool:
        """Whether `train` fits `baseline()` for the run's summary (it should take seconds)."""
        return False

    def calibrate(self, model: "keras.Model", data: TaskData) -> None:
        """Fits, on `data`'s validation split once training ends, what the task chooses there rather than
        learns (a multi-label model's decision thresholds), into `model`'s own non-trainable weights, so it
        is saved in `model.keras` and every export. By default nothing."""

    # -- evaluation and prediction -------------------------------------------

    def evaluation(self, info: Mapping[str, Any], records: Sequence[Any] | None) -> "Evaluation | None":
        """The task's streaming evaluation (`transferkit.evaluation.Evaluation`); None: Keras' own metrics.

        `records` are the validation examples' metadata by row (`TaskData.val_records`).
        """
        return None

    def evaluate(self, model: "keras.Model", data: TaskData, info: Mapping[str, Any],
                 report_dir: Path) -> dict[str, Any]:
        """Metrics of `model` on `data`'s validation split; the task's `evaluation` also writes its report."""
        from transferkit.evaluation import run_evaluation

        evaluation = self.evaluation(info, data.val_records)
        if evaluation is not None and data.val_indexed is not None:
            return run_evaluation(model, data.val_indexed, evaluation, Path(report_dir))
        self.compile(model)  # loaded models come uncompiled
        results = model.evaluate(data.val, return_dict=True, verbose=0)
        return {k: float(v) for k, v in results.items()}

    def predict(self, model: "keras.Model", paths: Sequence[str], info: Mapping[str, Any],
                save_dir: Path | None = None, **options: Any) -> Iterable[tuple[str, Any]]:
        """Yields `(path, prediction)` for each input file; `describe_prediction` prints one."""
        raise NotImplementedError(f"task {self.name!r} does not implement predict")

    # Whether `predict_texts` takes texts typed on the command line (`transferkit predict RUN --text ...`).
    takes_texts: ClassVar[bool] = False

    def predict_texts(self, model: "keras.Model", texts: Sequence[str], info: Mapping[str, Any],
                      top_k: int = 3) -> list[Any]:
        """One prediction per text, for tasks that read text (`takes_texts`)."""
        raise NotImplementedError(f"task {self.name!r} does not take texts")

    def describe_prediction(self, prediction: Any) -> str:
        """One prediction as indented lines, for the terminal."""
        return self.describe(prediction)

    # The named outputs of `serving_default` that `decode` reads: how a served answer finds its task.
    output_keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def decode(cls, outputs: Mapping[str, Any], top_k: int | None = None) -> list[Any]:
        """A batch of `serving_default` outputs (gRPC arrays, or REST rows batched) -> one record per example.

        The records are those `predict` yields, so the CLI and both clients print local and served
        predictions alike, with no branch per task.
        """
        raise NotImplementedError(f"task {cls.name!r} does not decode served outputs")

    @classmethod
    def describe(cls, record: Any) -> str:
        """One record (from `predict` or `decode`) as indented lines, for the terminal."""
        return f"  {record}"

    @classmethod
    def decode_edge(cls, outputs: Mapping[str, Any], labels: list[str], top_k: int = 3) -> list[Any]:
        """A batch of an exported (LiteRT, ONNX) file's outputs -> one record per example, as `predict`
        gives them; the file's `labels` name the classes. A ValueError when the outputs do not fit."""
        raise NotImplementedError(f"task {cls.name!r} does not decode edge outputs")


    # -- what travels with the model -----------------------------------------

    def artifacts(self, info: Mapping[str, Any]) -> dict[str, str]:
        """Text files written next to the run and into the SavedModel's `assets/` (name -> content)."""
        return {}

    def edge_model(self, model: "keras.Model", info: Mapping[str, Any]) -> "EdgeModel | None":
        """What `transferkit export --format tflite|onnx` converts and how it is scored
        (`transferkit.edge.EdgeModel`); None: the task has no edge export."""
        return None

    def saved_files(self, info: Mapping[str, Any]) -> dict[str, str]:
        """What travels with the model: the task's `artifacts` and its preprocessor's `preprocessor.json`."""
        from transferkit.preprocessing import FILE_NAME

        files = dict(self.artifacts(info))
        preprocessor = self.preprocessor(info)
        if preprocessor is not None:
            files[FILE_NAME] = preprocessor.to_json()
        return files

    # -- serving ---------------------------------------------------------------

    @abc.abstractmethod
    def serving_signatures(self, model: "keras.Model", info: Mapping[str, Any]) -> dict[str, Any]:
        """`tf.function`s with input signatures to export, keyed by signature name (with `serving_default`)."""

    @abc.abstractmethod
    def serving_examples(self, info: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
        """Up to `count` single-example `serving_default` inputs ({input name: value}), from real data.

        Export replays them as TF Serving warmup requests and uses them for
        the parity check.
        """

    @abc.abstractmethod
    def check_serving(self, model: "keras.Model", signatures: Mapping[str, Any],
                      examples: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> list[ParityCheck]:
        """Compares the reloaded SavedModel's `signatures` with the Keras `model` on `examples`."""
