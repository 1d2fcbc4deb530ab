"""Serving signatures of the multi-label classifier.

`serving_default` takes encoded images and does everything in the graph (the run's `ImagePreprocessor`,
the model, the thresholds the model carries); `serving_pixels` takes float32 pixels (0..255) already
sized. Both return `probabilities` (label order) and, best first, `scores`, `labels`, `thresholds` and
`above_threshold`.
"""

from __future__ import annotations

from typing import Any

from transferkit.plugins.multilabel_classification.layers import threshold_layer
from transferkit.plugins.multilabel_classification.records import multilabel_outputs


def multilabel_signatures(model, preprocessor, class_names) -> dict[str, Any]:
    import tensorflow as tf

    class_names = list(class_names)
    height, width = preprocessor.image_size
    thresholds = threshold_layer(model).thresholds

    def outputs(pixels):
        return multilabel_outputs(model(pixels, training=False), thresholds, class_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_images(images):
        pixels = tf.map_fn(preprocessor.preprocess, images, parallel_iterations=16,
                           fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
        return outputs(pixels)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="pixels")])
    def serve_pixels(pixels):
        return outputs(pixels)

    return {"serving_default": serve_images, "serving_pixels": serve_pixels}
