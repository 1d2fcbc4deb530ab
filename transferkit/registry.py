"""The task registry: `register_task(name)` is the one way a task is added.

Built-in tasks register when `transferkit.plugins` is imported (explicit
imports there). Third-party packages declare an entry point in the group
`transferkit.tasks`; the registry loads those lazily, the first time a task is
looked up or listed, each inside its own error boundary: a plugin that fails to
import is reported once and skipped, and the others keep working. Set
`TRANSFERKIT_DISABLE_PLUGIN_AUTOLOAD=1` to skip entry points altogether.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from transferkit.config_sections import COMMON_SECTIONS
from transferkit.errors import RegistryError, TransferkitError

if TYPE_CHECKING:
    from transferkit.task import Task

ENTRY_POINT_GROUP = "transferkit.tasks"
DISABLE_AUTOLOAD_ENV = "TRANSFERKIT_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN = "built-in"


T = TypeVar("T", bound=type)


@dataclasses.dataclass(frozen=True)
class TaskEntry:
    """A registered task and where it came from."""

    name: str
    task_class: type
    source: str  # "built-in" or the distribution name that shipped it

    @property
    def description(self) -> str:
        doc = (self.task_class.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be loaded."""

    entry_point: str
    distribution: str
    error: str

    def __str__(self):
        return (f"task plugin {self.entry_point!r} from package {self.distribution!r} "
                f"failed to load and was skipped: {self.error}")


_tasks: dict[str, TaskEntry] = {}
_failures: list[PluginFailure] = []
_lock = threading.RLock()
_builtins_loaded = False
_entry_points_loaded = False
# The distribution whose entry point is being imported; tasks registered while
# it imports are attributed to it.
_loading_source: str | None = None


def _source_of(cls: type) -> str:
    if _loading_source is not None:
        return _loading_source
    module = getattr(cls, "__module__", "") or ""
    if module == "transferkit" or module.startswith("transferkit."):
        return BUILTIN
    return module.split(".")[0] or "unknown"


def _validate_task_class(name: str, cls: type) -> None:
    """Checks a task class when it registers, so a broken plugin fails at import with a clear message."""
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        raise TypeError(f"register_task({name!r}): {cls.__qualname__} does not implement {', '.join(abstract)} "
                        f"(see transferkit.Task)")
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"register_task({name!r}): {cls.__qualname__}.config_class must be a dataclass. "
                        f"Received: {config_class!r}")
    clashes = sorted({f.name for f in dataclasses.fields(config_class)} & set(COMMON_SECTIONS))
    if clashes:
        raise TypeError(f"register_task({name!r}): {config_class.__qualname__} defines section(s) {clashes}, "
                        f"which the run config reserves ({', '.join(COMMON_SECTIONS)})")


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator that registers a Task subclass under `name`.

    Example:

    ```python
    from transferkit import Task, register_task

    @register_task("my_task")
    class MyTask(Task):
        \"\"\"One line shown by `transferkit tasks`.\"\"\"
        ...
    ```
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(
            f"register_task: name must be a non-empty string of letters, digits, '_' or '-'. Received: name={name!r}"
        )

    def decorator(cls: T) -> T:
        from transferkit.task import Task

        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(
                f"register_task({name!r}) decorates Task subclasses only. Received: {cls!r}"
            )
        _validate_task_class(name, cls)
        with _lock:
            existing = _tasks.get(name)
            if existing is not None and existing.task_class is not cls:
                owner = f"{existing.task_class.__module__}.{existing.task_class.__qualname__}"
                raise RegistryError(
                    f"task {name!r} is already registered by {owner} (from {existing.source}); "
                    f"cannot register {cls.__module__}.{cls.__qualname__} under the same name"
                )
            cls.name = name
            _tasks[name] = TaskEntry(name=name, task_class=cls, source=_source_of(cls))
        return cls

    return decorator


def unregister_task(name: str) -> None:
    """Removes a task (tests and interactive sessions)."""
    with _lock:
        _tasks.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    importlib.import_module("transferkit.plugins")
    _builtins_loaded = True  # only once the import worked: a failure is raised again next time


def _load_entry_points() -> None:
    global _entry_points_loaded, _loading_source
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    if os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() not in ("", "0", "false", "False"):
        return
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "unknown"
        _loading_source = dist_name
        try:
            loaded = entry_point.load()
            # An entry point may name the Task class itself rather than a module
            # whose import registers it.
            from transferkit.task import Task

            if isinstance(loaded, type) and issubclass(loaded, Task) and loaded not in {
                e.task_class for e in _tasks.values()
            }:
                register_task(entry_point.name)(loaded)
        except Exception as error:  # the error boundary: one plugin, one report
            failure = PluginFailure(
                entry_point=f"{entry_point.name} = {entry_point.value}",
                distribution=dist_name,
                error=f"{type(error).__name__}: {error}",
            )
            _failures.append(failure)
            print(f"transferkit: warning: {failure}", file=sys.stderr)  # once: printed, not also logged
        finally:
            _loading_source = None


def load_plugins() -> None:
    """Loads built-in tasks and (once) the entry-point plugins."""
    with _lock:
        _load_builtins()
        _load_entry_points()


def reload_plugins() -> None:
    """Forgets loaded entry points and loads them again (tests)."""
    global _entry_points_loaded
    with _lock:
        for name in [n for n, e in _tasks.items() if e.source != BUILTIN]:
            del _tasks[name]
        _failures.clear()
        _entry_points_loaded = False
    load_plugins()


def available_tasks() -> dict[str, TaskEntry]:
    """All registered tasks by name, loading plugins first."""
    load_plugins()
    with _lock:
        return dict(sorted(_tasks.items()))


def plugin_failures() -> list[PluginFailure]:
    load_plugins()
    return list(_failures)


def get_task(name: str) -> type["Task"]:
    """The Task class registered under `name`; unknown names list the choices."""
    tasks = available_tasks()
    if name in tasks:
        return tasks[name].task_class
    close = difflib.get_close_matches(str(name), list(tasks), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RegistryError(
        f"unknown task {name!r}.{hint} Available tasks: {', '.join(tasks) or '(none)'}"
    )


def task_for_outputs(outputs: Mapping[str, Any]) -> type["Task"]:
    """The registered task whose `output_keys` a served answer has (the most specific when several do)."""
    keys = set(outputs)
    matches = [entry.task_class for entry in available_tasks().values()
               if entry.task_class.output_keys and entry.task_class.output_keys <= keys]
    if not matches:
        raise TransferkitError(f"no registered task reads a served answer with outputs {sorted(keys)}")
    return max(matches, key=lambda cls: len(cls.output_keys))


def preprocessor_classes() -> dict[str, type]:
    """The preprocessor classes of the registered tasks, by class name (as a saved config names them)."""
    return {entry.task_class.preprocessor_class.__name__: entry.task_class.preprocessor_class
            for entry in available_tasks().values() if entry.task_class.preprocessor_class is not None}
