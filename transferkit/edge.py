"""What a task hands to an edge export (LiteRT, ONNX): the graph to convert, its inputs, how to score it.

`Task.edge_model(model, info)` returns an `EdgeModel`, or None when the task
has no edge export. `transferkit.serving.edge_export` converts `function`,
then feeds the run's validation batches to both the function (in TensorFlow)
and the converted file, each into its own `EdgeScore`, and compares the two.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable

import numpy as np


class EdgeScore(abc.ABC):
    """A score of outputs over validation batches; higher is better, in [0, 1].

    `compared` names the output whose largest difference between the Keras
    model and the exported file is reported (class probabilities, box scores).
    """

    metric: str = "accuracy"
    compared: str = "probabilities"

    @abc.abstractmethod
    def update(self, outputs: dict[str, np.ndarray], targets: Any, rows: np.ndarray) -> None:
        """One batch: the outputs by name, the batch's targets and its rows in the validation listing."""

    @abc.abstractmethod
    def result(self) -> dict[str, float]:
        """`{metric: value, ...}`; `metric` is the one the tolerance applies to."""


class AccuracyScore(EdgeScore):
    """Top-1 accuracy of `probabilities` against one-hot targets."""

    def __init__(self, data=None):
        self.hits = self.count = 0

    def update(self, outputs, targets, rows) -> None:
        labels = np.asarray(targets).argmax(axis=1)
        self.hits += int((np.asarray(outputs["probabilities"]).argmax(axis=1) == labels).sum())
        self.count += len(labels)

    def result(self) -> dict[str, float]:
        return {"accuracy": self.hits / self.count if self.count else 0.0}


@dataclasses.dataclass(frozen=True)
class EdgeModel:
    """The graph an edge export converts.

    Example (a classifier's, as `ClassifierRecords.edge_model` builds it):

    ```python
    EdgeModel(inputs={"pixels": tf.TensorSpec([None, 224, 224, 3], tf.float32, name="pixels")},
              function=lambda pixels: {"probabilities": model(pixels, training=False)},
              score=AccuracyScore, keras_model=model)
    ```

    Args:
        inputs: the file's inputs by name (`tf.TensorSpec`, batch first).
        function: tensors in `sorted(inputs)` order -> `{output name: tensor}`; traced once.
        score: makes a fresh `EdgeScore` from the run's `TaskData` (a detector's ground truth is there).
        keras_model: the model when `function` is its plain forward pass: ONNX converts it with
            `tf2onnx.convert.from_keras`, which keeps a Normalization layer's constants as constants.
        one_example: the file takes one example per call (a detector's NMS is written for a batch of one).
        calibration: turns the sampled training examples (dicts of `[1, ...]` arrays) into the int8
            calibration set; None keeps them (a text task packs real tokens into full rows).
        int8_integer_scope: for a graph with post-processing (a detector's box decoding and NMS): int8
            files quantize only the ops under this name scope (the network, named as the Keras model)
            and keep the rest in float. None (and no `int8_float_ops`): the whole graph in integer kernels.
        int8_float_layers: Keras layer names whose ops int8 files keep in float wherever they sit (a
            YOLO head's output convolutions, whose one tensor mixes box offsets near 0 with logits near
            -10: one int8 scale cannot hold both).
        int8_float_ops: LiteRT op types that int8 files keep in float, except where they make the
            file's outputs (which stay integer, so the outputs can be uint8 or int8 as asked).
            A transformer's are the text task's `TRANSFORMER_INT8_FLOAT_OPS`.
        output_steps: what an app does with the file's outputs, for the signature file's `app_steps`.
        input_notes: per input, what an app must know beyond its shape and dtype (an image's layout and
            value range), for the signature file's `input`.
    """

    inputs: dict[str, Any]
    function: Callable[..., dict]
    score: Callable[[Any], EdgeScore] = AccuracyScore
    keras_model: Any = None
    one_example: bool = False
    calibration: Callable[[list], list] | None = None
    int8_integer_scope: str | None = None
    int8_float_layers: tuple[str, ...] = ()
    int8_float_ops: tuple[str, ...] = ()
    output_steps: tuple[str, ...] = ("read the outputs as the task's signature names them",)
    input_notes: dict[str, dict] = dataclasses.field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return sorted(self.inputs)

    @property
    def float_inputs(self) -> bool:
        import tensorflow as tf

        return all(spec.dtype == tf.float32 for spec in self.inputs.values())


# What an app must know of an image input: pixels in NHWC order, RGB, 0..255 (the model normalises).
PIXEL_INPUT_NOTES = {"layout": "NHWC RGB", "range": [0, 255]}
