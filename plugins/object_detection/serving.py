"""Serving signatures of the detector: encoded images in, boxes in the original pixels out.

`serving_default` takes a batch of encoded images and does everything in the
graph with core TensorFlow ops: decoding (EXIF orientation applied), the
training-time resize, the model, box decoding against the anchors, per-class
NMS (`combined_non_max_suppression`, which traces with an unknown batch
size) and scaling the boxes back to each image's own size. Thresholds and K
come from the run's `detect` section; `serving_thresholds` takes them per
request. `raw_outputs` exposes the head's outputs before NMS, on float
pixels, for parity checks and debugging.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from transferkit.task import ParityCheck

IMAGES_INPUT = "images"
OUTPUT_NAMES = ("boxes", "scores", "class_ids", "labels", "num_detections")
BOX_TOLERANCE_PX = 0.05  # decoded boxes, in original-image pixels
SCORE_TOLERANCE = 1e-4


def preprocess_encoded(encoded, image_size):
    """One encoded image -> (model-size float32 pixels, original (height, width)); TF ops."""
    import tensorflow as tf

    from transferkit.vision.images import decode_encoded, resize_image

    image = decode_encoded(encoded)
    return resize_image(image, image_size, "stretch"), tf.shape(image)[:2]


def detection_signatures(model, detector, info: Mapping[str, Any], detect) -> dict[str, Any]:
    import tensorflow as tf

    height, width = info["image_size"]
    labels_table = tf.constant(list(info["class_names"]))
    default_k = int(detect.max_detections)

    def prepare(images):
        pixels, sizes = tf.map_fn(
            lambda encoded: preprocess_encoded(encoded, (height, width)), images, parallel_iterations=16,
            fn_output_signature=(tf.TensorSpec([height, width, 3], tf.float32), tf.TensorSpec([2], tf.int32)))
        return pixels, sizes

    def detections(pixels, sizes, score_threshold, iou_threshold, k):
        raw = model(pixels, training=False)
        out = detector.decode(raw, score_threshold=score_threshold, iou_threshold=iou_threshold,
                              max_detections=default_k)
        # A per-request K keeps the best K of the default's (NMS output is sorted by score).
        count = tf.minimum(out["num_detections"], k)
        valid = tf.range(default_k)[None, :] < count[:, None]
        sizes = tf.cast(sizes, tf.float32)
        scale = tf.stack([sizes[:, 1] / width, sizes[:, 0] / height] * 2, axis=-1)[:, None, :]
        boxes = tf.where(valid[..., None], out["boxes"] * scale, 0.0)[:, :k]
        class_ids = tf.where(valid, out["class_ids"], 0)[:, :k]
        return {
            "boxes": tf.identity(boxes, name="boxes"),
            "scores": tf.identity(tf.where(valid, out["scores"], 0.0)[:, :k], name="scores"),
            "class_ids": tf.identity(class_ids, name="class_ids"),
            "labels": tf.where(valid[:, :k], tf.gather(labels_table, class_ids), "", name="labels"),
            "num_detections": tf.identity(count, name="num_detections"),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
    def serve_images(images):
        pixels, sizes = prepare(images)
        return detections(pixels, sizes, float(detect.score_threshold), float(detect.iou_threshold), default_k)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=IMAGES_INPUT),
        tf.TensorSpec([], tf.float32, name="score_threshold"),
        tf.TensorSpec([], tf.float32, name="iou_threshold"),
        tf.TensorSpec([], tf.int32, name="max_detections"),
    ])
    def serve_with_thresholds(images, score_threshold, iou_threshold, max_detections):
        pixels, sizes = prepare(images)
        k = tf.clip_by_value(max_detections, 1, default_k)
        return detections(pixels, sizes, score_threshold, iou_threshold, k)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="pixels")])
    def raw_outputs(pixels):
        raw = model(pixels, training=False)
        return {key: tf.identity(value, name=key) for key, value in raw.items()}

    return {"serving_default": serve_images, "serving_thresholds": serve_with_thresholds,
            "raw_outputs": raw_outputs}


def check_detection_parity(task, model, signatures, examples, info) -> list[ParityCheck]:
    """Raw head outputs within 1e-4, and the decoded detections of real images, SavedModel vs Keras."""
    import tensorflow as tf

    height, width = info["image_size"]
    encoded = [example[IMAGES_INPUT] for example in examples]
    prepared = [preprocess_encoded(tf.constant(e), (height, width)) for e in encoded]
    pixels = tf.stack([p for p, _ in prepared])
    sizes = np.stack([s.numpy() for _, s in prepared])
    expected_raw = model(pixels, training=False)
    served_raw = signatures["raw_outputs"](pixels=pixels)
    checks = [ParityCheck(f"raw_outputs.{key}",
                          float(np.abs(served_raw[key].numpy() - np.asarray(expected_raw[key])).max()))
              for key in expected_raw]
    checks.append(_compare_decoded("serving_default", signatures["serving_default"](images=tf.constant(encoded)),
                                    task.detect_pixels(model, pixels, info), sizes, (height, width)))
    # Threshold 0 keeps K boxes per image, so the decoded comparison is never vacuous.
    k = int(task.task_config.detect.max_detections)
    served = signatures["serving_thresholds"](images=tf.constant(encoded), score_threshold=tf.constant(0.0),
                                              iou_threshold=tf.constant(float(task.task_config.detect.iou_threshold)),
                                              max_detections=tf.constant(k))
    checks.append(_compare_decoded("serving_thresholds", served,
                                   task.detect_pixels(model, pixels, info, score_threshold=0.0), sizes, (height, width)))
    return _flatten(checks)


def _flatten(checks):
    flat = []
    for check in checks:
        flat.extend(check if isinstance(check, list) else [check])
    return flat


def _compare_decoded(name, served, expected, sizes, model_size) -> list[ParityCheck]:
    import tensorflow as tf

    height, width = model_size
    for key in ("boxes", "scores"):
        if served[key].dtype != tf.float32:
            raise TypeError(f"{name}: output {key!r} is {served[key].dtype.name}, expected float32")
    box_diff, score_diff = 0.0, 0.0
    for i in range(len(sizes)):
        count = int(expected["num_detections"][i])
        if int(served["num_detections"][i]) != count:
            return [ParityCheck(f"{name}.num_detections", float("inf"), 0.5)]
        scale = np.array([sizes[i][1] / width, sizes[i][0] / height] * 2, np.float32)
        if count:
            box_diff = max(box_diff, float(np.abs(served["boxes"].numpy()[i, :count]
                                                  - expected["boxes"][i, :count] * scale).max()))
            score_diff = max(score_diff, float(np.abs(served["scores"].numpy()[i, :count]
                                                      - expected["scores"][i, :count]).max()))
    return [ParityCheck(f"{name}.boxes", box_diff, BOX_TOLERANCE_PX),
            ParityCheck(f"{name}.scores", score_diff, SCORE_TOLERANCE)]
