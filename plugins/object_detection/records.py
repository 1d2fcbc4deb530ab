"""A detector's records: what `predict` yields and served answers decode to, one `Detection` per object."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected object: its box in the original image's pixels, class and score.

    Example:

    ```python
    Detection(label="raccoon", class_id=0, score=0.91, box=(12.0, 30.5, 200.0, 180.0))
    ```
    """

    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax

    def __str__(self) -> str:
        xmin, ymin, xmax, ymax = self.box
        return f"{self.score:7.4f}  {self.label}  [{xmin:.1f}, {ymin:.1f}, {xmax:.1f}, {ymax:.1f}]"


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def detections_from_outputs(outputs: dict[str, Any]) -> list[list[Detection]]:
    """A detector's batched outputs (boxes, scores, class_ids, labels, num_detections) as records per image."""
    boxes = np.asarray(outputs["boxes"], dtype=np.float32)
    labels = np.asarray(outputs["labels"], dtype=object)
    counts = np.asarray(outputs["num_detections"]).reshape(-1)
    return [[Detection(label=_text(labels[i][j]), class_id=int(outputs["class_ids"][i][j]),
                       score=float(outputs["scores"][i][j]), box=tuple(float(v) for v in boxes[i, j]))
             for j in range(int(count))] for i, count in enumerate(counts)]
