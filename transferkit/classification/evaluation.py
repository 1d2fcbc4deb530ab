"""`ClassificationEvaluation`: a classifier's metrics and report, aggregated batch by batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from transferkit.evaluation import Evaluation, missing_rows


class ClassificationEvaluation(Evaluation):
    """Accuracy, top-k, per-class scores and the confusion matrix, plus the worst-classified examples.

    Every task that outputs class probabilities uses it (images, spectrograms,
    texts). Probabilities are kept per example (a row of floats each); only the
    `worst_count` worst images are kept while streaming. `write_worst(report_dir,
    worst, names)` draws them: `worst` is `[(row, true, probabilities, image or
    None)]`, worst first, and `names[row]` what `records` says of that row.

    Example:

    ```python
    evaluation = ClassificationEvaluation(["cat", "dog"], top_k=1, records=paths)
    evaluation.update(images, probabilities, one_hot_labels, rows)   # per batch
    metrics = evaluation.result(Path("runs/x/report"))
    ```
    """

    def __init__(self, class_names: Sequence[str], top_k: int, records: Sequence[Any] | None = None,
                 keep_images: bool = True, write_worst: Callable | None = None, worst_count: int = 16,
                 explain_missing: Callable[[Any], str] | None = None, history_keys=("loss", "accuracy")):
        self.class_names = list(class_names)
        self.top_k = top_k
        self.records = records
        self.keep_images = keep_images
        self.write_worst = write_worst
        self.worst_count = worst_count
        self.explain_missing = explain_missing
        self.history_keys = history_keys
        self._rows, self._labels, self._probabilities = [], [], []
        self._worst: list[tuple[float, int, np.ndarray | None]] = []  # (true-class probability, row, image)

    def update(self, inputs, outputs, targets, rows) -> None:
        probabilities = np.asarray(outputs, np.float32)
        labels = np.asarray(targets).argmax(axis=1)
        self._rows.append(np.asarray(rows, np.int64))
        self._labels.append(labels)
        self._probabilities.append(probabilities)
        true_prob = probabilities[np.arange(len(labels)), labels]
        for offset in np.argsort(true_prob, kind="stable")[:self.worst_count]:
            image = np.asarray(inputs[offset]).astype(np.uint8) if self.keep_images else None
            self._worst.append((float(true_prob[offset]), int(rows[offset]), image))
        self._worst.sort(key=lambda item: (item[0], item[1]))
        del self._worst[self.worst_count:]

    def result(self, report_dir: Path) -> dict[str, Any]:
        from transferkit.classification.metrics import classification_metrics, plot_confusion_matrix
        from transferkit.reporting import plot_history

        num_classes = len(self.class_names)
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0,), np.int64)
        y_true = np.concatenate(self._labels) if self._labels else np.zeros((0,), np.int64)
        probabilities = (np.concatenate(self._probabilities) if self._probabilities
                         else np.zeros((0, num_classes), np.float32))
        metrics = classification_metrics(y_true, probabilities, self.class_names, self.top_k)
        skipped = missing_rows(rows, len(self.records) if self.records is not None else None, self.records,
                               self.explain_missing)
        if skipped:
            metrics["skipped_in_evaluation"] = skipped
        report_dir.mkdir(parents=True, exist_ok=True)
        plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), self.class_names,
                              report_dir / "confusion_matrix.png")
        history = report_dir.parent / "history.json"
        if history.exists():
            plot_history(json.loads(history.read_text()), report_dir / "training_curves.png", self.history_keys)
        if self.write_worst is not None:
            position = {int(row): i for i, row in enumerate(rows)}
            worst = [(row, int(y_true[position[row]]), probabilities[position[row]], image)
                     for _, row, image in self._worst]
            self.write_worst(report_dir, worst, self.records)
        return metrics
