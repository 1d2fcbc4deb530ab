"""RetinaNet graph pieces: anchors, head, targets, losses, decoding, saving."""

import math
import time

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from transferkit.plugins.object_detection import retinanet as rn

LEVELS = ("P3", "P4", "P5")


def tiny_backbone(image_size):
    """A five-stack EfficientNet whose pyramid has P1..P5 (P5 = 32 channels)."""
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 5,
        stackwise_depth_coefficients=[1.0] * 5,
        stackwise_kernel_sizes=[3] * 5,
        stackwise_num_repeats=[1] * 5,
        stackwise_input_filters=[8, 8, 16, 16, 24],
        stackwise_output_filters=[8, 16, 16, 24, 32],
        stackwise_expansion_ratios=[1, 2, 2, 2, 2],
        stackwise_squeeze_and_excite_ratios=[0] * 5,
        stackwise_strides=[1, 2, 2, 2, 2],
        stackwise_block_types=["v1"] * 5,
        stackwise_force_input_filters=[0] * 5,
        stackwise_nores_option=[False] * 5,
        dropout=0.0,
        activation="relu6",
        num_features=32,
        input_shape=(*image_size, 3),
    )


def detector(image_size, num_classes=1, channels=32):
    """pixels -> backbone P3..P5 -> detection_head, as one functional model."""
    backbone = tiny_backbone(image_size)
    assert {"P3", "P4", "P5"} <= set(backbone.pyramid_outputs)
    pyramid = keras.Model(backbone.input, {k: backbone.pyramid_outputs[k] for k in LEVELS}, name="pyramid")
    shapes = {k: tuple(backbone.pyramid_outputs[k].shape[1:]) for k in backbone.pyramid_outputs}  # P1, P2 ignored
    head = rn.detection_head(shapes, num_classes=num_classes, fpn_channels=channels, head_convs=2)
    pixels = keras.Input((*image_size, 3), name="pixels")
    return keras.Model(pixels, head(pyramid(pixels)), name="detector"), head


def anchor_inside_boxes(spec, rng, count, jitter=2.0):
    """`count` boxes near distinct random anchors lying fully inside the image."""
    anchors = spec.anchors()
    h, w = spec.image_size
    inside = np.flatnonzero((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= w) & (anchors[:, 3] <= h))
    picked = anchors[rng.choice(inside, size=count, replace=False)]
    boxes = picked + rng.uniform(-jitter, jitter, size=picked.shape)
    return np.clip(boxes, 0, [w, h, w, h]).astype("float32")


def iou(a, b):
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(hi - lo, 0, None))
    area = lambda r: np.prod(r[2:] - r[:2])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.mark.parametrize("image_size", [(64, 64), (96, 128), (64, 128)])
def test_anchor_count_and_order_match_the_head(image_size):
    spec = rn.AnchorSpec(image_size, min_level=3, max_level=7)
    model, head = detector(image_size, num_classes=2)
    n, c = spec.num_anchors_per_location, 2
    # Per-level conv maps next to the concatenated output: anchor index
    # offset + (y * W + x) * n + a must read channel a * C + k at (y, x).
    level_maps = [head.get_layer(f"class_logits_P{lv}").input for lv in range(3, 8)]
    probe = keras.Model(head.inputs, [head.output["class_logits"], *level_maps])
    pyramid = model.get_layer("pyramid")
    features = pyramid(np.random.rand(2, *image_size, 3).astype("float32"))
    logits, *maps = probe(features)
    assert logits.shape == (2, spec.total_anchors, c) == (2, spec.anchors().shape[0], c)
    anchors, offset = spec.anchors(), 0
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    for lv, level_map in zip(range(3, 8), maps):
        _, hh, ww, _ = level_map.shape
        assert (hh, ww) == (math.ceil(image_size[0] / 2**lv), math.ceil(image_size[1] / 2**lv))
        stride_y, stride_x = image_size[0] // hh, image_size[1] // ww
        for y, x, a in [(0, 0, 0), (hh - 1, ww - 1, n - 1), (hh // 2, ww - 1, 4), (hh - 1, 0, 2)]:
            index = offset + (y * ww + x) * n + a
            np.testing.assert_allclose(logits[:, index], level_map[:, y, x, a * c : (a + 1) * c], rtol=1e-6)
            np.testing.assert_allclose(centers[index], [x * stride_x, y * stride_y], atol=0.5)
        offset += hh * ww * n
    assert offset == spec.total_anchors
    box_deltas = model(np.zeros((1, *image_size, 3), "float32"))["box_deltas"]
    assert box_deltas.shape == (1, spec.total_anchors, 4)


@pytest.mark.parametrize("image_size", [(64, 64), (96, 128)])
def test_encode_then_decode_recovers_the_boxes(image_size):
    spec = rn.AnchorSpec(image_size, min_level=3, max_level=7)
    rng = np.random.default_rng(1)
    counts, max_boxes, num_classes = [3, 1, 2], 4, 3
    boxes = -np.ones((3, max_boxes, 4), "float32")
    class_ids = -np.ones((3, max_boxes), "int32")
    for i, count in enumerate(counts):
        boxes[i, :count] = anchor_inside_boxes(spec, rng, count)
        class_ids[i, :count] = rng.permutation(num_classes)[:count]  # distinct classes: no cross-box NMS
    targets = tf.data.Dataset.from_tensors((boxes, class_ids)).map(lambda b, c: rn.encode_targets(spec, b, c))
    targets = next(iter(targets))
    classes, deltas = targets["class_logits"].numpy(), targets["box_deltas"].numpy()
    assert classes.shape == (3, spec.total_anchors) and deltas.shape == (3, spec.total_anchors, 4)
    assert set(np.unique(classes)) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    positive = classes >= 0
    assert np.isfinite(deltas[positive]).all() and np.isnan(deltas[~positive]).all()
    # The default deltas are divided by the variance: of order one, not 0.1.
    assert 0.05 < np.abs(deltas[positive]).mean() < 5.0

    perfect = np.where(positive[..., None], deltas, 0.0)
    logits = np.where(classes[..., None] == np.arange(num_classes), 12.0, -12.0).astype("float32")
    out = rn.decode_detections(spec, perfect, logits, score_threshold=0.5, iou_threshold=0.5)
    assert out["boxes"].shape == (3, 100, 4) and out["class_ids"].dtype == tf.int32
    for i, count in enumerate(counts):
        assert int(out["num_detections"][i]) == count
        found = out["boxes"][i, :count].numpy()
        found_classes = out["class_ids"][i, :count].numpy()
        for box, cls in zip(boxes[i, :count], class_ids[i, :count]):
            (match,) = np.flatnonzero(found_classes == cls)
            assert iou(box, found[match]) > 0.95


def test_decode_traces_with_unknown_batch_and_tensor_thresholds():
    spec = rn.AnchorSpec((64, 96), min_level=3, max_level=7)  # anchors first computed inside the trace
    a, c = spec.total_anchors, 2

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, a, 4], tf.float32),
            tf.TensorSpec([None, a, c], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.float32),
        ]
    )
    def serve(deltas, logits, score_threshold, iou_threshold):
        return rn.decode_detections(
            spec, deltas, logits, score_threshold, iou_threshold, max_detections=10, pre_nms_top_k=300
        )

    graph = serve.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    assert "CombinedNonMaxSuppression" in op_types
    assert not {t for t in op_types if "PyFunc" in t or t.startswith("Xla")}
    for batch in (1, 3):
        logits = np.random.normal(-3.0, 2.0, (batch, a, c)).astype("float32")
        deltas = np.random.normal(0.0, 1.0, (batch, a, 4)).astype("float32")
        out = serve(deltas, logits, tf.constant(0.3), tf.constant(0.5))
        assert out["boxes"].shape == (batch, 10, 4) and out["num_detections"].shape == (batch,)
        assert out["num_detections"].dtype == tf.int32 and out["class_ids"].dtype == tf.int32
        boxes = out["boxes"].numpy()
        assert (boxes >= 0).all() and (boxes[..., 1::2] <= 64).all() and (boxes[..., 0::2] <= 96).all()
        valid = np.arange(10) < out["num_detections"].numpy()[:, None]
        assert (out["scores"].numpy()[valid] >= 0.3).all()
    # A higher threshold given as a tensor keeps fewer boxes, without retracing.
    strict = serve(deltas, logits, tf.constant(0.99), tf.constant(0.5))
    assert strict["num_detections"].numpy().sum() <= out["num_detections"].numpy().sum()
    assert len(serve._list_all_concrete_functions()) == 1


def squares_dataset(count, spec, rng):
    """Dark 64 px images, each with one bright square whose box is known."""
    h, w = spec.image_size
    images = rng.uniform(0.0, 0.15, (count, h, w, 3)).astype("float32")
    boxes = np.zeros((count, 1, 4), "float32")
    for i in range(count):
        side = rng.integers(24, 41)
        x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        images[i, y0 : y0 + side, x0 : x0 + side] = rng.uniform(0.8, 1.0)
        boxes[i, 0] = [x0, y0, x0 + side, y0 + side]
    class_ids = np.zeros((count, 1), "int32")
    ds = tf.data.Dataset.from_tensor_slices((images, boxes, class_ids)).batch(8, drop_remainder=True)
    return ds.map(lambda x, b, c: (x, rn.encode_targets(spec, b, c))), images, boxes[:, 0]


def test_losses_normalise_by_the_batch_positives_and_skip_ignored_and_nan():
    nan = np.nan
    # Image 0: 2 positives, 1 ignored; image 1: 1 positive. 3 positives in the batch.
    classes = np.array([[0, 1, -2, -1], [-1, -1, 1, -1]], "float32")
    deltas = np.full((2, 4, 4), nan, "float32")
    deltas[0, 0], deltas[0, 1], deltas[1, 2] = [0.5, 0, 0, 0], [3.0, 0, 0, 0], [0, -0.2, 0, 0]
    logits = tf.constant(np.random.default_rng(4).normal(0, 2, (2, 4, 2)).astype("float32"))
    pred_deltas = tf.zeros((2, 4, 4))

    prob = 1 / (1 + np.exp(-logits.numpy()))
    onehot = (classes[..., None] == np.arange(2)).astype("float64")
    p_t = onehot * prob + (1 - onehot) * (1 - prob)
    focal = (onehot * 0.25 + (1 - onehot) * 0.75) * (1 - p_t) ** 2 * -np.log(p_t)
    expected_class = focal.sum(-1)[classes != -2].sum() / 3
    expected_box = (0.5 * 0.5**2 + (3.0 - 0.5) + 0.5 * 0.2**2) / 3
    np.testing.assert_allclose(float(rn.FocalClassLoss()(classes, logits)), expected_class, rtol=1e-5)
    np.testing.assert_allclose(float(rn.BoxLoss()(deltas, pred_deltas)), expected_box, rtol=1e-5)
    np.testing.assert_allclose(float(rn.BoxLoss(box_loss_weight=2.0)(deltas, pred_deltas)), 2 * expected_box, rtol=1e-5)
    # No positives: divided by 1, and the box loss is exactly zero.
    assert float(rn.BoxLoss()(np.full((1, 4, 4), nan, "float32"), pred_deltas[:1])) == 0.0

    with tf.GradientTape() as tape:
        tape.watch(pred_deltas)
        loss = rn.BoxLoss()(deltas, pred_deltas)
    grad = tape.gradient(loss, pred_deltas).numpy()
    assert np.isfinite(grad).all() and (grad[0, 2:] == 0).all() and np.isclose(grad[0, 1, 0], -1 / 3)

    config = rn.BoxLoss(box_loss_weight=0.5).get_config()
    assert rn.BoxLoss.from_config(config).box_loss_weight == 0.5
    assert rn.FocalClassLoss.from_config(rn.FocalClassLoss(gamma=1.0).get_config()).gamma == 1.0


def test_tiny_fit_reduces_the_loss():
    start = time.perf_counter()
    spec = rn.AnchorSpec((64, 64), min_level=3, max_level=7)
    model, _ = detector((64, 64), num_classes=1)
    # A frozen (random) backbone keeps BatchNorm in inference mode, so evaluate
    # measures what fit trained; the FPN and heads learn on top of it.
    model.get_layer("pyramid").trainable = False
    model.compile(keras.optimizers.Adam(1e-3), loss=rn.detection_losses())
    data, images, boxes = squares_dataset(32, spec, np.random.default_rng(2))
    data = data.cache()
    before = model.evaluate(data, verbose=0, return_dict=True)
    # What compile/evaluate computes on one batch is the batch-normalised loss pair.
    x, targets = next(iter(data))
    outputs = model(x, training=False)
    manual = rn.BoxLoss()(targets["box_deltas"], outputs["box_deltas"])
    manual += rn.FocalClassLoss()(targets["class_logits"], outputs["class_logits"])
    np.testing.assert_allclose(model.evaluate(data.take(1), verbose=0, return_dict=True)["loss"], manual, rtol=1e-4)
    history = model.fit(data.repeat(), steps_per_epoch=10, epochs=6, verbose=0, shuffle=False)
    after = model.evaluate(data, verbose=0, return_dict=True)
    assert np.isfinite(history.history["loss"]).all()
    assert after["loss"] < 0.4 * before["loss"], (before, after)
    assert after["class_logits_loss"] < 0.5 * before["class_logits_loss"], (before, after)
    assert after["box_deltas_loss"] < 0.5 * before["box_deltas_loss"], (before, after)
    outputs = model.predict(images, verbose=0)
    found = rn.decode_detections(spec, outputs["box_deltas"], outputs["class_logits"], max_detections=5)
    assert (found["num_detections"].numpy() >= 1).all()
    top_iou = [iou(gt, box) for gt, box in zip(boxes, found["boxes"].numpy()[:, 0])]
    assert np.median(top_iou) > 0.5, top_iou
    assert time.perf_counter() - start < 60


def test_initial_loss_is_small_after_reinitialisation():
    spec = rn.AnchorSpec((64, 64), min_level=3, max_level=7)
    model, _ = detector((64, 64), num_classes=3)
    rng = np.random.default_rng(3)
    pixels = rng.uniform(0, 1, (4, 64, 64, 3)).astype("float32")
    boxes = np.stack([anchor_inside_boxes(spec, rng, 2, jitter=4.0) for _ in range(4)])
    targets = rn.encode_targets(spec, boxes, rng.integers(0, 3, (4, 2)).astype("int32"))
    outputs = model(pixels)
    logits = outputs["class_logits"].numpy()
    prior_logit = -math.log(99.0)
    assert abs(logits.mean() - prior_logit) < 0.1 and logits.std() < 0.1
    assert np.abs(outputs["box_deltas"].numpy()).max() < 0.1
    class_loss = float(rn.FocalClassLoss()(targets["class_logits"], outputs["class_logits"]))
    box_loss = float(rn.BoxLoss()(targets["box_deltas"], outputs["box_deltas"]))
    # A positive anchor costs 0.25 * 0.99**2 * log(100) = 1.14; the easy negatives almost nothing.
    assert 0.9 < class_loss < 1.5, class_loss
    assert box_loss < 8.0 and class_loss + box_loss < 10.0, box_loss


def test_full_model_round_trips_through_a_keras_file(tmp_path):
    model, _ = detector((64, 64), num_classes=2)
    model.compile(keras.optimizers.Adam(1e-3), loss=rn.detection_losses(box_loss_weight=2.0))
    model.optimizer.build(model.trainable_variables)
    path = tmp_path / "detector.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    pixels = np.random.rand(2, 64, 64, 3).astype("float32")
    want, got = model.predict(pixels, verbose=0), loaded.predict(pixels, verbose=0)
    for key in ("box_deltas", "class_logits"):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6)
    assert isinstance(loaded.loss["box_deltas"], rn.BoxLoss) and loaded.loss["box_deltas"].box_loss_weight == 2.0
    assert isinstance(loaded.loss["class_logits"], rn.FocalClassLoss)


def reference_targets(spec, box, class_id):
    """NumPy targets of one gt box: IoU >= 0.5 positive, [0.4, 0.5) ignored."""
    anchors = spec.anchors().astype("float64")
    lo, hi = np.maximum(anchors[:, :2], box[:2]), np.minimum(anchors[:, 2:], box[2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda r: np.prod(r[..., 2:] - r[..., :2], axis=-1)  # noqa: E731
    overlap = inter / (area(anchors) + area(box) - inter)
    classes = np.where(overlap >= 0.5, class_id, np.where(overlap >= 0.4, -2.0, -1.0))
    wh_a, wh_b = anchors[:, 2:] - anchors[:, :2], box[2:] - box[:2]
    center_a, center_b = anchors[:, :2] + wh_a / 2, box[:2] + wh_b / 2
    deltas = np.concatenate([(center_b - center_a) / wh_a / 0.1, np.log(wh_b / wh_a) / 0.2], axis=1)
    return classes, np.where((classes >= 0)[:, None], deltas, np.nan)


def test_mixed_precision_keeps_float32_outputs_and_targets():
    # Its anchors have IoU exactly 0.4 with this box: in float16 the matcher
    # would call them background instead of ignored.
    box = np.array([0, 0, 16, 48], "float32")
    spec = rn.AnchorSpec((64, 64), min_level=3, max_level=6)  # used by no other test: encoder built below
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        shapes = {"P3": (8, 8, 16), "P4": (4, 4, 24), "P5": (2, 2, 32)}
        head = rn.detection_head(shapes, 2, max_level=6, fpn_channels=16)
        targets = rn.encode_targets(spec, np.stack([box, -np.ones(4, "float32")])[None], np.array([[1, -1]], "int32"))
    finally:
        keras.config.set_dtype_policy(previous)
    features = {"P3": (8, 8, 16), "P4": (4, 4, 24), "P5": (2, 2, 32)}
    outputs = head({k: np.random.rand(1, *s).astype("float32") for k, s in features.items()})
    assert head.get_layer("fpn").compute_dtype == "float16"
    assert outputs["box_deltas"].dtype == tf.float32 and outputs["class_logits"].dtype == tf.float32
    assert outputs["class_logits"].shape == (1, spec.total_anchors, 2)
    classes, deltas = reference_targets(spec, box.astype("float64"), 1.0)
    assert (classes == -2).sum() > 0 and (classes == 1).sum() > 0
    np.testing.assert_array_equal(targets["class_logits"][0], classes)
    np.testing.assert_allclose(targets["box_deltas"][0], deltas, rtol=1e-5, atol=1e-5)


def test_head_variants_use_p5_and_a_single_level():
    shapes = {"P3": (8, 8, 16), "P4": (4, 4, 24), "P5": (2, 2, 32)}
    features = {k: np.random.rand(2, *s).astype("float32") for k, s in shapes.items()}
    head = rn.detection_head(shapes, num_classes=3, fpn_channels=16, head_convs=1, use_p5=True)
    # use_p5=True: P6 is computed from the raw 32-channel backbone P5, not the 16-channel FPN P5.
    assert head.get_layer("fpn").output_conv_layers["P6"].kernel.shape[2] == 32
    assert head(features)["class_logits"].shape == (2, 774, 3)
    single = rn.detection_head(shapes, num_classes=1, min_level=3, max_level=3, fpn_channels=8, num_anchors=1)
    spec = rn.AnchorSpec((64, 64), 3, 3, num_scales=1, aspect_ratios=(1.0,))
    outputs = single({"P3": features["P3"]})
    assert outputs["box_deltas"].shape == (2, spec.total_anchors, 4) == (2, 64, 4)
    assert outputs["class_logits"].shape == (2, 64, 1)


def test_arguments_are_checked_up_front():
    with pytest.raises(ValueError, match="Received: min_level=9"):
        rn.AnchorSpec((64, 64), min_level=9, max_level=7)
    with pytest.raises(ValueError, match=r"Received: image_size=\(64, 0\)"):
        rn.AnchorSpec((64, 0), min_level=3, max_level=7)
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        rn.detection_head({"P3": (8, 8, 16)}, num_classes=0)
    with pytest.raises(ValueError, match="every level from P3 to P5"):
        rn.detection_head({"P3": (8, 8, 16), "P5": (2, 2, 32)}, num_classes=1)
    spec = rn.AnchorSpec((64, 64), min_level=3, max_level=7)
    with pytest.raises(ValueError, match=r"Received: box_deltas.shape=\(1, 10, 4\)"):
        rn.decode_detections(spec, np.zeros((1, 10, 4)), np.zeros((1, 10, 1)))
    with pytest.raises(ValueError, match="Received: score_threshold=1.5"):
        rn.decode_detections(spec, np.zeros((1, 774, 4)), np.zeros((1, 774, 1)), score_threshold=1.5)
    with pytest.raises(ValueError, match="Received: alpha=2"):
        rn.FocalClassLoss(alpha=2)


def test_spec_is_hashable_and_anchors_are_cached_read_only():
    spec = rn.AnchorSpec([64, 64], min_level=3, max_level=7, aspect_ratios=[1.0])
    assert spec == rn.AnchorSpec((64, 64), 3, 7, aspect_ratios=(1.0,))
    assert spec.anchors() is spec.anchors() and not spec.anchors().flags.writeable
    assert spec.num_anchors_per_location == 3 and spec.anchors().shape == (spec.total_anchors, 4)
