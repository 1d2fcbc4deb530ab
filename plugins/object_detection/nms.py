"""Per-class non-maximum suppression in core TensorFlow ops, shared by every detector head.

`tf.image.combined_non_max_suppression` traces with an unknown batch size
(KerasHub's NMS layer needs a fixed one) and takes its thresholds as tensors,
so one exported graph serves any batch and any per-request thresholds.
"""

from __future__ import annotations

import tensorflow as tf


def select_detections(boxes, scores, score_threshold, iou_threshold, max_detections: int,
                      pre_nms_top_k: int = 1000) -> dict:
    """(B, A, 4) xyxy boxes and (B, A, C) probabilities -> the best `max_detections` per image after NMS.

    Returns `boxes` (B, K, 4), `scores` (B, K), `class_ids` (B, K) int32 and
    `num_detections` (B,) int32; rows past `num_detections` are zero padding.
    """
    count = boxes.shape[1]
    k = pre_nms_top_k if count is None else min(pre_nms_top_k, count)
    if count is None or k < count:
        # Keep the anchors whose best class is strongest: NMS cost grows with their number.
        k_dynamic = tf.minimum(k, tf.shape(boxes)[1])
        best = tf.math.top_k(tf.reduce_max(scores, axis=-1), k=k_dynamic, sorted=False).indices
        boxes = tf.gather(boxes, best, batch_dims=1)
        scores = tf.gather(scores, best, batch_dims=1)
    # The op names its coordinates yxyx, but IoU is the same for xyxy boxes.
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=tf.cast(iou_threshold, tf.float32),
        score_threshold=tf.cast(score_threshold, tf.float32),
        pad_per_class=False,
        clip_boxes=False,
    )
    return {
        "boxes": nms.nmsed_boxes,
        "scores": nms.nmsed_scores,
        "class_ids": tf.cast(nms.nmsed_classes, tf.int32),
        "num_detections": tf.cast(nms.valid_detections, tf.int32),
    }


def select_detections_one_image(boxes, scores, score_threshold, iou_threshold, max_detections: int,
                                pre_nms_top_k: int = 1000) -> dict:
    """`select_detections` for a batch of one, in ops LiteRT has as builtins.

    `combined_non_max_suppression` is not one (it needs the Flex delegate, which
    phones' LiteRT builds leave out), so each class runs
    `non_max_suppression_with_scores` (LiteRT's NON_MAX_SUPPRESSION_V5) and the
    best `max_detections` of all classes are kept: the same answer per class,
    unrolled over the (static) number of classes.
    """
    count, classes = boxes.shape[1], scores.shape[2]
    boxes, scores = boxes[0], scores[0]
    k = pre_nms_top_k if count is None else min(pre_nms_top_k, count)
    best = tf.math.top_k(tf.reduce_max(scores, axis=-1), k=k, sorted=False).indices
    boxes, scores = tf.gather(boxes, best), tf.gather(scores, best)
    kept_boxes, kept_scores, kept_classes = [], [], []
    for class_id in range(classes):
        selected, selected_scores = tf.image.non_max_suppression_with_scores(
            boxes, scores[:, class_id], max_output_size=max_detections, iou_threshold=iou_threshold,
            score_threshold=score_threshold)
        kept_boxes.append(tf.gather(boxes, selected))
        kept_scores.append(selected_scores)
        kept_classes.append(tf.fill(tf.shape(selected), class_id))
    all_scores = tf.concat(kept_scores, axis=0)
    # Counted by score, not by length: LiteRT's kernel pads each class's output with zero scores.
    found = tf.minimum(tf.reduce_sum(tf.cast(all_scores > 0.0, tf.int32)), max_detections)
    order = tf.math.top_k(all_scores, k=found).indices
    pad = [[0, max_detections - found]]
    return {
        "boxes": tf.pad(tf.gather(tf.concat(kept_boxes, axis=0), order), pad + [[0, 0]])[None],
        "scores": tf.pad(tf.gather(all_scores, order), pad)[None],
        "class_ids": tf.pad(tf.gather(tf.concat(kept_classes, axis=0), order), pad)[None],
        "num_detections": tf.reshape(found, [1]),
    }
