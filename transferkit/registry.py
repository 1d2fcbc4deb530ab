"""The task registry: `register_task(name)` is the one way a task is added.

Every task, built-in or not, is found through an entry point in the group
`transferkit.tasks` (transferkit's own are in its setup.cfg). The registry loads
them lazily, the first time a task is looked up or listed, each inside its own
error boundary: a plugin that fails to import is reported once and skipped, and
the others keep working. Set `TRANSFERKIT_DISABLE_PLUGIN_AUTOLOAD=1` to skip
other packages' entry points; transferkit's own still load.
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
BUILTIN_DISTRIBUTION = "transferkit"


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


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    others_disabled = os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() not in ("", "0", "false", "False")
    found_builtin = False
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "unknown"
        builtin = dist_name == BUILTIN_DISTRIBUTION
        found_builtin |= builtin
        if others_disabled and not builtin:
            continue
        _load_one(entry_point.name, f"{entry_point.name} = {entry_point.value}", entry_point.load,
                  BUILTIN if builtin else dist_name)
    if not found_builtin:
        # A source tree on sys.path without an install has no entry points: its plugin folders stand in.
        import pkgutil

        import transferkit.plugins

        for module in pkgutil.iter_modules(transferkit.plugins.__path__, "transferkit.plugins."):
            if module.ispkg:
                _load_one(module.name.rpartition(".")[2], module.name,
                          lambda name=module.name: importlib.import_module(name), BUILTIN)


def _load_one(name: str, described: str, load: Callable[[], Any], source: str) -> None:
    """Imports one plugin inside the error boundary; a Task class it names is registered as `name`."""
    global _loading_source
    _loading_source = source
    try:
        loaded = load()
        from transferkit.task import Task

        if isinstance(loaded, type) and issubclass(loaded, Task) and loaded not in {
            e.task_class for e in _tasks.values()
        }:
            register_task(name)(loaded)
    except Exception as error:  # the error boundary: one plugin, one report
        failure = PluginFailure(entry_point=described, distribution=source, error=f"{type(error).__name__}: {error}")
        _failures.append(failure)
        print(f"transferkit: warning: {failure}", file=sys.stderr)  # once: printed, not also logged
    finally:
        _loading_source = None


def load_plugins() -> None:
    """Loads (once) the tasks of every entry point, transferkit's own included."""
    with _lock:
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
