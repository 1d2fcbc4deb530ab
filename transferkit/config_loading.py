"""Reading run configs into a RunConfig: a YAML file with `--set` overrides, or a run folder's config.yaml.

The task the config names is looked up in the registry: its `config_class`
types the task's own sections and its `validate_config` has the last word. A
run folder's saved config is read with this version's schema, so a run written
by an earlier transferkit still resumes and compares equal.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from transferkit import registry
from transferkit.config_sections import COMMON_SECTIONS, BackboneConfig, RunConfig, StageConfig, TrainingConfig
from transferkit.errors import ConfigError
from transferkit.fileio import atomic_write_text, load_yaml
from transferkit.typed import ABSENT, PATH, _describe, convert, from_dict


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
    """Loads a YAML config (or `base`), applies `key=value` overrides, validates.

    Paths written in the file (fields marked `PATH`) are relative to the file's folder, those given
    with `--set` to the working directory; either way the config holds them absolute, so the run's
    saved config.yaml works from anywhere.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(read_yaml(path))
        resolve_paths(data, Path(path).resolve().parent, source=str(path))
    for assignment in overrides:
        apply_override(data, assignment)
    resolve_paths(data, Path.cwd(), source="--set")
    return build_run_config(data, source=str(path) if path else "config")


def resolve_paths(data: dict[str, Any], folder: Path, source: str) -> None:
    """Makes the relative paths among the task's sections absolute against `folder`, in place.

    A config written before paths were read relative to their file named them relative to the working
    directory: when the path is not found next to the file but is found there, that one is used, with a
    note on stderr.
    """
    task = data.get("task")
    try:
        config_class = registry.get_task(task).config_class if isinstance(task, str) else None
    except Exception:  # an unknown task is reported by build_run_config, with its suggestions
        config_class = None
    if config_class is not None:
        _resolve_fields(data, config_class, folder, source, "")


def _resolve_fields(data: dict[str, Any], cls: type, folder: Path, source: str, prefix: str) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        value = data.get(field.name)
        key = f"{prefix}{field.name}"
        if field.metadata.get(PATH) and isinstance(value, str) and value:
            data[field.name] = _resolved_path(value, folder, source, key)
        elif dataclasses.is_dataclass(hints[field.name]) and isinstance(value, dict):
            data[field.name] = dict(value)
            _resolve_fields(data[field.name], hints[field.name], folder, source, f"{key}.")


def _resolved_path(value: str, folder: Path, source: str, key: str) -> str:
    from transferkit.paths import PACKAGE_SCHEME

    if value.startswith(PACKAGE_SCHEME):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    beside = folder / path
    if not beside.exists() and path.exists() and folder != Path.cwd():
        import sys

        print(f"transferkit: note: {source}: {key}: {value!r} is not next to the config ({beside}); using "
              f"{path.resolve()} (relative to the working directory, as older versions read configs). Write "
              f"it relative to the config file, or absolute.", file=sys.stderr)
        return str(path.resolve())
    return str(Path(os.path.normpath(beside)))


# --------------------------------------------------------------------------
# A run folder's config.yaml: written with the run, read back by later versions.
# --------------------------------------------------------------------------


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
