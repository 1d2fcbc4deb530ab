"""A multi-label model's named outputs and their records: each image's labels with score and threshold."""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np


class LabelScore(NamedTuple):
    label: str
    score: float
    threshold: float

    @property
    def applies(self) -> bool:
        return self.score >= self.threshold


def multilabel_outputs(probabilities, thresholds, class_names: Sequence[str]) -> dict[str, Any]:
    """Every label of each example sorted by score, with its threshold and whether it applies.

    `probabilities` [batch, labels] in label order; `scores`, `labels`, `thresholds`, `above_threshold`
    [batch, labels], best first. Every output has the batch dimension, so a batching server can split it.
    """
    import tensorflow as tf

    probabilities = tf.cast(probabilities, tf.float32)
    scores, label_ids = tf.math.top_k(probabilities, k=len(class_names))
    per_example = tf.gather(tf.cast(thresholds, tf.float32), label_ids)
    return {
        "probabilities": tf.identity(probabilities, name="probabilities"),
        "scores": tf.identity(scores, name="scores"),
        "labels": tf.gather(tf.constant(list(class_names)), label_ids, name="labels"),
        "thresholds": tf.identity(per_example, name="thresholds"),
        "above_threshold": tf.greater_equal(scores, per_example, name="above_threshold"),
    }


def records_from_scores(probabilities: np.ndarray, thresholds: np.ndarray, class_names: Sequence[str],
                        top_k: int | None) -> list[list[LabelScore]]:
    """Per example: every label above its threshold, then the best others up to `top_k` in all, best first."""
    probabilities = np.asarray(probabilities, np.float32)
    thresholds = np.broadcast_to(np.asarray(thresholds, np.float32), probabilities.shape)
    records = []
    for row, cuts in zip(probabilities, thresholds):
        order = np.argsort(-row, kind="stable")
        chosen = [LabelScore(class_names[i], float(row[i]), float(cuts[i])) for i in order]
        records.append(_shown(chosen, top_k))
    return records


def _shown(ranked: list[LabelScore], top_k: int | None) -> list[LabelScore]:
    """Every applying label, and the best of the others while fewer than `top_k` are shown; score order."""
    room = max(0, (top_k or len(ranked)) - sum(item.applies for item in ranked))
    shown = []
    for item in ranked:
        if item.applies or room:
            room -= not item.applies
            shown.append(item)
    return shown


class MultiLabelRecords:
    """`Task.output_keys`, `decode`, `describe` and `decode_edge` of a multi-label classifier."""

    output_keys = frozenset({"probabilities", "scores", "labels", "thresholds", "above_threshold"})

    @classmethod
    def decode(cls, outputs: Mapping[str, Any], top_k: int | None = None) -> list[list[LabelScore]]:
        labels = np.asarray(outputs["labels"], dtype=object)
        scores = np.asarray(outputs["scores"], np.float32)
        cuts = np.asarray(outputs["thresholds"], np.float32)
        records = []
        for row_labels, row_scores, row_cuts in zip(labels, scores, cuts):
            names = [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in row_labels]
            ranked = [LabelScore(n, float(s), float(t)) for n, s, t in zip(names, row_scores, row_cuts)]
            records.append(_shown(ranked, top_k))
        return records

    @classmethod
    def describe(cls, record: Sequence[LabelScore]) -> str:
        applying = [item.label for item in record if item.applies]
        lines = [f"  labels: {', '.join(applying) if applying else '(none above its threshold)'}"]
        for item in record:
            lines.append(f"  {item.score:7.4f}  {item.label}  (threshold {item.threshold:.2f}"
                         f"{'' if item.applies else ', below'})")
        return "\n".join(lines)

    @classmethod
    def decode_edge(cls, outputs, labels: list[str], top_k: int = 3) -> list[list[LabelScore]]:
        """An exported file's `probabilities` and `thresholds` (label order) -> records."""
        if "probabilities" not in outputs or "thresholds" not in outputs:
            raise ValueError(f"outputs {sorted(outputs)}; a multi-label file has probabilities and thresholds")
        probabilities = np.asarray(outputs["probabilities"], np.float32)
        thresholds = np.asarray(outputs["thresholds"], np.float32)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(labels) or thresholds.shape != probabilities.shape:
            raise ValueError(f"{probabilities.shape[-1]} scores for {len(labels)} labels")
        return records_from_scores(probabilities, thresholds, labels, top_k)
