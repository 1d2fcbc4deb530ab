"""Quiet start-up: TensorFlow's C++ start-up lines are held back unless the user asks for them.

TensorFlow 2.21 logs through absl before its log level is read, so
`TF_CPP_MIN_LOG_LEVEL` does not stop lines such as "failed call to cuInit:
UNKNOWN ERROR (303)" on a healthy CPU machine. The only reliable filter is the
process's own stderr: it is pointed at a temporary file while TensorFlow
imports and initialises its devices, and afterwards only lines that are not
known start-up noise are written back.
"""

from __future__ import annotations

import contextlib
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
