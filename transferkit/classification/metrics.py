"""A classifier's metrics: Keras metrics for training, scikit-learn's for the report, the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferkit.reporting import pyplot


def informative_top_k(top_k: int, num_classes: int) -> int | None:
    """`top_k` when it says more than accuracy and less than "always right": 1 < k < number of classes."""
    return top_k if 1 < top_k < num_classes else None


def keras_metrics(top_k: int, num_classes: int) -> list:
    """Accuracy, and top-k accuracy when it is informative, for a classifier's `compile`."""
    import keras

    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    k = informative_top_k(top_k, num_classes)
    if k is not None:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=k, name=f"top{k}_accuracy"))
    return metrics


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str],
                           top_k: int) -> dict[str, Any]:
    """Accuracy, top-k accuracy, per-class precision/recall/F1, macro F1, confusion matrix (scikit-learn)."""
    from sklearn import metrics as skm

    num_classes = len(class_names)
    labels = np.arange(num_classes)
    y_pred = probabilities.argmax(axis=1)
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    k = informative_top_k(top_k, num_classes)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(class_names)}
    empty = len(y_true) == 0
    metrics = {
        "num_examples": int(len(y_true)),
        "accuracy": 0.0 if empty else float(skm.accuracy_score(y_true, y_pred)),
    }
    if k is not None:  # with k >= the number of classes, top-k accuracy is 1.0 whatever the model
        metrics[f"top{k}_accuracy"] = 0.0 if empty else float(
            (np.argsort(-probabilities, axis=1)[:, :k] == y_true[:, None]).any(axis=1).mean())
    return {
        **metrics,
        "macro_f1": float(np.mean(f1)),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
    }


def plot_confusion_matrix(confusion: np.ndarray, class_names: list[str], path: Path) -> None:
    plt = pyplot()
    size = max(4, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = confusion.max() / 2 if confusion.size else 0
    for (i, j), value in np.ndenumerate(confusion):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    ax.set_title("confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
