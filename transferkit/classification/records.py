"""How every classification task's served answers become records: one mixin for image, text and audio."""

from __future__ import annotations

from typing import Any, Mapping


class ClassifierRecords:
    """`Task.output_keys`, `decode` and `describe` for tasks whose outputs are top-k labels and scores.

    Example:

    ```python
    ImageClassification.decode({"labels": [[b"cat", b"dog"]], "scores": [[0.9, 0.1]], "probabilities": ...})
    # [[("cat", 0.9), ("dog", 0.1)]]
    ```
    """

    output_keys = frozenset({"labels", "scores", "probabilities"})

    @classmethod
    def decode(cls, outputs: Mapping[str, Any], top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """[(label, score), ...] per example, best first, from the served top-k outputs."""
        from transferkit.classification.outputs import classification_records

        return classification_records(outputs, top_k)

    @classmethod
    def describe(cls, record) -> str:
        return "\n".join(f"  {score:7.4f}  {label}" for label, score in record)

    def edge_model(self, model, info):
        """The model from its inputs (NHWC pixels, or named inputs such as token ids and a padding mask) to class
        probabilities. A task refines it (a text task's int8 calibration and float ops)."""
        import tensorflow as tf

        from transferkit.edge import PIXEL_INPUT_NOTES, EdgeModel

        inputs = model.inputs
        if len(inputs) == 1 and len(inputs[0].shape) == 4:
            specs = {"pixels": tf.TensorSpec([None, *(int(d) for d in inputs[0].shape[1:])], tf.float32,
                                             name="pixels")}
        else:
            specs = {t.name.split(":")[0]: tf.TensorSpec([None, *(int(d) for d in t.shape[1:])], t.dtype,
                                                         name=t.name.split(":")[0]) for t in inputs}
        names = sorted(specs)

        def classify(*tensors):
            features = tensors[0] if names == ["pixels"] else dict(zip(names, tensors))
            return {"probabilities": tf.cast(model(features, training=False), tf.float32)}

        return EdgeModel(inputs=specs, function=classify, keras_model=model if names == ["pixels"] else None,
                         output_steps=("read probabilities; argmax gives the label",),
                         input_notes={"pixels": PIXEL_INPUT_NOTES} if names == ["pixels"] else {})

    @classmethod
    def decode_edge(cls, outputs, labels: list[str], top_k: int = 3) -> list[list[tuple[str, float]]]:
        """An exported file's outputs for a batch -> [(label, probability), ...] per example, best first."""
        import numpy as np

        probabilities = np.asarray(outputs["probabilities"] if "probabilities" in outputs
                                   else next(iter(outputs.values())), np.float32)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(labels):
            raise ValueError(f"{probabilities.shape[-1]} scores for {len(labels)} labels")
        k = max(1, min(int(top_k), len(labels)))
        order = np.argsort(-probabilities, axis=1)[:, :k]
        return [[(labels[i], float(row[i])) for i in ranked] for row, ranked in zip(probabilities, order)]
