"""Serving signatures of the image classifier.

`serving_default` takes a batch of encoded images (JPEG, PNG, BMP or GIF
bytes) and does everything in the graph: decoding, the training-time resize,
the model (whose normalisation is its first layer), softmax outputs and the
top-k labels. `serving_pixels` takes float32 pixels (0..255) already sized.
Both return the same named outputs, so a client needs no Python of ours.
"""

from __future__ import annotations

from typing import Any

IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"
OUTPUT_NAMES = ("probabilities", "scores", "class_ids", "labels")


def decode_and_resize(encoded, image_size, resize: str, crop_fraction: float = 1.0, max_pixels: int | None = None,
                      interpolation: str = "bilinear"):
    """One encoded image -> float32 (H, W, 3), like the training pipeline; refuses images over `max_pixels`."""
    from transferkit.vision.images import MAX_PIXELS, decode_encoded, resize_image

    return resize_image(decode_encoded(encoded, max_pixels or MAX_PIXELS), image_size, resize, crop_fraction,
                        interpolation)


def preprocess_encoded(encoded, info: dict[str, Any]):
    """Encoded image -> model pixels, with the run's recorded preprocessing."""
    # Runs from before `interpolation` existed were trained on bilinear resizes.
    return decode_and_resize(encoded, info["image_size"], info.get("resize", "crop"),
                             float(info.get("crop_fraction", 1.0)), info.get("max_pixels"),
                             info.get("interpolation", "bilinear"))


def classification_outputs(probabilities, class_names, k: int) -> dict[str, Any]:
    """A classifier's named serving outputs from its probabilities: the same for every classification task."""
    import tensorflow as tf

    probabilities = tf.cast(probabilities, tf.float32)
    scores, class_ids = tf.math.top_k(probabilities, k=k)
    return {
        "probabilities": tf.identity(probabilities, name="probabilities"),
        "scores": tf.identity(scores, name="scores"),
        "class_ids": tf.identity(class_ids, name="class_ids"),
        "labels": tf.gather(tf.constant(list(class_names)), class_ids, name="labels"),
    }


def classification_records(outputs, top_k: int | None = None) -> list[list[tuple[str, float]]]:
    """Served classification outputs (`labels`, `scores`: batch x k) as [(label, score), ...] per example."""
    import numpy as np

    labels, scores = np.asarray(outputs["labels"], dtype=object), np.asarray(outputs["scores"], dtype=np.float32)
    records = []
    for row_labels, row_scores in zip(labels, scores):
        names = [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in row_labels]
        records.append(list(zip(names, (float(v) for v in row_scores)))[:top_k])
    return records


def classification_signatures(model, info: dict[str, Any], top_k: int = 5) -> dict[str, Any]:
    import tensorflow as tf

    class_names = list(info["class_names"])
    image_size = info["image_size"]
    resize = info.get("resize", "crop")
    crop_fraction = float(info.get("crop_fraction", 1.0))
    max_pixels = info.get("max_pixels")
    interpolation = info.get("interpolation", "bilinear")  # runs from before the option: bilinear
    k = max(1, min(top_k, len(class_names)))

    def outputs(pixels):
        return classification_outputs(model(pixels, training=False), class_names, k)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
    def serve_images(images):
        # parallel_iterations: a batch (server-side batching) decodes its images concurrently.
        pixels = tf.map_fn(lambda encoded: decode_and_resize(encoded, image_size, resize, crop_fraction, max_pixels,
                                                             interpolation),
                           images,
                           parallel_iterations=16,
                           fn_output_signature=tf.TensorSpec([image_size[0], image_size[1], 3], tf.float32))
        return outputs(pixels)

    @tf.function(input_signature=[tf.TensorSpec([None, image_size[0], image_size[1], 3], tf.float32,
                                                name=PIXELS_INPUT)])
    def serve_pixels(pixels):
        return outputs(pixels)

    return {"serving_default": serve_images, "serving_pixels": serve_pixels}
