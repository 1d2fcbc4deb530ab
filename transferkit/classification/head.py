"""The classifier head every classification task puts on its backbone's pooled features."""

from __future__ import annotations

import dataclasses

from transferkit.config import check


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """The classifier head put on the backbone's pooled features."""

    dropout: float = 0.2
    hidden_units: int = 0  # 0: a single Dense layer
    label_smoothing: float = 0.0
    top_k: int = 5

    def __post_init__(self):
        check(0.0 <= self.dropout < 1.0, "head.dropout", self.dropout, "a number in [0, 1)")
        check(self.hidden_units >= 0, "head.hidden_units", self.hidden_units, "an integer >= 0")
        check(0.0 <= self.label_smoothing < 1.0, "head.label_smoothing", self.label_smoothing, "a number in [0, 1)")
        check(self.top_k >= 1, "head.top_k", self.top_k, "an integer >= 1")


def build_classifier_head(feature_dim: int, num_classes: int, config: HeadConfig, hidden_units: int | None = None):
    """features -> [Dense relu] -> [Dropout] -> Dense softmax (float32 even under mixed precision)."""
    import keras

    inputs = keras.Input(shape=(feature_dim,), name="features")
    x = inputs
    units = getattr(config, "hidden_units", 0) if hidden_units is None else hidden_units
    if units:
        x = keras.layers.Dense(units, activation="relu", name="head_hidden")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="classifier_head")
