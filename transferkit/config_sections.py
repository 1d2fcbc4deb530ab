"""The sections every run config shares: `backbone`, `stages` (with their freeze plans) and `training`.

`RunConfig` holds them next to the task's own sections, which the task's
`config_class` declares. Reading YAML into these classes is
transferkit.config_loading's job; this module imports neither the registry nor
the tasks, so tasks and models can import it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import yaml

from transferkit.errors import ConfigError
from transferkit.typed import check, to_dict

# The run config's own top-level sections; a task's config sections sit next to them, and the
# registry refuses a task whose config_class defines one of these.
COMMON_SECTIONS = ("task", "backbone", "stages", "training")


class DataSection:
    """What core may read of a task's `data` section; a task's data config subclasses it to say it has these.

    `compare` subsamples `train_fraction`, `evaluate --data` replaces `val` and
    pins `class_names`, a run evaluates `test` once at its end, the feature cache batches by `batch_size`. A task
    whose config has no `data` section of this kind simply does not get those.
    """

    train: str
    val: str | None
    test: str | None
    batch_size: int
    class_names: list[str] | None
    train_fraction: float


class ImageDataSection(DataSection):
    """A `DataSection` of a task whose inputs are images of `image_size` (compare's `--native-size`)."""

    image_size: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Which pretrained backbone to start from.

    `preset` is a KerasHub or KerasCV preset name, a name imported into the
    local cache (`transferkit presets import`), or a path to a preset folder
    (KerasHub, timm or Hugging Face format). `config` builds a randomly
    initialised backbone from keyword arguments instead (tests, experiments).
    """

    preset: str | None = "efficientnet-lite0"
    architecture: str | None = None
    config: dict[str, Any] | None = None
    load_weights: bool = True

    def __post_init__(self):
        if self.preset is None and self.config is None:
            raise ConfigError("backbone: set either `preset` or `architecture` + `config`")
        if self.config is not None and not self.architecture:
            raise ConfigError("backbone.architecture: required with backbone.config, e.g. 'efficientnet'")


@dataclasses.dataclass(frozen=True)
class FreezeConfig:
    """What trains in a stage. Exactly one selector may be set.

    backbone: true freezes the whole backbone; top_blocks: N unfreezes the
    last N blocks; fraction: f unfreezes the last fraction f of the blocks;
    pattern: a regular expression on layer names to unfreeze; all: true
    unfreezes everything.
    """

    backbone: bool | None = None  # None: not given
    top_blocks: int | None = None
    top_layers: int | None = None
    fraction: float | None = None
    pattern: str | None = None
    all: bool = False
    train_batchnorm: bool = False

    def __post_init__(self):
        chosen = [
            name
            for name in ("backbone", "top_blocks", "top_layers", "fraction", "pattern", "all")
            if getattr(self, name) not in (None, False)
        ]
        if len(chosen) > 1:
            raise ConfigError(
                f"freeze: set exactly one of backbone, top_blocks, top_layers, fraction, pattern, all; "
                f"received {', '.join(chosen)}"
            )
        if self.backbone is False and chosen:
            # What configs written before `backbone` could be left out said next to another selector.
            object.__setattr__(self, "backbone", None)
        if self.backbone is False and not chosen:
            # Read literally, "do not freeze the backbone"; silently freezing it would be the opposite.
            raise ConfigError("freeze.backbone: false on its own selects nothing to train; to train the whole "
                              "backbone set all: true, or choose top_blocks, top_layers, fraction or pattern")
        if self.top_blocks is not None:
            check(self.top_blocks >= 1, "freeze.top_blocks", self.top_blocks, "an integer >= 1")
        if self.top_layers is not None:
            check(self.top_layers >= 1, "freeze.top_layers", self.top_layers, "an integer >= 1")
        if self.fraction is not None:
            check(0.0 < self.fraction <= 1.0, "freeze.fraction", self.fraction, "a number in (0, 1]")
        if self.pattern is not None:
            import re

            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ConfigError(f"freeze.pattern: not a valid regular expression {self.pattern!r}: {error}")

    @property
    def freezes_whole_backbone(self) -> bool:
        return bool(self.backbone) or not any(
            getattr(self, n) not in (None, False)
            for n in ("top_blocks", "top_layers", "fraction", "pattern", "all")
        )


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One fine-tuning stage: a freeze plan, a length and an optimizer."""

    name: str = "stage"
    freeze: FreezeConfig = dataclasses.field(default_factory=lambda: FreezeConfig(backbone=True))
    epochs: int = 5
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    weight_decay: float | None = None  # None: the optimizer's default (AdamW 0.004, others none)
    warmup_epochs: float = 0.0
    decay: Literal["constant", "cosine"] = "constant"
    # Apply the task's augmentation in this stage. false lets a frozen stage
    # train on cached features even when later stages augment.
    augment: bool = True
    # Discriminative learning rates: multiplier per block group, earliest first,
    # e.g. {"block_6": 1.0, "block_5": 0.5}; keys are regular expressions on
    # variable paths; unmatched variables use 1.0.
    lr_multipliers: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check(self.epochs >= 1, f"stages[{self.name}].epochs", self.epochs, "an integer >= 1")
        check(self.learning_rate > 0, f"stages[{self.name}].learning_rate", self.learning_rate, "a number > 0")
        check(self.warmup_epochs >= 0, f"stages[{self.name}].warmup_epochs", self.warmup_epochs, "a number >= 0")
        for pattern, multiplier in self.lr_multipliers.items():
            check(multiplier >= 0, f"stages[{self.name}].lr_multipliers.{pattern}", multiplier, "a number >= 0")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Run-wide training options."""

    seed: int = 0
    early_stopping_patience: int | None = None
    feature_cache: Literal["auto", "memory", "disk", "off"] = "auto"
    # auto: cached features beyond this many MB (per run) are written to disk and read back by batch.
    feature_cache_memory_mb: int = 1024
    mixed_precision: bool = False
    # auto: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy with several GPUs.
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    # tf.data's autotuner runs on a thread of its own; null: off with 4 CPUs or fewer, where that
    # thread takes time from the model's ops (see streaming.pipeline_options), on otherwise.
    data_autotune: bool | None = None
    tensorboard: bool = True
    verbose: int = 1  # 0: silent; 1: a bar per batch on a terminal, a line per epoch in a file; 2: a line per epoch

    def __post_init__(self):
        if self.early_stopping_patience is not None:
            check(self.early_stopping_patience >= 1, "training.early_stopping_patience",
                  self.early_stopping_patience, "an integer >= 1 or null")
        check(self.feature_cache_memory_mb >= 0, "training.feature_cache_memory_mb", self.feature_cache_memory_mb,
              "an integer >= 0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: the common sections plus the task's own sections.

    `task_config` holds an instance of the task's `config_class`; in YAML its
    fields sit at the top level next to the common sections.
    """

    task: str
    task_config: Any
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    stages: tuple[StageConfig, ...] = ()
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        data = {"task": self.task}
        data.update(to_dict(self.task_config))
        data["backbone"] = to_dict(self.backbone)
        data["stages"] = to_dict(list(self.stages))
        data["training"] = to_dict(self.training)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)
