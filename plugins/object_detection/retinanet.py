"""RetinaNet graph pieces of a detection task, built from KerasHub's own layers.

Head (FPN + box/class heads), anchors, target encoding, losses for plain
`model.fit`, and an NMS decoder. Boxes are `xyxy` in model-input pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras_hub.src.models.retinanet.feature_pyramid import FeaturePyramid
from keras_hub.src.models.retinanet.prediction_head import PredictionHead
from keras_hub.src.models.retinanet.retinanet_label_encoder import RetinaNetLabelEncoder

from transferkit.plugins.object_detection.nms import select_detections

BACKGROUND = -1.0  # class target of anchors matched to no box (RetinaNetLabelEncoder default)
IGNORE = -2.0  # class target of anchors with 0.4 <= IoU < 0.5: no loss at all
PRIOR_PROBABILITY = 0.01  # initial foreground probability of every class logit
_ENCODING = "center_xywh"  # delta order (dx, dy, dw, dh), as RetinaNetObjectDetector uses
_MAX_LOG_SCALE = math.log(1000.0 / 16.0)  # caps exp() of the size deltas when decoding


def _require(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value, low: int, high: int | None = None, why: str = "") -> None:
    ok = _is_int(value) and value >= low and (high is None or value <= high)
    _require(ok, name, value, f"an integer >= {low}" if high is None else f"an integer in [{low}, {why or high}]")


def _check_levels(min_level, max_level) -> None:
    _check_int("max_level", max_level, 1, 9)
    _check_int("min_level", min_level, 1, max_level, f"max_level={max_level}")


@dataclasses.dataclass(frozen=True)
class AnchorSpec:
    """The anchors of a fixed model-input size, shared by targets and decoding.

    `box_variance` divides the encoded deltas (and multiplies them back when
    decoding), so box targets are of order one for the Huber loss.

    Example:
    >>> spec = AnchorSpec(image_size=(64, 64), min_level=3, max_level=7)
    >>> spec.num_anchors_per_location, spec.total_anchors, spec.anchors().shape
    (9, 774, (774, 4))
    """

    image_size: tuple[int, int]
    min_level: int
    max_level: int
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_size: float = 4.0
    box_variance: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)

    def __post_init__(self):
        size = self.image_size
        ok = isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(s) and s > 0 for s in size)
        _require(ok, "image_size", size, "a (height, width) pair of positive integers")
        _check_levels(self.min_level, self.max_level)
        _check_int("num_scales", self.num_scales, 1)
        ratios, variance = tuple(self.aspect_ratios), tuple(float(v) for v in self.box_variance)
        _require(len(ratios) > 0 and min(ratios) > 0, "aspect_ratios", self.aspect_ratios, "positive numbers")
        _require(self.anchor_size > 0, "anchor_size", self.anchor_size, "a positive number")
        _require(len(variance) == 4 and min(variance) > 0, "box_variance", self.box_variance, "4 positive numbers")
        # Tuples keep the spec hashable, which the anchor and encoder caches rely on.
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "aspect_ratios", tuple(float(r) for r in ratios))
        object.__setattr__(self, "box_variance", variance)

    @property
    def num_anchors_per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    @property
    def total_anchors(self) -> int:
        h, w = self.image_size
        levels = range(self.min_level, self.max_level + 1)
        return sum(math.ceil(h / 2**lv) * math.ceil(w / 2**lv) for lv in levels) * self.num_anchors_per_location

    def anchors(self) -> np.ndarray:
        """(A, 4) float32 `xyxy` anchors, level by level, row-major, anchors per location."""
        return _anchors(self)


def _generator(spec: AnchorSpec) -> keras.layers.Layer:
    return keras_hub.layers.AnchorGenerator(
        "xyxy", spec.min_level, spec.max_level, spec.num_scales, list(spec.aspect_ratios), spec.anchor_size,
        dtype="float32",
    )


@functools.lru_cache(maxsize=16)
def _anchors(spec: AnchorSpec) -> np.ndarray:
    with tf.init_scope():  # eager even when first asked for inside a tf.function or tf.data map
        per_level = _generator(spec)(np.zeros((1, *spec.image_size, 1), "float32"))
        anchors = np.concatenate([keras.ops.convert_to_numpy(a) for a in per_level.values()]).astype(np.float32)
    anchors.setflags(write=False)
    return anchors


@functools.lru_cache(maxsize=16)
def _label_encoder(spec: AnchorSpec) -> RetinaNetLabelEncoder:
    # Built under a float32 policy: its inner BoxMatcher takes no dtype and would
    # otherwise compare IoUs in float16 under mixed precision.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return RetinaNetLabelEncoder(
            _generator(spec), bounding_box_format="xyxy", encoding_format=_ENCODING,
            box_variance=list(spec.box_variance), background_class=BACKGROUND, ignore_class=IGNORE, dtype="float32",
        )
    finally:
        keras.config.set_dtype_policy(previous)


def encode_targets(anchor_spec: AnchorSpec, boxes, class_ids) -> dict:
    """Per-anchor training targets of a batch (TF ops, fine inside `tf.data` map).

    `boxes` is (B, M, 4) `xyxy` in model-input pixels and `class_ids` (B, M),
    both padded with -1. Returns `class_logits` (B, A) float32: the class id,
    `BACKGROUND` (-1) or `IGNORE` (-2); and `box_deltas` (B, A, 4) float32,
    NaN at every anchor that is not positive (`BoxLoss` skips those).
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    class_ids = tf.convert_to_tensor(class_ids)
    _require(boxes.shape.rank == 3 and boxes.shape[-1] == 4, "boxes.shape", tuple(boxes.shape), "(batch, max_boxes, 4)")
    _require(class_ids.shape.rank == 2, "class_ids.shape", tuple(class_ids.shape), "(batch, max_boxes)")
    images = tf.zeros((1, *anchor_spec.image_size, 1))  # the encoder reads only its static height and width
    deltas, classes = _label_encoder(anchor_spec)(images, boxes, tf.cast(class_ids, tf.float32))
    classes = tf.ensure_shape(tf.cast(classes, tf.float32), (None, anchor_spec.total_anchors))
    positive = (classes >= 0.0)[..., None]
    deltas = tf.where(positive, tf.cast(deltas, tf.float32), tf.constant(np.nan, tf.float32))
    return {"box_deltas": deltas, "class_logits": classes}


def _positives(mask):  # positive anchors in the whole batch, at least 1
    return keras.ops.maximum(keras.ops.sum(keras.ops.cast(mask, "float32")), 1.0)


@keras.saving.register_keras_serializable(package="transferkit")
class FocalClassLoss(keras.losses.Loss):
    """Sigmoid focal loss over the classes of the non-ignored anchors.

    `y_true` holds the class targets of `encode_targets`, `y_pred` the
    (B, A, num_classes) logits. With the default `reduction="sum"` the batch
    loss is divided by the batch's positive-anchor count (at least 1).

    Example:
    >>> model.compile("adam", loss={"box_deltas": BoxLoss(), "class_logits": FocalClassLoss()})
    """

    def __init__(self, alpha=0.25, gamma=2.0, name="focal_class_loss", reduction="sum", dtype=None):
        _require(0.0 <= alpha <= 1.0, "alpha", alpha, "a number in [0, 1]")
        _require(gamma >= 0.0, "gamma", gamma, "a number >= 0")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha, self.gamma = float(alpha), float(gamma)

    def call(self, y_true, y_pred):
        ops = keras.ops
        logits, targets = ops.cast(y_pred, "float32"), ops.cast(y_true, "float32")
        labels = ops.one_hot(ops.cast(ops.maximum(targets, BACKGROUND), "int32"), ops.shape(logits)[-1])
        bce = ops.binary_crossentropy(labels, logits, from_logits=True)
        prob = ops.sigmoid(logits)
        p_t = labels * prob + (1.0 - labels) * (1.0 - prob)
        alpha_t = labels * self.alpha + (1.0 - labels) * (1.0 - self.alpha)
        focal = ops.sum(alpha_t * ops.power(1.0 - p_t, self.gamma) * bce, axis=-1)
        focal = ops.where(ops.equal(targets, IGNORE), 0.0, focal)
        return ops.sum(focal, axis=-1) / _positives(targets >= 0.0)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="transferkit")
class BoxLoss(keras.losses.Loss):
    """Huber (smooth L1) loss on the box deltas of positive anchors.

    Anchors whose target is NaN (not positive, see `encode_targets`) add
    nothing; the sum over the 4 deltas and the batch's positive anchors is
    divided by their count and scaled by `box_loss_weight`.

    Example:
    >>> loss = BoxLoss(delta=1.0, box_loss_weight=2.0)
    """

    def __init__(self, delta=1.0, box_loss_weight=1.0, name="box_loss", reduction="sum", dtype=None):
        _require(delta > 0.0, "delta", delta, "a positive number")
        _require(box_loss_weight >= 0.0, "box_loss_weight", box_loss_weight, "a number >= 0")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.delta, self.box_loss_weight = float(delta), float(box_loss_weight)

    def call(self, y_true, y_pred):
        ops = keras.ops
        targets = ops.cast(y_true, "float32")
        positive = ops.logical_not(ops.any(ops.isnan(targets), axis=-1, keepdims=True))
        # Zero the NaNs before use: a NaN in the unused branch of `where` would poison the gradient.
        error = ops.abs(ops.cast(y_pred, "float32") - ops.where(positive, targets, 0.0))
        huber = ops.where(error <= self.delta, 0.5 * error**2, self.delta * (error - 0.5 * self.delta))
        per_image = ops.sum(ops.where(positive, huber, 0.0), axis=(1, 2))
        return self.box_loss_weight * per_image / _positives(positive)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta, "box_loss_weight": self.box_loss_weight}


def detection_losses(box_loss_weight: float = 1.0, alpha: float = 0.25, gamma: float = 2.0) -> dict:
    """The `compile(loss=...)` dict matching `detection_head`'s outputs."""
    return {"box_deltas": BoxLoss(box_loss_weight=box_loss_weight), "class_logits": FocalClassLoss(alpha, gamma)}


@keras.saving.register_keras_serializable(package="transferkit")
class RetinaNetPredictionHead(PredictionHead):
    """KerasHub's `PredictionHead`, rebuilt fine from a `.keras` file (whose input shape is a list).

    Example:
    >>> head = RetinaNetPredictionHead(output_filters=36, num_filters=64, num_conv_layers=2)
    """

    def build(self, input_shape):
        super().build(tuple(input_shape))


def _reinitialise(head: PredictionHead, final_bias: float) -> None:
    """Kernels ~ N(0, 0.01), biases zero, the last conv's bias `final_bias`."""
    init = keras.initializers.RandomNormal(stddev=0.01)
    for conv in [*head.conv_layers, head.prediction_layer]:
        conv.kernel.assign(init(conv.kernel.shape, dtype=conv.kernel.dtype))
        if conv.bias is not None:
            conv.bias.assign(keras.ops.zeros(conv.bias.shape, dtype=conv.bias.dtype))
    bias = head.prediction_layer.bias
    bias.assign(keras.ops.full(bias.shape, final_bias, dtype=bias.dtype))


def detection_head(
    pyramid_shapes: dict[str, tuple], num_classes: int, min_level: int = 3, max_level: int = 7,
    fpn_channels: int = 256, head_convs: int = 2, num_anchors: int = 9, use_p5: bool = False, name: str = "head",
) -> keras.Model:
    """A RetinaNet FPN + box/class heads on backbone pyramid features.

    Inputs are `{"P3": (H3, W3, C3), ...}`: backbone levels from `min_level` up
    to `min(max_level, top backbone level)` (others are ignored). The FPN adds
    the levels above the backbone's; `use_p5=True` builds the first of them
    from the raw backbone map, `False` from the FPN's own top output. Outputs
    `box_deltas` (N, A, 4) and `class_logits` (N, A, num_classes), float32,
    in `AnchorSpec.anchors()` order.

    Example:
    >>> shapes = {"P3": (8, 8, 16), "P4": (4, 4, 24), "P5": (2, 2, 32)}
    >>> head = detection_head(shapes, num_classes=2, fpn_channels=32)
    >>> head.output["class_logits"].shape
    (None, 774, 2)
    """
    _check_int("num_classes", num_classes, 1)
    _check_levels(min_level, max_level)
    _check_int("fpn_channels", fpn_channels, 1)
    _check_int("head_convs", head_convs, 0)
    _check_int("num_anchors", num_anchors, 1)
    ok = isinstance(pyramid_shapes, dict) and all(str(k)[:1] == "P" and str(k)[1:].isdigit() for k in pyramid_shapes)
    _require(ok, "pyramid_shapes", pyramid_shapes, 'a dict keyed "P<level>"')
    top = min(max_level, max((int(k[1:]) for k in pyramid_shapes), default=0))
    ok = top >= min_level and all(f"P{lv}" in pyramid_shapes for lv in range(min_level, top + 1))
    wanted = f"a dict with every level from P{min_level} to P{max(top, min_level)}"
    _require(ok, "pyramid_shapes", pyramid_shapes, wanted)
    shapes = {lv: tuple(pyramid_shapes[f"P{lv}"]) for lv in range(min_level, top + 1)}
    for lv, shape in shapes.items():
        _require(len(shape) == 3 and _is_int(shape[-1]), f"pyramid_shapes['P{lv}']", shape, "(height, width, channels)")
    # FeaturePyramid infers the extra levels' static size from the height alone;
    # drop spatial sizes when that would be wrong (non-square top map).
    if max_level > top and shapes[top][0] != shapes[top][1]:
        shapes = {lv: (None, None, s[-1]) for lv, s in shapes.items()}

    inputs = {f"P{lv}": keras.Input(shape=s, name=f"P{lv}") for lv, s in shapes.items()}
    fpn = FeaturePyramid(min_level=min_level, max_level=max_level, use_p5=use_p5, num_filters=fpn_channels, name="fpn")
    features = fpn(inputs)

    def make_head(filters, head_name):
        return RetinaNetPredictionHead(
            output_filters=filters, num_filters=fpn_channels, num_conv_layers=head_convs,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), bias_initializer="zeros", name=head_name,
        )

    box_head, class_head = make_head(num_anchors * 4, "box_head"), make_head(num_anchors * num_classes, "class_head")
    outputs = {}
    for key, head, width in (("box_deltas", box_head, 4), ("class_logits", class_head, num_classes)):
        # float32 from here on, also under a mixed_float16 policy.
        parts = [
            keras.layers.Reshape((-1, width), dtype="float32", name=f"{key}_P{lv}")(head(features[f"P{lv}"]))
            for lv in range(min_level, max_level + 1)
        ]
        if len(parts) > 1:
            outputs[key] = keras.layers.Concatenate(axis=1, dtype="float32", name=key)(parts)
        else:
            outputs[key] = keras.layers.Identity(dtype="float32", name=key)(parts[0])
    model = keras.Model(inputs=inputs, outputs=outputs, name=name)
    _reinitialise(box_head, 0.0)
    _reinitialise(class_head, -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))
    return model


def decode_detections(
    anchor_spec: AnchorSpec, box_deltas, class_logits, score_threshold=0.05, iou_threshold=0.5,
    max_detections: int = 100, pre_nms_top_k: int = 1000, select=None,
) -> dict:
    """Boxes, scores and classes after per-class NMS (core TF ops, any batch size).

    Thresholds may be Python numbers or scalar tensors. Returns `boxes`
    (B, K, 4) `xyxy` model-input pixels, `scores` (B, K), `class_ids` (B, K)
    int32 and `num_detections` (B,) int32, with K = `max_detections`; rows past
    `num_detections` are zero padding. `select` is the NMS: `nms.select_detections` when None,
    `nms.select_detections_one_image` for LiteRT files.
    """
    _check_int("max_detections", max_detections, 1)
    _check_int("pre_nms_top_k", pre_nms_top_k, 1)
    for name, value in (("score_threshold", score_threshold), ("iou_threshold", iou_threshold)):
        if isinstance(value, (int, float)):
            _require(0.0 <= value <= 1.0, name, value, "a number in [0, 1]")
    deltas = tf.convert_to_tensor(box_deltas, tf.float32)
    logits = tf.convert_to_tensor(class_logits, tf.float32)
    count = anchor_spec.total_anchors
    ok = deltas.shape.rank == 3 and deltas.shape[1] in (None, count) and deltas.shape[2] == 4
    _require(ok, "box_deltas.shape", tuple(deltas.shape), f"(batch, {count}, 4)")
    ok = logits.shape.rank == 3 and logits.shape[1] in (None, count)
    _require(ok, "class_logits.shape", tuple(logits.shape), f"(batch, {count}, num_classes)")

    anchors = tf.constant(anchor_spec.anchors())
    anchor_wh = anchors[:, 2:] - anchors[:, :2]
    anchor_center = anchors[:, :2] + 0.5 * anchor_wh
    deltas = deltas * tf.constant(anchor_spec.box_variance, tf.float32)
    center = deltas[..., :2] * anchor_wh + anchor_center
    half = 0.5 * tf.exp(tf.minimum(deltas[..., 2:], _MAX_LOG_SCALE)) * anchor_wh
    h, w = anchor_spec.image_size
    limits = tf.constant([w, h, w, h], tf.float32)
    boxes = tf.clip_by_value(tf.concat([center - half, center + half], axis=-1), 0.0, limits)
    scores = tf.sigmoid(logits)

    return (select or select_detections)(boxes, scores, score_threshold, iou_threshold, max_detections,
                                         pre_nms_top_k)
