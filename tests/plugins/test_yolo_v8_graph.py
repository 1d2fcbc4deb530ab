import numpy as np
import pytest
import tensorflow as tf

from transferkit.plugins.object_detection import yolo_v8

SHAPES = {"P3": (8, 8, 16), "P4": (4, 4, 24), "P5": (2, 2, 32)}


def test_anchor_points_match_the_head_and_lie_at_cell_centres():
    head = yolo_v8.yolo_v8_head(SHAPES, num_classes=3, neck_channels=8)
    points = yolo_v8.AnchorPoints((64, 64))
    assert head.output["predictions"].shape[1:] == (points.total, 64 + 3)
    centres = points.centres()
    # Row-major within a level: x runs fastest (the order Reshape flattens an (H, W) map in).
    np.testing.assert_array_equal(centres[:3], [[4, 4], [12, 4], [20, 4]])
    np.testing.assert_array_equal(centres[8], [4, 12])
    assert points.strides()[-1] == 32 and centres[-1].tolist() == [48, 48]
    with pytest.raises(ValueError, match="multiples of 32"):
        yolo_v8.AnchorPoints((60, 64))


def test_class_biases_start_at_a_small_prior():
    head = yolo_v8.yolo_v8_head(SHAPES, num_classes=2, neck_channels=8)
    out = head({k: tf.random.normal((1, *v)) for k, v in SHAPES.items()})["predictions"].numpy()
    probabilities = out[..., 64:]
    assert probabilities.max() < 0.1, probabilities.max()  # not KerasCV's 0.5 everywhere


def test_decode_recovers_a_box_from_peaked_distance_bins():
    points = yolo_v8.AnchorPoints((64, 64))
    logits = np.full((1, points.total, 64 + 1), -20.0, np.float32)
    index = 9  # a P3 anchor at (12, 12), stride 8
    cx, cy = points.centres()[index]
    distances = [1, 2, 3, 1]  # left, top, right, bottom, in strides
    for side, bin_ in enumerate(distances):
        logits[0, index, side * 16 + bin_] = 20.0
    logits[0, :, 64] = 0.0
    logits[0, index, 64] = 0.9  # probabilities come from the head's sigmoid
    out = yolo_v8.decode_detections(points, logits, score_threshold=0.5, iou_threshold=0.5, max_detections=5)
    assert int(out["num_detections"][0]) == 1
    expected = [cx - 8, cy - 16, cx + 24, cy + 8]
    np.testing.assert_allclose(out["boxes"][0, 0].numpy(), np.clip(expected, 0, 64), atol=1e-3)


def test_loss_prefers_predictions_near_the_ground_truth():
    points = yolo_v8.AnchorPoints((64, 64))
    loss = yolo_v8.YoloV8Loss((64, 64), num_classes=1)
    y_true = np.full((1, 2, 5), -1.0, np.float32)
    y_true[0, 0] = [8, 8, 40, 40, 0]

    def predictions(distance_bins: int, score: float):
        logits = np.full((1, points.total, 65), -20.0, np.float32)
        centres, strides = points.centres(), points.strides()
        for i, ((x, y), s) in enumerate(zip(centres, strides)):
            target = np.clip(np.array([x - 8, y - 8, 40 - x, 40 - y]) / s, 0, 15) if distance_bins < 0 else \
                np.full(4, distance_bins)
            for side in range(4):
                logits[0, i, side * 16 + int(round(target[side]))] = 20.0
        logits[0, :, 64] = score
        return logits

    good = float(loss(y_true, predictions(-1, 0.6)))
    bad = float(loss(y_true, predictions(0, 0.6)))
    assert np.isfinite(good) and good < bad
