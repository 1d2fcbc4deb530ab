"""Evaluation of a classifier: metrics and a report folder of PNG figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.reporting import plot_history, pyplot


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


def evaluate_classifier(model, dataset, info: dict[str, Any], report_dir: Path, top_k: int = 5,
                        paths: list[str] | None = None, worst_count: int = 16,
                        find_undecodable=None) -> dict[str, Any]:
    """Metrics and the report figures, in one streamed pass: only the worst images so far are kept."""
    from transferkit.models.inference import traced_forward

    forward = traced_forward(model)
    labels, probs = [], []
    worst = _WorstImages(worst_count)
    seen = 0
    for batch_images, batch_targets in dataset:
        batch_probs = np.asarray(forward(batch_images))
        batch_labels = np.asarray(batch_targets).argmax(axis=1)
        worst.add(seen, np.asarray(batch_images), batch_labels, batch_probs)
        probs.append(batch_probs)
        labels.append(batch_labels)
        seen += len(batch_labels)
    probabilities = np.concatenate(probs) if probs else np.zeros((0, len(info["class_names"])), np.float32)
    y_true = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    skipped = []
    if paths is not None and len(paths) != len(y_true):
        # A streamed file whose header passed did not decode, and the stream left it out. Which one is
        # found again with the same decoder (`find_undecodable(paths) -> (kept, problems)`), so that the
        # names still line up and the file is reported.
        paths, skipped = find_undecodable(paths) if find_undecodable else (paths, [])
        if len(paths) != len(y_true):
            paths = None
    metrics = classification_metrics(y_true, probabilities, info["class_names"], top_k)
    if skipped:
        metrics["skipped_in_evaluation"] = skipped
    report_dir.mkdir(parents=True, exist_ok=True)
    run_dir = report_dir.parent
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), info["class_names"],
                          report_dir / "confusion_matrix.png")
    history = run_dir / "history.json"
    if history.exists():
        plot_history(json.loads(history.read_text()), report_dir / "training_curves.png", ("loss", "accuracy"))
    plot_worst(worst.examples(), y_true, probabilities, info["class_names"], paths,
               report_dir / "worst_classified.png")
    return metrics


def _without_undecodable(paths: list[str], max_pixels: int) -> tuple[list[str], list[dict[str, str]]]:
    """(the paths that decode, [{"path", "reason"}] of those that do not), with the decoder training uses."""
    from transferkit.vision.images import read_image

    kept, skipped = [], []
    for path in paths:
        try:
            read_image(path, max_pixels)
            kept.append(path)
        except Exception as error:  # TensorFlow and Pillow raise many types for a bad body
            skipped.append({"path": path, "reason": f"did not decode: {type(error).__name__}: {str(error)[:200]}"})
    return kept, skipped


class _WorstImages:
    """The `count` examples with the lowest probability on their true class, kept while streaming."""

    def __init__(self, count: int):
        self.count = count
        self.kept: list[tuple[float, int, np.ndarray]] = []  # (true-class probability, index, uint8 image)

    def add(self, start: int, images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> None:
        true_prob = probabilities[np.arange(len(labels)), labels]
        for offset in np.argsort(true_prob, kind="stable")[:self.count]:
            self.kept.append((float(true_prob[offset]), start + int(offset), images[offset].astype(np.uint8)))
        self.kept.sort(key=lambda item: (item[0], item[1]))
        del self.kept[self.count:]

    def examples(self) -> list[tuple[int, np.ndarray]]:
        """(index in the dataset, image), worst first."""
        return [(index, image) for _, index, image in self.kept]


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


def plot_worst(examples: list[tuple[int, np.ndarray]], y_true: np.ndarray, probabilities: np.ndarray,
               class_names: list[str], paths: list[str] | None, path: Path) -> None:
    """Contact sheet of `examples` ((index, image) pairs, worst first), with their true and predicted classes."""
    plt = pyplot()
    true_prob = probabilities[np.arange(len(y_true)), y_true]
    order = [index for index, _ in examples]
    images = dict(examples)
    cols = 4
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order):
        ax.imshow(images[i])
        predicted = int(probabilities[i].argmax())
        title = f"true {class_names[y_true[i]]} ({true_prob[i]:.2f})\npred {class_names[predicted]}"
        if paths and i < len(paths):
            title += f"\n{Path(paths[i]).name[:24]}"
        ax.set_title(title, fontsize=7)
    fig.suptitle("worst-classified validation images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
