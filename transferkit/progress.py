"""Progress bars for long steps (data checks, feature extraction, evaluation, packing), on stderr.

A bar appears only after a step has run `DELAY_SECONDS`, only on a terminal
(tqdm's own check) or in a Jupyter notebook (tqdm's notebook bar, when
ipywidgets is installed), and never with `--quiet` (`TRANSFERKIT_QUIET=1`):
logs and pipes stay clean.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

QUIET_ENV = "TRANSFERKIT_QUIET"
DELAY_SECONDS = 2.0


def quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (whose stderr is no terminal, yet shows widgets)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _bar_class():
    """(tqdm class, disable): the notebook bar in a Jupyter kernel with ipywidgets, else the terminal bar,
    which turns itself off when stderr is not a terminal."""
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401  (tqdm's notebook bar is a widget)
            from tqdm.notebook import tqdm as notebook_bar

            return notebook_bar, False
        except ImportError:
            pass
    from tqdm import tqdm

    return tqdm, None


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """`items`, with a bar of counts, rate and ETA while they are consumed (see the module docstring)."""
    if quiet():
        return items
    tqdm, disable = _bar_class()

    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:  # a generator, or a tf.data dataset of unknown length
            total = None
    return tqdm(items, desc=desc, total=total, unit=unit, disable=disable, leave=False, delay=DELAY_SECONDS,
                mininterval=0.5, dynamic_ncols=True)


def dataset_length(dataset) -> int | None:
    """A tf.data dataset's number of elements when it is known, else None."""
    import tensorflow as tf

    count = int(dataset.cardinality())
    return count if count >= 0 and count != tf.data.INFINITE_CARDINALITY else None


def progress_bar(total: int | None, desc: str, unit: str = "it"):
    """A bar updated by hand (`update(n)`, `set_postfix_str(step)`), for work that is not one loop;
    a context manager. The same rules as `progress`: on a terminal, after a delay, never when quiet."""
    tqdm, disable = _bar_class()
    # disable=True draws nothing and keeps the same methods.
    return tqdm(total=total, desc=desc, unit=unit, disable=True if quiet() else disable, leave=False,
                delay=DELAY_SECONDS, mininterval=0.5, dynamic_ncols=True)
