"""Typed run configuration: YAML in, frozen dataclasses out.

A run is described by one YAML file. Common sections (`task`, `backbone`,
`stages`, `training`) are defined here; every other top-level section belongs
to the task, whose `config_class` (a dataclass) declares them. Loading converts
plain YAML values into those dataclasses field by field, checking types as it
goes, so a mistake is reported with its dotted key, the value received and what
was expected, before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import difflib
import enum
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from transferkit.errors import ConfigError
from transferkit.fileio import atomic_write_text  # noqa: F401  (re-exported)
from transferkit.fileio import load_yaml
from transferkit.registry import COMMON_SECTIONS  # the run config's own sections, checked when plugins register

# --------------------------------------------------------------------------
# Generic conversion of plain values into typed dataclasses.
# --------------------------------------------------------------------------


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        inner = _type_name(args[0]) if args else "any"
        return f"a list of {inner}"
    if origin in (dict, Mapping):
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _fail(key: str, value: Any, tp: Any, extra: str = "") -> ConfigError:
    message = f"{key or '<root>'}: expected {_type_name(tp)}, received {_describe(value)}"
    return ConfigError(message + (f"; {extra}" if extra else ""))


def convert(value: Any, tp: Any, key: str = "") -> Any:
    """Converts a plain YAML value to type `tp`, raising ConfigError on mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, key)
            except ConfigError as error:
                errors.append(error)
        # A single non-null option gives the most useful message.
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1:
            raise errors[0]
        raise _fail(key, value, tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 reads a bare off/on/no/yes as a boolean: take the word the user meant.
            words = ("off", "no", "false") if value is False else ("on", "yes", "true")
            meant = [c for c in choices if c in words]
            if meant:
                return meant[0]
        elif value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        raise _fail(key, value, tp, f"did you mean {close[0]!r}?" if close else "")
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _fail(key, value, tp)
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _fail(key, value, tp, f"expected {len(args)} items")
            return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _fail(key, value, tp)
        args = typing.get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _fail(key, value, tp)
        return from_dict(tp, value, key)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise _fail(key, value, tp) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(key, value, tp)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(key, value, tp)
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; accept what float() accepts.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise _fail(key, value, tp)
        if not math.isfinite(number):  # .inf and .nan pass YAML and float(), and train to NaN
            raise ConfigError(f"{key}: expected a finite number. Received: {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(key, value, tp)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _fail(key, value, tp)


def from_dict(cls: type, data: Mapping[str, Any], key: str = "") -> Any:
    """Builds dataclass `cls` from a mapping; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(str(name), list(fields), n=1)
        where = f"{key}.{name}" if key else str(name)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{where}: unknown key{hint} Known keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, field in fields.items():
        sub_key = f"{key}.{name}" if key else name
        if name in data:
            kwargs[name] = convert(data[name], hints[name], sub_key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub_key}: required key is missing; expected {_type_name(hints[name])}")
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(_rebase(str(error), key)) from None


def _rebase(message: str, key: str) -> str:
    """Puts a section's own validation message under its full dotted key.

    `__post_init__` checks name keys from their section down ("freeze: ...",
    "freeze.top_blocks: ...", "stages[name].epochs: ..."); the loader knows
    where the section sits ("stages[1].freeze") and swaps the first segment.
    """
    if not key:
        return message
    section = re.sub(r"\[[^\]]*\]$", "", key.split(".")[-1])
    match = re.match(rf"^{re.escape(section)}(\[[^\]]*\])?(?=[.:])", message)
    if match:
        return key + message[match.end():]
    return f"{key}.{message}"


def to_dict(value: Any) -> Any:
    """Plain-data (YAML-safe) form of a config value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def check(condition: bool, field: str, value: Any, expected: str) -> None:
    """Raises ConfigError('field: expected ..., received ...') unless condition."""
    if not condition:
        raise ConfigError(f"{field}: expected {expected}, received {_describe(value)}")


# --------------------------------------------------------------------------
# Sections shared by every task.
# --------------------------------------------------------------------------


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
    verbose: int = 1

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


# --------------------------------------------------------------------------
# Loading: YAML file + --set overrides -> RunConfig.
# --------------------------------------------------------------------------


def apply_override(data: dict, assignment: str) -> None:
    """Applies one `dotted.key=value` override in place (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. data.batch_size=16")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {assignment!r}: empty key segment in {dotted!r}")
    value = load_yaml(raw, f"--set {assignment!r}")
    node = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(key)]
            except (ValueError, IndexError):
                raise ConfigError(f"--set {dotted}: {'.'.join(keys[:i + 1])} is not a valid list index") from None
            continue
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[:i + 1])} is {_describe(child)}, not a section")
        node = child
    if isinstance(node, list):
        try:
            node[int(keys[-1])] = value
        except (ValueError, IndexError):
            raise ConfigError(f"--set {dotted}: {keys[-1]!r} is not a valid list index") from None
    else:
        node[keys[-1]] = value


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {error.start}); expected a YAML config") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config: {error.strerror}") from None
    data = load_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, received {type(data).__name__}")
    return data


def build_run_config(data: Mapping[str, Any], *, source: str = "config") -> RunConfig:
    """Types and validates a plain mapping as a RunConfig."""
    from transferkit import registry

    data = dict(data)
    task_name = data.get("task")
    if not isinstance(task_name, str):
        raise ConfigError(f"{source}: task: expected a task name (see `transferkit tasks`), received {_describe(task_name)}")
    task_cls = registry.get_task(task_name)
    task_keys = {f.name for f in dataclasses.fields(task_cls.config_class)}
    common = {k: data.pop(k) for k in list(data) if k in COMMON_SECTIONS}
    unknown = [k for k in data if k not in task_keys]
    if unknown:
        known = sorted(task_keys | set(COMMON_SECTIONS))
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{unknown[0]}: unknown key for task {task_name!r}{hint} Known keys: {', '.join(known)}"
        )
    task_config = from_dict(task_cls.config_class, data)
    backbone = convert(common.get("backbone") or {}, BackboneConfig, "backbone")
    training = convert(common.get("training") or {}, TrainingConfig, "training")
    stages_raw = common.get("stages")
    if stages_raw is None:
        stages = tuple(task_cls.default_stages())
    else:
        stages = convert(stages_raw, tuple[StageConfig, ...], "stages")
        if not stages:
            raise ConfigError("stages: expected at least one stage, received an empty list")
    names = [s.name for s in stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"stages: stage names must be unique, received {duplicates[0]!r} twice")
    config = RunConfig(task=task_name, task_config=task_config, backbone=backbone,
                       stages=stages, training=training)
    task_cls.validate_config(config)
    return config


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: Mapping[str, Any] | None = None) -> RunConfig:
    """Loads a YAML config (or `base`), applies `key=value` overrides, validates."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(read_yaml(path))
    for assignment in overrides:
        apply_override(data, assignment)
    return build_run_config(data, source=str(path) if path else "config")


# A field whose default changed when it was added declares, in its metadata, the value that a config
# saved before it existed meant: `dataclasses.field(default="area", metadata={ABSENT: "bilinear"})`.
ABSENT = "absent"


def _fill_absent(data: dict, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name not in data:
            if ABSENT in field.metadata:
                data[field.name] = field.metadata[ABSENT]
        elif dataclasses.is_dataclass(hints[field.name]) and isinstance(data[field.name], dict):
            data[field.name] = dict(data[field.name])
            _fill_absent(data[field.name], hints[field.name])


def read_saved_config(text: str, source: str = "config.yaml") -> RunConfig:
    """A run folder's config.yaml, read with this version's schema: a field it lacks takes the value
    that configs written before the field existed meant (its `absent` metadata), else its default."""
    from transferkit import registry

    data = load_yaml(text, source) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections; found {type(data).__name__}")
    data = dict(data)
    if isinstance(data.get("task"), str):
        _fill_absent(data, registry.get_task(data["task"]).config_class)
    return build_run_config(data)


def load_saved_config(path: str | os.PathLike) -> RunConfig:
    """`read_saved_config` of a file, with the file named in errors."""
    try:
        return read_saved_config(Path(path).read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); the run's config is damaged") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the run's config: {error.strerror}") from None


def config_differences(saved_yaml: str, config: RunConfig, limit: int = 3) -> list[str]:
    """Dotted keys whose values differ between a saved config.yaml and `config` (the first `limit`)."""
    def flat(node, prefix=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from flat(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node

    try:
        saved = dict(flat(yaml.safe_load(read_saved_config(saved_yaml).to_yaml())))
    except Exception:
        return ["(the saved config cannot be read by this version)"]
    current = dict(flat(yaml.safe_load(config.to_yaml())))
    keys = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    return [f"{k}: {saved.get(k)!r} saved, {current.get(k)!r} now" for k in keys[:limit]]


def same_config(saved_yaml: str, config: RunConfig) -> bool:
    """Whether a run folder's saved config.yaml describes `config`.

    Compared after reading the saved text with this version's schema
    (`read_saved_config`), so a field that a newer transferkit added is not a
    change unless the run was made with another value than its default.
    """
    if saved_yaml == config.to_yaml():
        return True
    try:
        return read_saved_config(saved_yaml).to_yaml() == config.to_yaml()
    except Exception:  # a saved config this version cannot read is a different config
        return False


def write_config(config: RunConfig, directory: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Writes the resolved config next to a run's outputs, atomically."""
    return atomic_write_text(Path(directory) / name, config.to_yaml())
