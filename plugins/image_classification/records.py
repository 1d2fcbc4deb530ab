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
        from transferkit.plugins.image_classification.serving import classification_records

        return classification_records(outputs, top_k)

    @classmethod
    def describe(cls, record) -> str:
        return "\n".join(f"  {score:7.4f}  {label}" for label, score in record)
