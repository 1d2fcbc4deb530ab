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


class FreezePlanError(TransferkitError, ValueError):
    """A freeze plan cannot be applied to this backbone."""
