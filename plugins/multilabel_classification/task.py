"""The multi-label image-classification task."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import DataError, TransferkitError
from transferkit.plugins.multilabel_classification.config import MultiLabelConfig
from transferkit.plugins.multilabel_classification.data import list_labelled_images
from transferkit.plugins.multilabel_classification.records import MultiLabelRecords, records_from_scores
from transferkit.registry import register_task
from transferkit.splits import SplitSource, read_splits
from transferkit.task import TaskData, input_ids
from transferkit.vision.classifier import PixelClassifier, check_image_serving, image_serving_examples
from transferkit.vision.preprocessor import ImagePreprocessor


@register_task("multilabel_classification")
class MultiLabelClassification(MultiLabelRecords, PixelClassifier):
    """Fine-tunes a backbone to give each image every label that applies (sigmoid outputs, tuned thresholds).

    Example:

    ```python
    from transferkit import load_config
    from transferkit.runner import train

    config = load_config("scenes.yaml")   # task: multilabel_classification, data.train: labels.csv
    run_dir = train(config, "runs/scenes")
    ```
    """

    config_class = MultiLabelConfig
    preprocessor_class = ImagePreprocessor

    @classmethod
    def example_config(cls, root):
        from transferkit.plugins.multilabel_classification.testing import make_multilabel_folder, tiny_config

        return tiny_config(make_multilabel_folder(Path(root) / "images", count=20, size=32))

    def register_keras_objects(self) -> None:
        import transferkit.plugins.multilabel_classification.layers  # noqa: F401  (registers LabelThresholds)

    # -- data ----------------------------------------------------------------

    def build_preprocessor(self) -> ImagePreprocessor:
        return self.task_config.data.preprocessor()

    def _listed(self, source: str, problems: list) -> tuple[list, list[str] | None]:
        images, found, columns = list_labelled_images(source, self.task_config.data.label_separator)
        problems.extend(found)
        return images, columns

    def datasets(self) -> TaskData:
        import tensorflow as tf

        from transferkit.vision.decoding import decode_images

        cfg = self.task_config.data
        seed = self.config.training.seed
        columns: list = []

        def read(path, names):
            found: list = []
            images, path_columns = self._listed(path, found)
            if names is None:
                columns.append(path_columns)
            return images, found

        splits = read_splits(
            SplitSource(cfg.train, cfg.val, cfg.val_split, cfg.train_fraction, seed, cfg.on_bad_image,
                        "data.on_bad_image"),
            read=read, min_classes=1,
            class_names=lambda images: list(cfg.class_names or columns[0]
                                            or sorted({l for image in images for l in image.labels})),
            keep=self._known, strata=self._strata)
        train_images, val_images, class_names, problems = splits.train, splits.val, splits.class_names, splits.problems
        height, width = cfg.image_size
        needed_mb = (len(train_images) + len(val_images)) * height * width * 3 / 2**20
        if needed_mb > cfg.cache_memory_mb:
            raise DataError(f"{cfg.train}: {len(train_images) + len(val_images)} images of {height}x{width} take "
                            f"{needed_mb:.0f} MB decoded, over data.cache_memory_mb={cfg.cache_memory_mb}; "
                            f"raise it or lower data.image_size")
        preprocessor = self.build_preprocessor()
        train_pixels, train_kept, bad = decode_images([i.path for i in train_images], preprocessor, cfg.on_bad_image)
        problems += bad
        val_pixels, val_kept, bad = decode_images([i.path for i in val_images], preprocessor, cfg.on_bad_image)
        problems += bad
        train_images = [train_images[i] for i in train_kept]
        val_images = [val_images[i] for i in val_kept]
        train_targets = _multi_hot(train_images, class_names)
        val_targets = _multi_hot(val_images, class_names)

        def batches(pixels, targets, shuffle: bool, rows: bool = False):
            parts = (pixels, targets, np.arange(len(targets), dtype=np.int64)) if rows else (pixels, targets)
            ds = tf.data.Dataset.from_tensor_slices(parts)
            if shuffle:
                ds = ds.shuffle(len(targets), seed=seed, reshuffle_each_iteration=True)
            return ds.batch(cfg.batch_size).map(lambda x, *rest: (tf.cast(x, tf.float32), *rest),
                                                num_parallel_calls=tf.data.AUTOTUNE)

        shuffled = batches(train_pixels, train_targets, shuffle=True)
        augment = self._augmenter(seed)
        train = shuffled.map(augment, num_parallel_calls=tf.data.AUTOTUNE) if augment else shuffled
        val_paths = [image.path for image in val_images]
        info = {
            "class_names": class_names,
            "image_size": list(cfg.image_size),
            "preprocessor": preprocessor.get_config(),
            "num_train": len(train_images),
            "num_val": len(val_images),
            "train_label_counts": [int(c) for c in train_targets.sum(axis=0)],
        }
        data = TaskData(
            train=train.prefetch(tf.data.AUTOTUNE),
            val=batches(val_pixels, val_targets, shuffle=False).prefetch(tf.data.AUTOTUNE),
            val_indexed=batches(val_pixels, val_targets, shuffle=False, rows=True).prefetch(tf.data.AUTOTUNE),
            val_records=val_paths,
            train_plain=batches(train_pixels, train_targets, shuffle=False),
            info=info,
            train_augmented=augment is not None,
            train_unaugmented=shuffled.prefetch(tf.data.AUTOTUNE),
            problems=problems,
            steps_per_epoch=math.ceil(len(train_images) / cfg.batch_size),
            examples=val_paths,
        )
        data.input_ids = {"train": input_ids(i.path for i in train_images), "val": input_ids(val_paths)}
        return data

    def _known(self, images, class_names, problems):
        """The images whose labels are all known; the others are problems (or fatal with on_bad_image: error)."""
        known, names = [], set(class_names)
        for image in images:
            unknown = [label for label in image.labels if label not in names]
            if not unknown:
                known.append(image)
                continue
            problem = {"path": image.path, "reason": f"label {unknown[0]!r} is not one of {class_names}"}
            if self.task_config.data.on_bad_image == "error":
                raise DataError(f"{problem['path']}: {problem['reason']} (data.on_bad_image is 'error')")
            problems.append(problem)
        return known

    @staticmethod
    def _strata(images, class_names) -> list[str]:
        """Each image's rarest label (or none), so every label keeps a share in training and validation."""
        counts = {name: 0 for name in class_names}
        for image in images:
            for label in image.labels:
                counts[label] += 1
        return [min(image.labels, key=lambda l: (counts[l], l)) if image.labels else "" for image in images]

    def _augmenter(self, seed: int):
        import keras
        import tensorflow as tf

        aug = self.task_config.augment
        if not aug.enabled:
            return None
        layers = []
        if aug.flip != "none":
            layers.append(keras.layers.RandomFlip({"both": "horizontal_and_vertical"}.get(aug.flip, aug.flip),
                                                  seed=seed))
        if aug.rotation:
            layers.append(keras.layers.RandomRotation(aug.rotation, fill_mode="reflect", seed=seed))
        if aug.brightness:
            layers.append(keras.layers.RandomBrightness(aug.brightness, value_range=(0, 255), seed=seed))
        if aug.contrast:
            layers.append(keras.layers.RandomContrast(aug.contrast, seed=seed))
        pipeline = keras.Sequential(layers, name="augment")

        def apply(images, targets):
            return tf.clip_by_value(pipeline(images, training=True), 0.0, 255.0), targets

        return apply

    # -- model and training ----------------------------------------------------

    def build_head(self, feature_dim: int, info):
        from transferkit.plugins.multilabel_classification.layers import build_multilabel_head

        return build_multilabel_head(feature_dim, len(info["class_names"]), self.task_config.head)

    def compile(self, model, optimizer=None):
        import keras

        head = self.task_config.head
        if head.loss == "focal":
            loss = keras.losses.BinaryFocalCrossentropy(gamma=head.focal_gamma, label_smoothing=head.label_smoothing)
        else:
            loss = keras.losses.BinaryCrossentropy(label_smoothing=head.label_smoothing)
        count = len(self.info["class_names"])
        model.compile(optimizer=optimizer, loss=loss, metrics=[
            keras.metrics.AUC(curve="PR", multi_label=True, num_labels=count, name="pr_auc"),
            keras.metrics.BinaryAccuracy(name="binary_accuracy")])

    def monitor(self) -> tuple[str, str]:
        return "val_pr_auc", "max"

    def score(self) -> tuple[str, str]:
        return "map", "max"

    def calibrate(self, model, data: TaskData) -> None:
        """Sets each label's threshold to the one that maximises its F1 on the validation images."""
        from transferkit.models.inference import traced_forward
        from transferkit.plugins.multilabel_classification.evaluation import tuned_thresholds
        from transferkit.plugins.multilabel_classification.layers import threshold_layer

        head = self.task_config.head
        if head.thresholds != "tuned" or data.val is None:
            return
        forward = traced_forward(model, data.val.element_spec[0])
        truth, scores = [], []
        for pixels, targets in data.val:
            scores.append(np.asarray(forward(pixels), np.float32))
            truth.append(np.asarray(targets, np.float32))
        if not scores:
            return
        chosen = tuned_thresholds(np.concatenate(truth), np.concatenate(scores), head.threshold)
        threshold_layer(model).set_thresholds(chosen)

    # -- evaluation and prediction -------------------------------------------

    def evaluate(self, model, data: TaskData, info, report_dir: Path) -> dict[str, Any]:
        from transferkit.evaluation import run_evaluation
        from transferkit.plugins.multilabel_classification.evaluation import MultiLabelEvaluation
        from transferkit.plugins.multilabel_classification.layers import thresholds_of

        evaluation = MultiLabelEvaluation(info["class_names"], thresholds_of(model), data.val_records)
        return run_evaluation(model, data.val_indexed, evaluation, Path(report_dir))

    def read_input(self, path, info):
        try:
            return self.preprocessor(info).read_file(path)
        except Exception as error:
            raise TransferkitError(f"{path}: unreadable image: {type(error).__name__}: {error}") from None

    def predict(self, model, paths, info, save_dir=None, top_k: int = 3, **options):
        """Yields (path, [LabelScore, ...]): every label above its threshold, then the best others up to `top_k`."""
        from transferkit.plugins.multilabel_classification.layers import thresholds_of

        names, thresholds = list(info["class_names"]), thresholds_of(model)
        for path in paths:
            pixels = self.read_input(path, info)
            probabilities = np.asarray(model(pixels[None].astype("float32"), training=False))
            yield path, records_from_scores(probabilities, thresholds, names, top_k)[0]

    # -- export and serving ----------------------------------------------------

    def edge_model(self, model, info):
        """Pixels -> `probabilities` and each label's `thresholds` (both [batch, labels], label order)."""
        import tensorflow as tf

        from transferkit.edge import PIXEL_INPUT_NOTES, EdgeModel
        from transferkit.plugins.multilabel_classification.evaluation import MultiLabelEdgeScore

        from transferkit.plugins.multilabel_classification.layers import thresholds_of

        values = thresholds_of(model)
        shape = [None, *(int(d) for d in model.inputs[0].shape[1:])]

        def classify(pixels):
            probabilities = tf.cast(model(pixels, training=False), tf.float32)
            # Made inside the traced function: a captured tensor would become a second input of an ONNX file.
            thresholds = tf.constant(values)[None, :]
            return {"probabilities": probabilities, "thresholds": tf.zeros_like(probabilities) + thresholds}

        return EdgeModel(inputs={"pixels": tf.TensorSpec(shape, tf.float32, name="pixels")}, function=classify,
                         score=lambda data: MultiLabelEdgeScore(),
                         output_steps=("read probabilities and thresholds (labels order); a label applies where "
                                       "its probability is at least its threshold",),
                         input_notes={"pixels": PIXEL_INPUT_NOTES})

    def serving_signatures(self, model, info: dict[str, Any]) -> dict[str, Any]:
        from transferkit.plugins.multilabel_classification.serving import multilabel_signatures

        return multilabel_signatures(model, self.preprocessor(info), info["class_names"])

    def serving_examples(self, info, count):
        return image_serving_examples(self, info, count)

    def check_serving(self, model, signatures, examples, info):
        return check_image_serving(model, signatures, examples, self.preprocessor(info), float_outputs=("probabilities", "scores", "thresholds"))


def _multi_hot(images, class_names) -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    targets = np.zeros((len(images), len(class_names)), np.float32)
    for row, image in enumerate(images):
        targets[row, [index[label] for label in image.labels]] = 1.0
    return targets
