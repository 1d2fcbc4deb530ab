"""Keras layers of the text classifier, registered so saved models reload."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="transferkit")
class TokenPooling(keras.layers.Layer):
    """Token vectors `[B, L, H]` and their padding mask `[B, L]` -> one vector `[B, H]`.

    `mode="mean"` averages the real tokens (padding excluded); `mode="cls"`
    takes the first token.
    """

    def __init__(self, mode: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "cls"):
            raise ValueError(f"TokenPooling: mode must be 'mean' or 'cls'; received mode={mode!r}")
        self.mode = mode

    def call(self, tokens, padding_mask):
        if self.mode == "cls":
            return tokens[:, 0, :]
        mask = keras.ops.cast(padding_mask, tokens.dtype)[:, :, None]
        total = keras.ops.sum(tokens * mask, axis=1)
        return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)

    def compute_output_shape(self, tokens_shape, padding_mask_shape=None):
        return (tokens_shape[0], tokens_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="transferkit")
class SegmentIds(keras.layers.Layer):
    """All-zero segment ids shaped like the token ids: one-segment classification inputs."""

    def call(self, token_ids):
        return keras.ops.zeros_like(token_ids)


@keras.saving.register_keras_serializable(package="transferkit")
class AsMask(keras.layers.Layer):
    """A padding mask (cached as float32) back to int32, as the transformer layers expect it."""

    def call(self, mask):
        return keras.ops.cast(mask, "int32")
