"""Multi-label metrics, the choice of each label's threshold, and the report, aggregated batch by batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from transferkit.edge import EdgeScore
from transferkit.evaluation import Evaluation, missing_rows


def tuned_thresholds(y_true: np.ndarray, probabilities: np.ndarray, default: float) -> np.ndarray:
    """Per label, the probability cut that maximises its F1 on these examples (scikit-learn's PR curve).

    A label with no positive example keeps `default`: there is nothing to tune it on. Ties go to the
    highest cut (fewer false positives on unseen images). The threshold sits halfway between the chosen
    cut and the next lower score: a cut equal to an example's score would flip that example on the
    last-bit differences between runtimes (Keras, LiteRT, ONNX).
    """
    from sklearn.metrics import precision_recall_curve

    thresholds = np.full(y_true.shape[1], default, np.float32)
    for label in range(y_true.shape[1]):
        truth = y_true[:, label] > 0.5
        if not truth.any():
            continue
        precision, recall, cuts = precision_recall_curve(truth, probabilities[:, label])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = np.flatnonzero(f1 >= f1.max() - 1e-9)[-1]
        below = probabilities[:, label][probabilities[:, label] < cuts[best]]
        lower = float(below.max()) if below.size else max(0.0, float(cuts[best]) - 0.01)
        thresholds[label] = float(np.clip((float(cuts[best]) + lower) / 2, 1e-6, 1 - 1e-6))
    return thresholds


def multilabel_metrics(y_true: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray,
                       class_names: Sequence[str]) -> dict[str, Any]:
    """mAP over labels, micro/macro F1 and exact-match accuracy at `thresholds`, and per-label scores."""
    from sklearn import metrics as skm

    truth = (y_true > 0.5).astype(np.int32)
    predicted = (probabilities >= thresholds[None, :]).astype(np.int32)
    precision, recall, f1, support = skm.precision_recall_fscore_support(truth, predicted, zero_division=0)
    per_label, average_precisions = {}, []
    for i, name in enumerate(class_names):
        entry = {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                 "support": int(support[i]), "threshold": float(thresholds[i])}
        if support[i]:
            entry["average_precision"] = float(skm.average_precision_score(truth[:, i], probabilities[:, i]))
            average_precisions.append(entry["average_precision"])
        per_label[name] = entry
    return {
        # mAP: the mean of the average precisions of the labels that have a positive example here.
        "map": float(np.mean(average_precisions)) if average_precisions else 0.0,
        "micro_f1": float(skm.f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1": float(skm.f1_score(truth, predicted, average="macro", zero_division=0)),
        "exact_match": float(np.mean(np.all(truth == predicted, axis=1))) if len(truth) else 0.0,
        "hamming_loss": float(np.mean(truth != predicted)) if len(truth) else 0.0,
        "num_examples": int(len(truth)),
        "per_label": per_label,
    }


class MultiLabelEvaluation(Evaluation):
    """Metrics at the model's thresholds, plus a sheet of the images with the most wrong labels.

    Example:

    ```python
    evaluation = MultiLabelEvaluation(["cat", "dog"], np.array([0.4, 0.6]), records=paths)
    evaluation.update(images, probabilities, multi_hot_labels, rows)   # per batch
    metrics = evaluation.result(Path("runs/x/report"))
    ```
    """

    def __init__(self, class_names: Sequence[str], thresholds: np.ndarray, records: Sequence[Any] | None = None,
                 worst_count: int = 16, explain_missing: Callable[[Any], str] | None = None):
        self.class_names = list(class_names)
        self.thresholds = np.asarray(thresholds, np.float32)
        self.records = records
        self.worst_count = worst_count
        self.explain_missing = explain_missing
        self._rows, self._truth, self._probabilities = [], [], []
        self._worst: list[tuple[float, int, np.ndarray]] = []  # (-badness, row, image)

    def update(self, inputs, outputs, targets, rows) -> None:
        probabilities = np.asarray(outputs, np.float32)
        truth = np.asarray(targets, np.float32)
        self._rows.append(np.asarray(rows, np.int64))
        self._truth.append(truth)
        self._probabilities.append(probabilities)
        wrong = ((probabilities >= self.thresholds) != (truth > 0.5)).sum(axis=1)
        # Most wrong labels first; among equals, the largest distance from the truth.
        badness = wrong + np.abs(probabilities - truth).mean(axis=1)
        for offset in np.argsort(-badness, kind="stable")[:self.worst_count]:
            if wrong[offset]:
                self._worst.append((-float(badness[offset]), int(rows[offset]),
                                    np.asarray(inputs[offset]).astype(np.uint8)))
        self._worst.sort(key=lambda item: (item[0], item[1]))
        del self._worst[self.worst_count:]

    def result(self, report_dir: Path) -> dict[str, Any]:
        from transferkit.plugins.multilabel_classification.report import plot_worst_labelled
        from transferkit.reporting import plot_history

        count = len(self.class_names)
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0,), np.int64)
        truth = np.concatenate(self._truth) if self._truth else np.zeros((0, count), np.float32)
        probabilities = np.concatenate(self._probabilities) if self._probabilities else np.zeros((0, count))
        metrics = multilabel_metrics(truth, probabilities, self.thresholds, self.class_names)
        skipped = missing_rows(rows, len(self.records) if self.records is not None else None, self.records,
                               self.explain_missing)
        if skipped:
            metrics["skipped_in_evaluation"] = skipped
        report_dir.mkdir(parents=True, exist_ok=True)
        history = report_dir.parent / "history.json"
        if history.exists():
            plot_history(json.loads(history.read_text()), report_dir / "training_curves.png", ("loss", "pr_auc"))
        position = {int(row): i for i, row in enumerate(rows)}
        worst = [(row, truth[position[row]], probabilities[position[row]], image) for _, row, image in self._worst]
        if worst:
            plot_worst_labelled(worst, self.class_names, self.thresholds, self.records,
                                report_dir / "worst_labelled.png")
        return metrics


class MultiLabelEdgeScore(EdgeScore):
    """Micro F1 of an exported file's outputs at the thresholds it carries, against multi-hot targets."""

    metric = "micro_f1"

    def __init__(self):
        self.true_positives = self.false_positives = self.false_negatives = 0

    def update(self, outputs, targets, rows) -> None:
        predicted = np.asarray(outputs["probabilities"]) >= np.asarray(outputs["thresholds"])
        truth = np.asarray(targets) > 0.5
        self.true_positives += int((predicted & truth).sum())
        self.false_positives += int((predicted & ~truth).sum())
        self.false_negatives += int((~predicted & truth).sum())

    def result(self) -> dict[str, float]:
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return {"micro_f1": 2 * self.true_positives / denominator if denominator else 0.0}
