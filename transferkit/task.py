"""The Task contract: what differs between transfer-learning tasks."""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from transferkit.config import RunConfig, StageConfig
    from transferkit.models.backbones import Backbone


@dataclasses.dataclass
class TaskData:
    """What `Task.datasets()` returns.

    `train` and `val` yield `(inputs, targets)` batches; `inputs` are float32
    pixels in 0..255 (the backbone's own normalisation runs inside the model).
    `train_augmented` says whether `train` applies random augmentation: if it
    does, backbone features cannot be cached; `train_unaugmented` is then the
    same shuffled data without augmentation, for stages that turn it off
    (`stages[].augment: false`). `info` carries what must travel
    with the model (class names, ...). `problems` lists skipped inputs with
    the reason, for the run's report.
    """

    train: "tf.data.Dataset"
    val: "tf.data.Dataset | None"
    train_plain: "tf.data.Dataset"  # the training data without augmentation or shuffling
    info: dict[str, Any]
    train_augmented: bool = False
    train_unaugmented: "tf.data.Dataset | None" = None
    class_weight: dict[int, float] | None = None
    problems: list[dict[str, str]] = dataclasses.field(default_factory=list)
    steps_per_epoch: int | None = None


class Task(abc.ABC):
    """Base class of a transfer-learning task plugin.

    A task owns what differs between tasks and nothing else: its config
    sections (`config_class`), reading its data into `tf.data`, the head it
    puts on a backbone with its loss and metrics, its serving signatures and
    its evaluation report. Freezing, stages, checkpoints, export and serving
    are shared machinery in `transferkit.models` and `transferkit.serving`.

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
            ...  # return TaskData(train=..., val=..., train_plain=..., info={})

        def build_head(self, backbone):
            return keras.Sequential([keras.layers.Dense(1, dtype="float32")])

        def loss(self):
            return "mse"
    ```

    Tests of a new task take one call: `transferkit.testing.run_task_test`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type]
    # Whether the head reads only the backbone's pooled features, so that the
    # runner may cache them while the backbone is frozen.
    head_uses_pooled_features: ClassVar[bool] = True

    def __init__(self, config: "RunConfig"):
        self.config = config

    # -- configuration ------------------------------------------------------

    @property
    def task_config(self) -> Any:
        return self.config.task_config

    @classmethod
    def default_stages(cls) -> list["StageConfig"]:
        """Schedule used when the config has no `stages`: frozen, then top blocks."""
        from transferkit.config import FreezeConfig, StageConfig

        return [
            StageConfig(name="head", freeze=FreezeConfig(backbone=True), epochs=5, learning_rate=1e-3),
            StageConfig(name="finetune", freeze=FreezeConfig(top_blocks=2), epochs=3,
                        learning_rate=1e-4, decay="cosine"),
        ]

    @classmethod
    def validate_config(cls, config: "RunConfig") -> None:
        """Cross-section checks; raise ConfigError naming the key."""

    # -- data ----------------------------------------------------------------

    @abc.abstractmethod
    def datasets(self) -> TaskData:
        """Reads the task's data into batched `tf.data` pipelines."""

    # -- model ---------------------------------------------------------------

    @abc.abstractmethod
    def build_head(self, backbone: "Backbone") -> "keras.Model":
        """The head, a model from the backbone's pooled features to outputs."""

    @abc.abstractmethod
    def loss(self) -> Any:
        """A Keras loss (object or name)."""

    def metrics(self) -> list[Any]:
        """Keras metrics compiled into the model."""
        return []

    def monitor(self) -> tuple[str, str]:
        """The validation quantity that picks the best checkpoint, and its mode."""
        return "val_loss", "min"

    # -- serving and evaluation ----------------------------------------------

    def serving_signatures(self, model: "keras.Model", info: dict[str, Any]) -> dict[str, Any]:
        """`tf.function`s to export, keyed by signature name."""
        raise NotImplementedError(f"task {self.name!r} does not define serving signatures yet")

    def serving_preprocess(self, encoded: bytes, info: dict[str, Any]):
        """One encoded input -> the model's input, as `serving_default` does in its graph.

        Export uses it to check the SavedModel against the Keras model.
        """
        raise NotImplementedError(f"task {self.name!r} does not define serving preprocessing yet")

    def evaluate(self, model: "keras.Model", data: "tf.data.Dataset", info: dict[str, Any],
                 report_dir: Path) -> dict[str, Any]:
        """Computes metrics on `data`, writes report files, returns the metrics."""
        model.compile(loss=self.loss(), metrics=self.metrics())  # loaded models come uncompiled
        results = model.evaluate(data, return_dict=True, verbose=0)
        return {k: float(v) for k, v in results.items()}
