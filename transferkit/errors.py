"""Exceptions that carry a message meant for the user."""


class TransferkitError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class ConfigError(TransferkitError, ValueError):
    """A config key or value is wrong; the message names the key and value."""


class RegistryError(TransferkitError, KeyError):
    """A task name is unknown or registered twice."""

    def __str__(self):  # KeyError quotes its argument; we want the plain message.
        return str(self.args[0]) if self.args else ""


class PresetError(TransferkitError, FileNotFoundError):
    """A backbone preset cannot be found or loaded."""


class DataError(TransferkitError, ValueError):
    """Input data is missing, empty or malformed; the message names the file."""

    @classmethod
    def for_bad_inputs(cls, problems: list[dict[str, str]], setting: str, where: str = "") -> "DataError":
        """The error for inputs skipped under `setting: error`, naming the first few."""
        listed = "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        prefix = f"{where}: " if where else ""
        return cls(f"{prefix}{len(problems)} bad input(s) with {setting}: error: {listed}{more}")


class FreezePlanError(TransferkitError, ValueError):
    """A freeze plan cannot be applied to this backbone."""


def raised_inside_tensorflow(error: BaseException) -> str | None:
    """The message of a project error raised inside a `tf.data` Python function, or None.

    TensorFlow wraps such an exception in an op error whose text starts with its own preamble and
    carries the Python traceback; the user needs the one line that names the file.
    """
    if not type(error).__module__.startswith("tensorflow"):
        return None
    text = str(error)
    for name in ("DataError", "ConfigError", "PresetError", "TransferkitError"):
        marker = f"{name}: "
        start = text.find(marker)
        if start >= 0:
            return text[start + len(marker):].split("\n", 1)[0].strip()
    return None
