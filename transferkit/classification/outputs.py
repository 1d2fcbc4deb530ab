"""A classifier's named serving outputs, the same for every classification task, and their records."""

from __future__ import annotations

from typing import Any

OUTPUT_NAMES = ("probabilities", "scores", "class_ids", "labels")


def classification_outputs(probabilities, class_names, k: int) -> dict[str, Any]:
    """A classifier's named serving outputs from its probabilities: the same for every classification task."""
    import tensorflow as tf

    probabilities = tf.cast(probabilities, tf.float32)
    scores, class_ids = tf.math.top_k(probabilities, k=k)
    return {
        "probabilities": tf.identity(probabilities, name="probabilities"),
        "scores": tf.identity(scores, name="scores"),
        "class_ids": tf.identity(class_ids, name="class_ids"),
        "labels": tf.gather(tf.constant(list(class_names)), class_ids, name="labels"),
    }


def classification_records(outputs, top_k: int | None = None) -> list[list[tuple[str, float]]]:
    """Served classification outputs (`labels`, `scores`: batch x k) as [(label, score), ...] per example."""
    import numpy as np

    labels, scores = np.asarray(outputs["labels"], dtype=object), np.asarray(outputs["scores"], dtype=np.float32)
    records = []
    for row_labels, row_scores in zip(labels, scores):
        names = [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in row_labels]
        records.append(list(zip(names, (float(v) for v in row_scores)))[:top_k])
    return records
