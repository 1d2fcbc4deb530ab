"""transferkit: transfer-learning tasks on Keras, exported for TF Serving.

Importing the package is cheap: TensorFlow loads when a task, a backbone or
the serving code first needs it.
"""

from transferkit.config import RunConfig, load_config
from transferkit.errors import ConfigError, RegistryError, TransferkitError
from transferkit.registry import available_tasks, get_task, register_task
from transferkit.task import Task, TaskData
from transferkit.version import __version__

__all__ = [
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
