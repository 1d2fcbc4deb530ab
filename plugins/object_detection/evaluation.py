"""`DetectionEvaluation`: COCO metrics and the detector's report, from batches of raw head outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import DataError
from transferkit.edge import EdgeScore
from transferkit.evaluation import Evaluation, missing_rows


class DetectionEvaluation(Evaluation):
    """Decodes each batch's raw outputs (anchors, NMS) and keeps the detections by row; COCO mAP at the end.

    `records` is the validation split (`LoadedDetections`): the ground truth of
    the rows that came. A file the stream dropped is named in
    `skipped_in_evaluation` and left out of the ground truth too.

    Example:

    ```python
    evaluation = DetectionEvaluation(detector, val, info, score_threshold=0.01, iou_threshold=0.5, max_detections=100)
    metrics = run_evaluation(model, data.val_indexed, evaluation, report_dir)   # map, map50, per class
    ```
    """

    def __init__(self, detector, records, info, score_threshold: float, iou_threshold: float,
                 max_detections: int, sheet_threshold: float = 0.3):
        self.detector = detector
        self.records = records
        self.info = info
        self.thresholds = dict(score_threshold=score_threshold, iou_threshold=iou_threshold,
                               max_detections=max_detections)
        self.sheet_threshold = sheet_threshold
        self._rows: list[np.ndarray] = []
        self._detections: list[dict[str, np.ndarray]] = []

    def update(self, inputs, outputs, targets, rows) -> None:
        decoded = self.detector.decode(outputs, **self.thresholds)
        self._detections.append({key: np.asarray(value) for key, value in decoded.items()})
        self._rows.append(np.asarray(rows, np.int64))

    def result(self, report_dir: Path) -> dict[str, Any]:
        from transferkit.plugins.object_detection import report

        if not self._rows:
            raise DataError(f"no validation image could be decoded (of {len(self.records)}); see the problems "
                            f"listed for data.val")
        rows = np.concatenate(self._rows)
        merged = {key: np.concatenate([d[key] for d in self._detections]) for key in self._detections[0]}
        metrics = report.evaluate_detector(merged, self.records.rows(rows), self.info, Path(report_dir),
                                           sheet_threshold=self.sheet_threshold)
        skipped = missing_rows(rows, len(self.records), self.records.paths,
                               lambda path: "did not decode while streaming (its header passed)")
        if skipped:
            metrics["skipped_in_evaluation"] = skipped
        return metrics


class DetectionScore(EdgeScore):
    """COCO mAP@0.5 (and mAP@[.5:.95]) of already decoded detections, for edge exports.

    Example: `DetectionScore(task_data)`, then `update({"boxes": ..., "scores": ..., "class_ids": ...,
    "num_detections": ...}, targets, rows)` per batch and `result()`.
    """

    metric = "map50"
    compared = "scores"

    def __init__(self, data, info):
        self.records, self.info = data.val_records, info
        self._rows: list[np.ndarray] = []
        self._detections: list[dict[str, np.ndarray]] = []

    def update(self, outputs, targets, rows) -> None:
        self._detections.append({key: np.asarray(outputs[key]) for key in
                                 ("boxes", "scores", "class_ids", "num_detections")})
        self._rows.append(np.asarray(rows, np.int64))

    def result(self) -> dict[str, float]:
        from transferkit.plugins.object_detection.report import coco_metrics

        rows = np.concatenate(self._rows)
        merged = {key: np.concatenate([d[key] for d in self._detections]) for key in self._detections[0]}
        metrics, _ = coco_metrics(merged, self.records.rows(rows), self.info)
        return {"map50": float(metrics["map50"]), "map": float(metrics["map"])}
