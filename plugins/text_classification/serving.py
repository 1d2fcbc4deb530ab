"""Serving signatures of the text classifier.

`serving_default` takes raw texts (tf.string `[-1]`, input `text`) and does
tokenisation, packing, the model, softmax outputs and the top-k labels in
the graph; `serving_token_ids` takes already packed `token_ids` and
`padding_mask`. Both return the same named outputs as the image classifier
(`probabilities`, `scores`, `class_ids`, `labels`).
"""

from __future__ import annotations

from typing import Any

TEXT_INPUT = "text"


def text_signatures(model, encoder, info: dict[str, Any], top_k: int = 5) -> dict[str, Any]:
    import tensorflow as tf

    from transferkit.classification.outputs import classification_outputs

    class_names = list(info["class_names"])
    k = max(1, min(top_k, len(class_names)))
    length = encoder.sequence_length

    def outputs(inputs):
        return classification_outputs(model(inputs, training=False), class_names, k)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=TEXT_INPUT)])
    def serve_text(text):
        return outputs(encoder(text))

    @tf.function(input_signature=[tf.TensorSpec([None, length], tf.int32, name="token_ids"),
                                  tf.TensorSpec([None, length], tf.int32, name="padding_mask")])
    def serve_token_ids(token_ids, padding_mask):
        # A negative id would index the embedding table from its end; ids past it already fail.
        check = tf.debugging.assert_non_negative(token_ids, message="token_ids must be >= 0")
        with tf.control_dependencies([check]):
            token_ids = tf.identity(token_ids)
        return outputs({"token_ids": token_ids, "padding_mask": padding_mask})

    return {"serving_default": serve_text, "serving_token_ids": serve_token_ids}
