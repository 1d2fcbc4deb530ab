"""Serving signatures of the image classifier.

`serving_default` takes a batch of encoded images (JPEG, PNG, BMP, GIF or
WebP bytes) and does everything in the graph: the run's `ImagePreprocessor`
(decoding, the training-time resize), the model (whose normalisation is its
first layer), softmax outputs and the top-k labels. `serving_pixels` takes float32 pixels (0..255) already sized.
Both return the same named outputs, so a client needs no Python of ours.
"""

from __future__ import annotations

from typing import Any

from transferkit.classification.outputs import classification_outputs

IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"


def classification_signatures(model, preprocessor, class_names, top_k: int = 5) -> dict[str, Any]:
    """`serving_default` (encoded images through `preprocessor`) and `serving_pixels` (model pixels)."""
    import tensorflow as tf

    class_names = list(class_names)
    height, width = preprocessor.image_size
    k = max(1, min(top_k, len(class_names)))

    def outputs(pixels):
        return classification_outputs(model(pixels, training=False), class_names, k)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
    def serve_images(images):
        # parallel_iterations: a batch (server-side batching) decodes its images concurrently.
        pixels = tf.map_fn(preprocessor.preprocess, images, parallel_iterations=16,
                           fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
        return outputs(pixels)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name=PIXELS_INPUT)])
    def serve_pixels(pixels):
        return outputs(pixels)

    return {"serving_default": serve_images, "serving_pixels": serve_pixels}
