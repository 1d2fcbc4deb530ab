"""Quiet start-up: TensorFlow's C++ start-up lines are held back unless the user asks for them.

TensorFlow 2.21 logs through absl before its log level is read, so
`TF_CPP_MIN_LOG_LEVEL` does not stop lines such as "failed call to cuInit:
UNKNOWN ERROR (303)" on a healthy CPU machine. The only reliable filter is the
process's own stderr: it is pointed at a temporary file while TensorFlow
imports and initialises its devices, and afterwards only lines that are not
known start-up noise are written back.

The CLI does not import TensorFlow up front (a config error or `--help` must
answer in a fraction of a second): it runs each command inside
`quiet_tensorflow_import()`, so whichever module first imports TensorFlow, in
whichever command, gets that quiet start.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from typing import Callable, Iterator

# Set by the CLI's --verbose: converters' and runtimes' own chatter is shown too.
VERBOSE_ENV = "TRANSFERKIT_VERBOSE"

# Start-up lines that say nothing is wrong on a machine without a GPU (or are hints about builds).
NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog",
    r"oneDNN custom operations are on",
    r"oneDNN supports DT_\w+ only on platforms with",
    r"Could not find cuda drivers",
    r"failed call to cuInit",
    r"cpu_feature_guard",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning",
]))


@contextlib.contextmanager
def held_stderr(keep: Callable[[str], bool]) -> Iterator[None]:
    """Points this process's stderr (the file descriptor: C++ writes there too) at a temporary file
    while the block runs, then writes back the lines `keep` accepts."""
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a descriptor
        yield
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), stderr_fd)
        try:
            yield
        finally:
            os.dup2(saved, stderr_fd)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and keep(line)]
            for line in kept:
                print(line, file=sys.stderr)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def held_tensorflow_notes():
    """Holds back TensorFlow's start-up-like notes (NOISE) that its first ops log later, e.g. oneDNN's about
    int64 when a data pipeline first runs; all is shown with --verbose."""
    return held_stderr(lambda line: verbose() or not NOISE.search(line))


def held_chatter():
    """Holds back everything but errors: converters' and runtimes' statistics; all is shown with --verbose."""
    return held_stderr(lambda line: verbose() or "error" in line.lower())


def import_tensorflow(verbose: bool = False):
    """Imports TensorFlow and initialises its devices; without `verbose`, its start-up noise is dropped."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    if verbose:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the same start-up lines as a quiet start, shown
        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with held_stderr(lambda line: not NOISE.search(line)):
        import tensorflow as tf

        tf.config.list_physical_devices()  # device platforms log while they initialise: now, not later
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing hints and the like
    return tf


class _QuietTensorFlowLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run as `import_tensorflow()` runs it: start-up noise held back, devices initialised."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        _remove_holds()  # one import only, whatever it brings
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with held_stderr(lambda line: not NOISE.search(line)):
            self._loader.exec_module(module)
            module.config.list_physical_devices()  # device platforms log while they initialise: now, not later
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing hints and the like

    def __getattr__(self, name):  # get_filename, get_resource_reader, is_package, ...: the real loader's
        if name == "_loader":
            raise AttributeError(name)
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the other finders do, and hands its spec the quiet loader."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        for finder in [f for f in sys.meta_path if f is not self]:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietTensorFlowLoader(spec.loader)
                return spec
        return None


def _remove_holds() -> None:
    for finder in [f for f in sys.meta_path if isinstance(f, _QuietTensorFlowFinder)]:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)


@contextlib.contextmanager
def quiet_tensorflow_import(verbose: bool = False) -> Iterator[None]:
    """While the block runs, the first import of TensorFlow, wherever it happens (keras, keras_hub, TF
    Serving's protos, ...), is as quiet as `import_tensorflow()`; TensorFlow is not imported here. Nothing
    changes when it is imported already, or with `verbose` (its start-up lines are shown as it imports)."""
    if verbose or "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        yield
        return
    finder = _QuietTensorFlowFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
