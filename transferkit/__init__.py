"""transferkit: transfer-learning tasks on Keras, exported for TF Serving.

Importing the package is cheap: TensorFlow loads when a task, a backbone or
the serving code first needs it.

Example:

```python
import transferkit as tk

run = tk.train("benchmarks/configs/hymenoptera.yaml", output="runs/hymenoptera")
print(run.summary())
tk.load("runs/hymenoptera").predict(["ant.jpg"])
```
"""

from transferkit.config import RunConfig, load_config
from transferkit.errors import ConfigError, RegistryError, TransferkitError
from transferkit.registry import available_tasks, get_task, register_task
from transferkit.task import Task, TaskData
from transferkit.version import __version__

# The Python API (transferkit.api), imported on first use so that `import transferkit` stays light.
_API = ("Client", "Run", "compare", "load", "serve", "train")


def __getattr__(name: str):
    if name in _API:
        from transferkit import api

        return getattr(api, name)
    if name == "presets":
        import importlib

        return importlib.import_module("transferkit.presets")
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


__all__ = [
    *_API,
    "presets",
    "ConfigError",
    "RegistryError",
    "RunConfig",
    "Task",
    "TaskData",
    "TransferkitError",
    "__version__",
    "available_tasks",
    "get_task",
    "load_config",
    "register_task",
]
