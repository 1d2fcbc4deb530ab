"""Evaluation as a streaming aggregator, fed by batches that carry their rows.

A task's evaluation (`Task.evaluation`) is an `Evaluation`: `update` takes
one batch (inputs, the model's outputs, targets and each example's row in the
validation listing) and keeps what it needs; `result` reduces what it kept
into metrics and writes the report. The per-example metadata (a file name, a
text, ground-truth boxes) is found by row in `TaskData.val_records`, so nothing
is stashed on the task, and an example the input pipeline dropped (a file
whose body did not decode) is simply a row that never came: it is named, not
misaligned. This is TF Model Garden's `aggregate_logs` /
`reduce_aggregated_logs` split.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


class Evaluation(abc.ABC):
    """One pass of a task's evaluation over `(inputs, targets, rows)` batches.

    Example:

    ```python
    class MeanError(Evaluation):
        def __init__(self):
            self.errors = []
        def update(self, inputs, outputs, targets, rows):
            self.errors.append(np.abs(outputs - targets).ravel())
        def result(self, report_dir):
            return {"mean_abs_error": float(np.concatenate(self.errors).mean())}
    ```
    """

    @abc.abstractmethod
    def update(self, inputs: Any, outputs: Any, targets: Any, rows: np.ndarray) -> None:
        """Takes one batch (numpy arrays, or dicts of them); `rows` index `TaskData.val_records`."""

    @abc.abstractmethod
    def result(self, report_dir: Path) -> dict[str, Any]:
        """The metrics of everything updated so far; writes the report files under `report_dir`."""


def missing_rows(seen: np.ndarray, count: int | None, records: Sequence | None,
                 explain: Callable[[Any], str] | None = None) -> list[dict[str, str]]:
    """The rows of `records` that never reached the evaluation, as problems naming each (first 100)."""
    if count is None or records is None:
        return []
    absent = np.setdiff1d(np.arange(count), seen)
    problems = []
    for row in absent[:100]:
        record = records[int(row)]
        reason = explain(record) if explain else "dropped by the input pipeline"
        problems.append({"path": str(getattr(record, "path", record)), "reason": reason})
    return problems


def run_evaluation(model: "keras.Model", batches: "tf.data.Dataset", evaluation: Evaluation,
                   report_dir: Path) -> dict[str, Any]:
    """Feeds `batches` of `(inputs, targets, rows)` through `model` into `evaluation`, then reduces it."""
    import tensorflow as tf

    from transferkit.models.inference import traced_forward

    from transferkit.progress import dataset_length, progress

    forward = traced_forward(model, batches.element_spec[0])
    for inputs, targets, rows in progress(batches, "evaluating", dataset_length(batches), unit="batch"):
        outputs = forward(inputs)
        evaluation.update(tf.nest.map_structure(np.asarray, inputs), tf.nest.map_structure(np.asarray, outputs),
                          tf.nest.map_structure(np.asarray, targets), np.asarray(rows))
    return evaluation.result(Path(report_dir))
