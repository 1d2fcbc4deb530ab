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

import sys as _sys
import types as _types

from transferkit.config import RunConfig, load_config
from transferkit.errors import ConfigError, RegistryError, TransferkitError
from transferkit.registry import available_tasks, get_task, register_task
from transferkit.task import Task, TaskData
from transferkit.version import __version__

# The Python API. transferkit.api imports nothing heavy (TensorFlow comes with the first call that needs it).
from transferkit import presets
from transferkit.api import (
    AudioClassificationConfig,
    Client,
    ImageClassificationConfig,
    MultilabelClassificationConfig,
    ObjectDetectionConfig,
    Run,
    TextClassificationConfig,
    compare,
    load,
    lr_find,
    serve,
    train,
)

_API = ("Client", "Run", "compare", "load", "lr_find", "serve", "train")


class _Namespace(_types.ModuleType):
    """The package, whose `compare` and `lr_find` stay the API's functions when the modules of the same name
    are imported (the import system would otherwise set the package attribute to the module)."""

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Namespace

__all__ = [
    *_API,
    "AudioClassificationConfig",
    "ImageClassificationConfig",
    "MultilabelClassificationConfig",
    "ObjectDetectionConfig",
    "TextClassificationConfig",
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
