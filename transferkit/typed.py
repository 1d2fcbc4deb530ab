"""Plain values (parsed YAML) into typed, frozen dataclasses, checked field by field.

`convert(value, tp, key)` turns a plain value into type `tp`, `from_dict` builds
a dataclass from a mapping (unknown keys are errors) and `to_dict` is the way
back. A mismatch raises ConfigError naming the dotted key, the value received
and what was expected. Nothing here knows about runs or tasks: the shared
sections (transferkit.config_sections) and every task's own config class are
read with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

from transferkit.errors import ConfigError


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



# A field whose default changed when it was added declares, in its metadata, the value that a config
# saved before it existed meant: `dataclasses.field(default="area", metadata={ABSENT: "bilinear"})`.
ABSENT = "absent"

# A field that names a file or folder says so in its metadata: `dataclasses.field(default="", metadata={PATH: True})`.
# Written in a config file, such a path is relative to the file's folder; on the command line, to the working directory.
PATH = "path"
