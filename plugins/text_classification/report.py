"""Evaluation of a text classifier: metrics, a confusion matrix and the worst-classified texts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferkit.fileio import atomic_write_text
from transferkit.plugins.image_classification.report import classification_metrics, plot_confusion_matrix
from transferkit.reporting import plot_history


def evaluate_text_classifier(model, dataset, info: dict[str, Any], report_dir: Path, top_k: int = 5,
                             texts: Sequence[str] | None = None) -> dict[str, Any]:
    from transferkit.models.inference import traced_forward

    forward = traced_forward(model)
    labels, probs = [], []
    for inputs, targets in dataset:
        probs.append(np.asarray(forward(inputs)))
        labels.append(np.asarray(targets).argmax(axis=1))
    probabilities = np.concatenate(probs)
    y_true = np.concatenate(labels)
    class_names = info["class_names"]
    metrics = classification_metrics(y_true, probabilities, class_names, top_k)
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), class_names, report_dir / "confusion_matrix.png")
    history = report_dir.parent / "history.json"
    if history.exists():
        plot_history(json.loads(history.read_text()), report_dir / "training_curves.png", ("loss", "accuracy"))
    if texts is not None and len(texts) == len(y_true):
        atomic_write_text(report_dir / "worst_classified.md",
                          worst_classified(texts, y_true, probabilities, class_names))
    return metrics


def worst_classified(texts: Sequence[str], y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str],
                     count: int = 20, chars: int = 600) -> str:
    """A readable Markdown file of the texts with the lowest probability on their true class.

    Only the texts shown are indexed: `texts` may read them from their files (`data.TextColumn`).
    """
    true_prob = probabilities[np.arange(len(y_true)), y_true]
    lines = ["# Worst-classified validation texts", "",
             f"The {min(count, len(texts))} texts whose true class got the lowest probability.", ""]
    for rank, i in enumerate(np.argsort(true_prob)[:count], start=1):
        predicted = int(probabilities[i].argmax())
        excerpt = " ".join(texts[i].split())
        if len(excerpt) > chars:
            excerpt = excerpt[:chars] + " ..."
        lines += [f"## {rank}. true **{class_names[y_true[i]]}** ({true_prob[i]:.3f}), "
                  f"predicted **{class_names[predicted]}** ({probabilities[i, predicted]:.3f})", "",
                  textwrap.fill(excerpt, width=100), ""]
    return "\n".join(lines)
