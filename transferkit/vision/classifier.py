"""`PixelClassifier`: a classification task whose model reads images (photos, spectrograms) with an image backbone."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from transferkit.classification.task import ClassificationTask


class PixelClassifier(ClassificationTask):
    """pixels (0..255) -> backbone normalisation -> image backbone -> global pool -> classifier head.

    The input-agnostic parts come from `ClassificationTask`; this adds the model
    graph, the feature-cache split of a frozen backbone, the worst-classified
    contact sheet, and `predict` over files that `read_input(path, info)` turns
    into the model's pixels. Image and audio classification build on it.

    Example:

    ```python
    class SpectrogramTask(PixelClassifier):
        def read_input(self, path, info):
            return my_spectrogram_image(path)   # float32 [height, width, 3]
    ```
    """

    def build_model(self, backbone, info, backbone_training: bool = False):
        """The backbone runs in inference mode unless `backbone_training` (a stage that trains
        BatchNormalization): that keeps BN statistics and stochastic depth of frozen and unfrozen blocks as
        pretrained, and makes the features equal to the cached ones."""
        import keras

        from transferkit.models.backbones import InferenceMode

        head = self.classifier_head(backbone, info, backbone.feature_dim)
        inputs = keras.Input(shape=self.preprocessor(info).model_input_shape, name="pixels")
        x = backbone.normalization(inputs)
        # InferenceMode: fit's training flag would otherwise reach the backbone's stochastic depth.
        x = (backbone.model if backbone_training else InferenceMode(backbone.model, name="backbone_inference"))(x)
        if len(x.shape) == 4:
            x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, head(x), name="transfer_model")

    def cache_split(self, model, backbone):
        from transferkit.task import CacheSplit

        if not backbone.is_frozen():
            return None  # only a wholly frozen backbone is cached
        head = model.get_layer("classifier_head")
        return CacheSplit(extractor=backbone.feature_extractor(self.preprocessor().model_input_shape), trainable=head)

    def explain_missing(self, info):
        """For the report: why a validation input the stream dropped is missing (None: none is dropped)."""
        return None

    def evaluation(self, info, records):
        from transferkit.classification.evaluation import ClassificationEvaluation
        from transferkit.vision.report import plot_worst

        class_names = list(info["class_names"])
        return ClassificationEvaluation(
            class_names, self.task_config.head.top_k, records,
            write_worst=lambda folder, worst, names: plot_worst(worst, class_names, names,
                                                                folder / "worst_classified.png"),
            explain_missing=self.explain_missing(info))

    def read_input(self, path: str, info: Mapping[str, Any]) -> np.ndarray:
        """One input file -> the model's float32 pixels [height, width, 3]; a TransferkitError naming it if not."""
        raise NotImplementedError

    def predict(self, model, paths, info, save_dir=None, top_k: int = 3, **options):
        """Yields (path, [(label, score), ...]) with the `top_k` best labels of each file."""
        names = list(info["class_names"])
        for path in paths:
            pixels = self.read_input(path, info)
            probabilities = np.asarray(model(pixels[None].astype("float32"), training=False))
            yield path, self.ranked(probabilities, names, top_k)[0]


def image_serving_examples(task, info, count: int) -> list[dict]:
    """`Task.serving_examples` of a task whose `serving_default` takes encoded `images`."""
    from transferkit.serving.examples import encoded_image_examples

    return [{"images": image} for image in encoded_image_examples(info, count, task.preprocessor(info).image_size)]


def check_image_serving(model, signatures, examples, preprocessor, float_outputs=("probabilities", "scores")):
    """`Task.check_serving` of a model whose signatures take encoded `images` and `pixels` and return
    `probabilities`: the largest difference of each signature's from the Keras model's, with `float_outputs`
    checked to be float32."""
    import tensorflow as tf

    from transferkit.task import ParityCheck

    encoded = [example["images"] for example in examples]
    pixels = tf.stack([preprocessor.preprocess(e) for e in encoded])
    expected = np.asarray(model(pixels, training=False), dtype=np.float32)
    from_bytes = signatures["serving_default"](images=tf.constant(encoded))
    from_pixels = signatures["serving_pixels"](pixels=pixels)
    for key in float_outputs:
        if from_bytes[key].dtype != tf.float32:
            raise TypeError(f"output {key!r} is {from_bytes[key].dtype.name}, expected float32")
    return [
        ParityCheck("serving_default", float(np.abs(from_bytes["probabilities"].numpy() - expected).max())),
        ParityCheck("serving_pixels", float(np.abs(from_pixels["probabilities"].numpy() - expected).max())),
    ]
