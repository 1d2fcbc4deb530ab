"""YOLOv8 graph pieces on a backbone's P3-P5: KerasCV's path-aggregation FPN, head and label assigner.

The head predicts, at every anchor point of strides 8, 16 and 32, a
distribution over 16 distances to each box side and a probability per class
(sigmoid inside KerasCV's head). Targets cannot be encoded in `tf.data`: the
task-aligned assigner (`YOLOV8LabelEncoder`) matches ground truth to anchors
using the current predictions, so `YoloV8Loss` takes the padded ground-truth
boxes and does the assignment itself. That keeps the targets fixed-shape
(boxes padded with -1), so the feature cache works here too.

Two traps of KerasCV's `YOLOV8Detector` are avoided: its class convolutions
start at bias 0 (probability 0.5 everywhere, which drowns the few positives),
here they start at the usual prior; and nothing relies on its
`pyramid_level_inputs`, which `.keras` files do not keep.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
from keras_cv.src.bounding_box.iou import compute_ciou
from keras_cv.src.models.object_detection.yolo_v8.yolo_v8_detector import (
    apply_path_aggregation_fpn,
    apply_yolo_v8_head,
)
from keras_cv.src.models.object_detection.yolo_v8.yolo_v8_label_encoder import YOLOV8LabelEncoder
from keras_cv.src.models.object_detection.yolo_v8.yolo_v8_layers import apply_conv_bn

from transferkit.plugins.object_detection.nms import select_detections

DISTANCE_BINS = 16  # per box side; KerasCV's BOX_REGRESSION_CHANNELS is 4 * 16
STRIDES = (8, 16, 32)
LEVELS = ("P3", "P4", "P5")


@dataclasses.dataclass(frozen=True)
class AnchorPoints:
    """The anchor points of a fixed model-input size: centres of every cell of P3, P4 and P5.

    Example:
    >>> points = AnchorPoints((64, 64))
    >>> points.total, points.centres().shape
    (84, (84, 2))
    """

    image_size: tuple[int, int]

    def __post_init__(self):
        height, width = self.image_size
        if height % 32 or width % 32:
            raise ValueError(f"AnchorPoints: image_size must be multiples of 32. Received: image_size={self.image_size}")

    @property
    def total(self) -> int:
        height, width = self.image_size
        return sum((height // s) * (width // s) for s in STRIDES)

    def centres(self) -> np.ndarray:
        """(A, 2) x, y centres in model-input pixels, level by level, row-major."""
        height, width = self.image_size
        points = []
        for stride in STRIDES:
            ys, xs = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
            points.append(np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32) * stride + stride / 2)
        return np.concatenate(points)

    def strides(self) -> np.ndarray:
        height, width = self.image_size
        return np.concatenate([np.full((height // s) * (width // s), s, np.float32) for s in STRIDES])


def yolo_v8_head(pyramid_shapes: dict[str, tuple], num_classes: int, neck_channels: int = 64, fpn_depth: int = 1,
                 name: str = "detection_head") -> keras.Model:
    """KerasCV's path-aggregation FPN and YOLOv8 head on P3-P5, as one functional model.

    Each backbone level is first projected to `neck_channels` (a 1280-channel
    top level would otherwise make the FPN's 3x3 convolutions enormous).
    Output `predictions` is (N, A, 64 + num_classes): 64 distance logits,
    then class probabilities.

    Example:
    >>> head = yolo_v8_head({"P3": (8, 8, 16), "P4": (4, 4, 24), "P5": (2, 2, 32)}, num_classes=2)
    >>> head.output["predictions"].shape
    (None, 84, 66)
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"yolo_v8_head: num_classes must be an integer >= 1. Received: num_classes={num_classes!r}")
    missing = [level for level in LEVELS if level not in pyramid_shapes]
    if missing:
        raise ValueError(f"yolo_v8_head: needs pyramid levels {list(LEVELS)}. Received: {sorted(pyramid_shapes)}")
    inputs = {level: keras.Input(shape=tuple(pyramid_shapes[level]), name=level) for level in LEVELS}
    projected = [apply_conv_bn(inputs[level], neck_channels, kernel_size=1, name=f"neck_{level}") for level in LEVELS]
    features = apply_path_aggregation_fpn(projected, depth=fpn_depth, name="pa_fpn")
    raw = apply_yolo_v8_head(features, num_classes, name="yolo_v8_head")
    predictions = keras.layers.Concatenate(axis=-1, dtype="float32", name="predictions")(
        [raw["boxes"], raw["classes"]])
    model = keras.Model(inputs, {"predictions": predictions}, name=name)
    _set_class_prior(model, num_classes, pyramid_shapes)
    return model


def _set_class_prior(model: keras.Model, num_classes: int, pyramid_shapes) -> None:
    """Class-conv biases so each level starts at about five objects per image (at most 5% per cell), as YOLOv8 does."""
    for index, level in enumerate(LEVELS, start=1):
        height, width = pyramid_shapes[level][:2]
        cells = (height or 1) * (width or 1)
        conv = model.get_layer(f"yolo_v8_head_{index}_class_3_conv")
        prior = min(0.05, 5.0 / num_classes / max(cells, 1))  # never above 5%, even on tiny maps
        conv.bias.assign(np.full(conv.bias.shape, math.log(prior / (1 - prior)), np.float32))


def _distances(box_logits):
    """(B, A, 64) logits -> (B, A, 4) expected distances (left, top, right, bottom) in strides."""
    bins = tf.reshape(box_logits, tf.concat([tf.shape(box_logits)[:2], [4, DISTANCE_BINS]], axis=0))
    return tf.reduce_sum(tf.nn.softmax(bins, axis=-1) * tf.range(DISTANCE_BINS, dtype=tf.float32), axis=-1)


def decode_boxes(points: AnchorPoints, box_logits):
    """(B, A, 64) logits -> (B, A, 4) xyxy boxes in model-input pixels."""
    distances = _distances(tf.cast(box_logits, tf.float32)) * tf.constant(points.strides())[:, None]
    centres = tf.constant(points.centres())
    return tf.concat([centres - distances[..., :2], centres + distances[..., 2:]], axis=-1)


@keras.saving.register_keras_serializable(package="transferkit")
class YoloV8Loss(keras.losses.Loss):
    """Task-aligned assignment (KerasCV's `YOLOV8LabelEncoder`), then CIoU on boxes and BCE on classes.

    `y_true` is (B, M, 5): xyxy boxes in model pixels and the class id, padded
    with -1; `y_pred` is the head's `predictions`. Both parts are normalised
    by the sum of the assigned target scores, as YOLOv8 does; the weights are
    YOLOv8's (7.5 for boxes, 0.5 for classes).
    """

    def __init__(self, image_size, num_classes: int, box_weight: float = 7.5, class_weight: float = 0.5,
                 name: str = "yolo_v8_loss", reduction: str = "sum", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.image_size = tuple(int(s) for s in image_size)
        self.num_classes = int(num_classes)
        self.box_weight = float(box_weight)
        self.class_weight = float(class_weight)
        self._points = AnchorPoints(self.image_size)
        self._assigner = YOLOV8LabelEncoder(num_classes=self.num_classes, dtype="float32")

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        # The assigner needs the anchor count statically.
        y_pred = tf.ensure_shape(tf.cast(y_pred, tf.float32),
                                 [None, self._points.total, 4 * DISTANCE_BINS + self.num_classes])
        gt_boxes, gt_labels = y_true[..., :4], y_true[..., 4]
        gt_mask = tf.reduce_all(gt_boxes > -1.0, axis=-1, keepdims=True)
        scores = y_pred[..., 4 * DISTANCE_BINS:]
        pred_boxes = decode_boxes(self._points, y_pred[..., :4 * DISTANCE_BINS])
        centres = tf.constant(self._points.centres())  # (A, 2): the assigner broadcasts over the batch
        target_boxes, target_scores, foreground = self._assigner(
            scores, tf.stop_gradient(pred_boxes), centres, gt_labels, gt_boxes, gt_mask)
        target_boxes = tf.stop_gradient(target_boxes)
        target_scores = tf.stop_gradient(target_scores)
        foreground = tf.cast(foreground, tf.float32)
        normaliser = tf.maximum(tf.reduce_sum(target_scores), 1.0)
        # Boxes in strides, as the assigner's scale-free IoUs are: CIoU is scale-invariant anyway.
        ciou = compute_ciou(target_boxes, pred_boxes, bounding_box_format="xyxy")
        box_weight = tf.reduce_sum(target_scores, axis=-1) * foreground
        box_loss = tf.reduce_sum((1.0 - ciou) * box_weight, axis=-1)
        probabilities = tf.clip_by_value(scores, 1e-7, 1.0 - 1e-7)
        bce = -(target_scores * tf.math.log(probabilities) + (1 - target_scores) * tf.math.log(1 - probabilities))
        class_loss = tf.reduce_sum(bce, axis=[1, 2])
        return (self.box_weight * box_loss + self.class_weight * class_loss) / normaliser

    def get_config(self):
        return {**super().get_config(), "image_size": list(self.image_size), "num_classes": self.num_classes,
                "box_weight": self.box_weight, "class_weight": self.class_weight}


def decode_detections(points: AnchorPoints, predictions, score_threshold=0.05, iou_threshold=0.5,
                      max_detections: int = 100, pre_nms_top_k: int = 1000, select=None) -> dict:
    """Head predictions -> boxes (xyxy model pixels), scores, class ids after per-class NMS (`select`, as
    in `retinanet.decode_detections`)."""
    predictions = tf.convert_to_tensor(predictions, tf.float32)
    height, width = points.image_size
    boxes = tf.clip_by_value(decode_boxes(points, predictions[..., :4 * DISTANCE_BINS]), 0.0,
                             tf.constant([width, height, width, height], tf.float32))
    scores = predictions[..., 4 * DISTANCE_BINS:]
    return (select or select_detections)(boxes, scores, score_threshold, iou_threshold, max_detections,
                                         pre_nms_top_k)
