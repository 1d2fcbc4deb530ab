"""YOLOv4-tiny graph pieces for transfer from a COCO-trained detector: the whole detector comes from the preset.

The backbone (CSPDarknet53-tiny) is the preset's `YoloV4TinyBackbone`; the neck and the two output heads
are rebuilt from the preset's Darknet cfg and take the COCO detector's weights by layer name. The output
convolutions get new rows for the run's classes: every anchor's box and objectness rows are COCO's (they
are class-agnostic), and a class may start from a COCO class's rows (`model.init_from`).

Predictions are (B, A, 5 + C) raw logits, anchor by anchor: stride 32 first, then stride 16, each
row-major with the cfg's anchors innermost, as Darknet lays out its output channels. The loss assigns
each ground-truth box to the anchor of best shape (and any other above `iou_thresh`, 0.213 by default) in the
cell of its centre; CIoU on boxes, objectness with Darknet's ignore rule, class BCE on positives.
Targets stay the padded boxes (fixed shape), so the feature cache works here too.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras_cv.src.bounding_box.iou import compute_ciou

from transferkit.plugins.object_detection.nms import select_detections

# Objectness weight per stride (small maps have few anchors, so their mean BCE counts for less), as YOLOv5 does.
OBJECT_BALANCE = {8: 4.0, 16: 1.0, 32: 0.4}
MAX_LOG_SCALE = 6.0  # exp(tw) is clipped there, so a wild prediction cannot overflow


@dataclasses.dataclass(frozen=True)
class YoloGrid:
    """The anchors of YOLOv4-tiny's outputs at one input size: per output, its stride, anchor shapes
    (model-input pixels) and `scale_x_y`.

    Example:
    >>> grid = YoloGrid((64, 64), ({"name": "p5", "stride": 32, "anchors": [[81, 82], [135, 169], [344, 319]],
    ...                              "scale_x_y": 1.05},))
    >>> grid.total
    12
    """

    image_size: tuple[int, int]
    scales: tuple[Mapping, ...]

    def __post_init__(self):
        height, width = self.image_size
        for scale in self.scales:
            if height % scale["stride"] or width % scale["stride"]:
                raise ValueError(f"YoloGrid: image_size must be multiples of {scale['stride']}. "
                                 f"Received: image_size={self.image_size}")

    def cells(self, scale) -> tuple[int, int]:
        return self.image_size[0] // scale["stride"], self.image_size[1] // scale["stride"]

    @property
    def total(self) -> int:
        return sum(np.prod(self.cells(s)) * len(s["anchors"]) for s in self.scales)

    def constants(self) -> dict[str, np.ndarray]:
        """Per anchor (A,): column, row, stride, anchor width and height, scale_x_y."""
        parts: dict[str, list] = {k: [] for k in ("col", "row", "stride", "anchor_w", "anchor_h", "scale_x_y")}
        for scale in self.scales:
            rows, cols = self.cells(scale)
            count = len(scale["anchors"])
            r, c, a = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(count), indexing="ij")
            anchors = np.asarray(scale["anchors"], np.float32)
            parts["col"].append(c.ravel())
            parts["row"].append(r.ravel())
            parts["stride"].append(np.full(r.size, scale["stride"]))
            parts["anchor_w"].append(anchors[a.ravel(), 0])
            parts["anchor_h"].append(anchors[a.ravel(), 1])
            parts["scale_x_y"].append(np.full(r.size, scale.get("scale_x_y", 1.0)))
        return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}

    def anchor_table(self) -> dict[str, np.ndarray]:
        """Per anchor shape of every output (G,): width, height, stride, first flat index of its output,
        columns of its grid, anchors per cell and its position in the cell."""
        table: dict[str, list] = {k: [] for k in ("w", "h", "stride", "offset", "cols", "per_cell", "position")}
        offset = 0
        for scale in self.scales:
            rows, cols = self.cells(scale)
            for position, (w, h) in enumerate(scale["anchors"]):
                for key, value in (("w", w), ("h", h), ("stride", scale["stride"]), ("offset", offset),
                                   ("cols", cols), ("per_cell", len(scale["anchors"])), ("position", position)):
                    table[key].append(value)
            offset += rows * cols * len(scale["anchors"])
        return {k: np.asarray(v, np.float32 if k in ("w", "h") else np.int64) for k, v in table.items()}


def decode_boxes(grid: YoloGrid, raw):
    """(B, A, >=4) raw logits -> (B, A, 4) xyxy boxes in model-input pixels (Darknet's decoding)."""
    c = {k: tf.constant(v) for k, v in grid.constants().items()}
    raw = tf.cast(raw, tf.float32)
    s = c["scale_x_y"]
    cx = (tf.sigmoid(raw[..., 0]) * s - (s - 1) / 2 + c["col"]) * c["stride"]
    cy = (tf.sigmoid(raw[..., 1]) * s - (s - 1) / 2 + c["row"]) * c["stride"]
    w = tf.exp(tf.minimum(raw[..., 2], MAX_LOG_SCALE)) * c["anchor_w"]
    h = tf.exp(tf.minimum(raw[..., 3], MAX_LOG_SCALE)) * c["anchor_h"]
    return tf.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def yolo_v4_tiny_head(cfg_text: str, pyramid_shapes: Mapping[str, tuple], num_classes: int,
                      name: str = "detection_head") -> keras.Model:
    """The cfg's neck and output heads as one functional model: `{"P4", "P5"}` -> `predictions` (B, A, 5 + C).

    Example:
    >>> head = yolo_v4_tiny_head(cfg_text, {"P4": (4, 4, 256), "P5": (2, 2, 512)}, num_classes=2)
    >>> head.output["predictions"].shape
    (None, 60, 7)
    """
    from transferkit.models.families.yolov4_tiny.model import apply_neck_and_heads

    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"yolo_v4_tiny_head: num_classes must be an integer >= 1. Received: num_classes={num_classes!r}")
    inputs = {level: keras.Input(shape=tuple(shape), name=level) for level, shape in sorted(pyramid_shapes.items())}
    raw = apply_neck_and_heads(cfg_text, inputs, num_classes)
    parts = [keras.layers.Reshape((-1, 5 + num_classes), dtype="float32", name=f"predictions_{scale}")(raw[scale])
             for scale in raw]
    predictions = keras.layers.Concatenate(axis=1, dtype="float32", name="predictions")(parts)
    return keras.Model(inputs, {"predictions": predictions}, name=name)


def _pairwise_iou(boxes, others):
    """(B, A, 4) and (B, M, 4) xyxy -> (B, A, M)."""
    lo = tf.maximum(boxes[:, :, None, :2], others[:, None, :, :2])
    hi = tf.minimum(boxes[:, :, None, 2:], others[:, None, :, 2:])
    inter = tf.reduce_prod(tf.maximum(hi - lo, 0.0), axis=-1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / tf.maximum(area(boxes)[:, :, None] + area(others)[:, None, :] - inter, 1e-9)


@keras.saving.register_keras_serializable(package="transferkit")
class YoloV4TinyLoss(keras.losses.Loss):
    """YOLOv4's training loss on (B, A, 5 + C) predictions against padded ground truth (B, M, 5).

    `y_true` holds xyxy boxes in model pixels and the class id, padded with -1. Each box is assigned to
    the anchor shape of best width-height IoU (and any other above `assign_threshold`, the cfg's
    `iou_thresh`) in the cell of its centre. Box loss 1 - CIoU over positives; objectness BCE over
    positives and the negatives whose predicted box overlaps no ground truth above `ignore_threshold`
    (the cfg's `ignore_thresh`), averaged per output and weighted by `OBJECT_BALANCE`; class BCE over
    positives. Weights as YOLOv5's: box 0.05, objectness 1.0, classes 0.5 (Darknet's own sums, box 0.07,
    measured no better on raccoon: test mAP@0.5 0.855 against 0.862 with one anchor per box).
    """

    def __init__(self, image_size, scales: Sequence[Mapping], num_classes: int, ignore_threshold: float = 0.7,
                 assign_threshold: float = 1.0, box_weight: float = 0.05, object_weight: float = 1.0,
                 class_weight: float = 0.5, name: str = "yolo_v4_tiny_loss", reduction: str = "sum", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.image_size = tuple(int(s) for s in image_size)
        self.scales = [dict(s) for s in scales]
        self.num_classes = int(num_classes)
        self.ignore_threshold, self.assign_threshold = float(ignore_threshold), float(assign_threshold)
        self.box_weight, self.object_weight, self.class_weight = float(box_weight), float(object_weight), float(class_weight)
        self._grid = YoloGrid(self.image_size, tuple(self.scales))

    def _targets(self, boxes, class_ids, valid, total: int):
        """Dense (B, A) objectness and class targets and (B, A, 4) boxes from the padded ground truth."""
        table = {k: tf.constant(v) for k, v in self._grid.anchor_table().items()}
        gw, gh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        inter = tf.minimum(gw[..., None], table["w"]) * tf.minimum(gh[..., None], table["h"])
        shape_iou = inter / tf.maximum((gw * gh)[..., None] + table["w"] * table["h"] - inter, 1e-9)  # (B, M, G)
        best = tf.one_hot(tf.argmax(shape_iou, axis=-1), tf.shape(shape_iou)[-1]) > 0
        assigned = (best | (shape_iou > self.assign_threshold)) & valid[..., None]
        where = tf.where(assigned)  # (n, 3): image, box, anchor shape
        image_box = where[:, :2]
        shape = where[:, 2]
        stride = tf.cast(tf.gather(table["stride"], shape), tf.float32)
        cols = tf.gather(table["cols"], shape)
        rows_total = tf.cast(self.image_size[0], tf.int64) // tf.gather(table["stride"], shape)
        picked = tf.gather_nd(boxes, image_box)
        col = tf.clip_by_value(tf.cast((picked[:, 0] + picked[:, 2]) / 2 // stride, tf.int64), 0, cols - 1)
        row = tf.clip_by_value(tf.cast((picked[:, 1] + picked[:, 3]) / 2 // stride, tf.int64), 0, rows_total - 1)
        flat = (tf.gather(table["offset"], shape) + (row * cols + col) * tf.gather(table["per_cell"], shape)
                + tf.gather(table["position"], shape))
        index = tf.stack([where[:, 0], flat], axis=-1)
        batch = tf.shape(boxes, out_type=tf.int64)[0]
        objectness = tf.scatter_nd(index, tf.ones_like(flat, tf.float32), tf.stack([batch, total]))
        objectness = tf.minimum(objectness, 1.0)  # two boxes on one anchor: still one positive
        target_boxes = tf.tensor_scatter_nd_update(tf.zeros(tf.stack([batch, total, 4])), index, picked)
        target_classes = tf.tensor_scatter_nd_update(tf.zeros(tf.stack([batch, total]), tf.int32), index,
                                                     tf.gather_nd(class_ids, image_box))
        return objectness, target_boxes, target_classes

    def call(self, y_true, y_pred):
        total = self._grid.total
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.ensure_shape(tf.cast(y_pred, tf.float32), [None, total, 5 + self.num_classes])
        boxes, class_ids = y_true[..., :4], tf.cast(y_true[..., 4], tf.int32)
        valid = tf.reduce_all(boxes > -1.0, axis=-1) & (class_ids >= 0)
        objectness, target_boxes, target_classes = self._targets(boxes, class_ids, valid, total)
        positives = tf.maximum(tf.reduce_sum(objectness), 1.0)

        predicted = decode_boxes(self._grid, y_pred)
        ciou = compute_ciou(tf.stop_gradient(target_boxes), predicted, bounding_box_format="xyxy")
        box_loss = tf.reduce_sum((1.0 - ciou) * objectness) / positives

        overlap = _pairwise_iou(tf.stop_gradient(predicted), boxes) * tf.cast(valid, tf.float32)[:, None, :]
        # A zero column keeps the max defined when an image has no boxes at all.
        ignored = tf.reduce_max(tf.pad(overlap, [[0, 0], [0, 0], [0, 1]]), axis=-1) > self.ignore_threshold
        counted = objectness + (1.0 - objectness) * (1.0 - tf.cast(ignored, tf.float32))
        bce = tf.nn.sigmoid_cross_entropy_with_logits(objectness, y_pred[..., 4]) * counted
        object_loss, start = 0.0, 0
        batch = tf.cast(tf.shape(y_pred)[0], tf.float32)
        for scale in self.scales:
            count = int(np.prod(self._grid.cells(scale))) * len(scale["anchors"])
            object_loss += OBJECT_BALANCE.get(scale["stride"], 1.0) * tf.reduce_sum(bce[:, start:start + count]) / (
                batch * count)
            start += count

        labels = tf.one_hot(target_classes, self.num_classes)
        class_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels, y_pred[..., 5:])
        class_loss = tf.reduce_sum(class_bce * objectness[..., None]) / (positives * self.num_classes)
        per_batch = self.box_weight * box_loss + self.object_weight * object_loss + self.class_weight * class_loss
        return tf.fill(tf.shape(y_pred)[:1], per_batch)  # summed over the batch: YOLOv5's loss * batch size

    def get_config(self):
        return {**super().get_config(), "image_size": list(self.image_size), "scales": self.scales,
                "num_classes": self.num_classes, "ignore_threshold": self.ignore_threshold,
                "assign_threshold": self.assign_threshold, "box_weight": self.box_weight,
                "object_weight": self.object_weight, "class_weight": self.class_weight}


def decode_detections(grid: YoloGrid, predictions, score_threshold=0.05, iou_threshold=0.5,
                      max_detections: int = 100, pre_nms_top_k: int = 1000, select=None) -> dict:
    """Raw predictions -> boxes (xyxy model pixels), scores (objectness x class probability) and class
    ids after per-class NMS (`select`, as in `retinanet.decode_detections`)."""
    predictions = tf.convert_to_tensor(predictions, tf.float32)
    height, width = grid.image_size
    boxes = tf.clip_by_value(decode_boxes(grid, predictions), 0.0,
                             tf.constant([width, height, width, height], tf.float32))
    scores = tf.sigmoid(predictions[..., 4:5]) * tf.sigmoid(predictions[..., 5:])
    return (select or select_detections)(boxes, scores, score_threshold, iou_threshold, max_detections,
                                         pre_nms_top_k)
