"""The multi-label head and the layer that carries each label's decision threshold inside the model."""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="transferkit")
class LabelThresholds(keras.layers.Layer):
    """Passes probabilities through unchanged and holds one decision threshold per label.

    The thresholds are chosen on validation data after training (`set_thresholds`) and travel with the
    weights: in `model.keras`, in the SavedModel (whose `above_threshold` output compares with them) and in
    edge exports.

    Example:

    ```python
    layer = LabelThresholds(num_labels=3, default=0.5)
    layer.set_thresholds([0.3, 0.5, 0.7])
    ```
    """

    def __init__(self, num_labels: int, default: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(num_labels, int) and num_labels >= 1):
            raise ValueError(f"LabelThresholds: num_labels must be an integer >= 1. Received: num_labels={num_labels!r}")
        if not 0.0 < float(default) < 1.0:
            raise ValueError(f"LabelThresholds: default must be in (0, 1). Received: default={default!r}")
        self.num_labels = num_labels
        self.default = float(default)
        self.thresholds = self.add_weight(
            name="thresholds", shape=(num_labels,), trainable=False, dtype="float32",
            initializer=keras.initializers.Constant(self.default))

    def call(self, probabilities):
        return probabilities

    def set_thresholds(self, values) -> None:
        values = np.asarray(values, np.float32).reshape(-1)
        if values.shape != (self.num_labels,) or not np.all((values > 0) & (values < 1)):
            raise ValueError(f"LabelThresholds: expected {self.num_labels} thresholds in (0, 1). "
                             f"Received: {values.tolist()}")
        self.thresholds.assign(values)

    def get_config(self):
        return {**super().get_config(), "num_labels": self.num_labels, "default": self.default}


def build_multilabel_head(feature_dim: int, num_labels: int, config) -> keras.Model:
    """features -> [Dense relu] -> [Dropout] -> Dense sigmoid (float32) -> LabelThresholds."""
    inputs = keras.Input(shape=(feature_dim,), name="features")
    x = inputs
    if config.hidden_units:
        x = keras.layers.Dense(config.hidden_units, activation="relu", name="head_hidden")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_labels, activation="sigmoid", dtype="float32", name="probabilities")(x)
    outputs = LabelThresholds(num_labels, config.threshold, dtype="float32", name="label_thresholds")(x)
    return keras.Model(inputs, outputs, name="classifier_head")


def threshold_layer(model) -> LabelThresholds:
    """The `LabelThresholds` layer of a model (or of its classifier head)."""
    head = model.get_layer("classifier_head") if "classifier_head" in [l.name for l in model.layers] else model
    return head.get_layer("label_thresholds")


def thresholds_of(model) -> np.ndarray:
    """The thresholds a model (or its classifier head) carries."""
    return np.asarray(threshold_layer(model).thresholds, np.float32)
