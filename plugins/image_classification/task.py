"""The image-classification task."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import DataError
from transferkit.plugins.image_classification import data as data_lib
from transferkit.plugins.image_classification.config import ImageClassificationConfig
from transferkit import paths
from transferkit.vision import packing, streaming
from transferkit.registry import register_task
from transferkit.splits import SplitSource, read_splits
from transferkit.task import TaskData, input_ids
from transferkit.vision.classifier import PixelClassifier, check_image_serving, image_serving_examples
from transferkit.vision.preprocessor import ImagePreprocessor


@register_task("image_classification")
class ImageClassification(PixelClassifier):
    """Fine-tunes a backbone to label images from class folders or a CSV.

    Example:

    ```python
    from transferkit import load_config
    from transferkit.runner import train

    config = load_config("flowers.yaml")   # task: image_classification
    run_dir = train(config, "runs/flowers")
    ```
    """

    config_class = ImageClassificationConfig
    preprocessor_class = ImagePreprocessor

    @classmethod
    def example_config(cls, root):
        from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config

        return tiny_config(make_image_folder(Path(root) / "images", per_class=6, size=32))

    # -- data ----------------------------------------------------------------

    def build_preprocessor(self) -> ImagePreprocessor:
        return self.task_config.data.preprocessor()

    def class_names(self, train_samples) -> list[str]:
        configured = self.task_config.data.class_names
        return list(configured) if configured else sorted({s.label for s in train_samples})

    def cache_mode(self, count: int) -> str:
        """`data.cache`, with auto resolved: memory when `count` decoded images fit the memory budget."""
        cfg = self.task_config.data
        return streaming.resolve_cache(cfg.cache, count, streaming.image_bytes(cfg.image_size), cfg.cache_memory_mb)

    def _checked_files(self, samples, class_names):
        """Streaming: samples with a known label whose header passes, and the problems of the rest."""
        index = {name: i for i, name in enumerate(class_names)}
        problems = [{"path": s.path, "reason": f"label {s.label!r} is not one of the classes {class_names}"}
                    for s in samples if s.label not in index]
        known = [s for s in samples if s.label in index]
        files = streaming.check_image_files([s.path for s in known], [index[s.label] for s in known],
                                            self.task_config.data.max_pixels)
        return files, problems + files.problems

    def datasets(self) -> TaskData:
        import tensorflow as tf

        cfg = self.task_config.data
        seed = self.config.training.seed
        if packing.is_pack(cfg.train):
            return self._task_data(*self._packed_batches())
        splits = read_splits(
            SplitSource(cfg.train, cfg.val, cfg.val_split, cfg.train_fraction, seed, cfg.on_bad_image,
                        "data.on_bad_image"),
            read=lambda path, names: data_lib.list_samples(path), class_names=self.class_names,
            strata=lambda samples, names: _labels(samples))
        train_samples, val_samples, class_names, problems = (splits.train, splits.val, splits.class_names,
                                                             splits.problems)
        num_classes = len(class_names)
        mode = self.cache_mode(len(train_samples) + len(val_samples))
        preprocessor = self.build_preprocessor()
        if mode == "memory":
            train = data_lib.load_images(train_samples, class_names, preprocessor, cfg.on_bad_image)
            val = data_lib.load_images(val_samples, class_names, preprocessor, cfg.on_bad_image)
            problems += train.problems + val.problems

            def batches(loaded, shuffle: bool, photo_crop=None):
                ds = tf.data.Dataset.from_tensor_slices((loaded.images, loaded.labels))
                if shuffle:
                    ds = ds.shuffle(len(loaded.labels), seed=seed, reshuffle_each_iteration=True)
                return ds.batch(cfg.batch_size)
        else:
            train, train_problems = self._checked_files(train_samples, class_names)
            val, val_problems = self._checked_files(val_samples, class_names)
            problems += train_problems + val_problems
            if cfg.on_bad_image == "error" and (train_problems or val_problems):
                raise DataError.for_bad_inputs(train_problems + val_problems, "data.on_bad_image")
            for split, name in ((train, "training"), (val, "validation")):
                if not len(split):
                    raise DataError(f"no usable {name} images: " + "; ".join(
                        f"{p['path']}: {p['reason']}" for p in problems[:5]))
            stream = dict(preprocessor.resize_options(), batch_size=cfg.batch_size, cache=mode,
                          cache_dir=cfg.cache_dir or paths.home() / "data_cache",
                          skip_errors=cfg.on_bad_image == "skip")

            def batches(files, shuffle: bool, photo_crop=None):
                return streaming.image_dataset(files, shuffle=shuffle, seed=seed, random_crop=photo_crop, **stream)

        counts = np.bincount(train.labels, minlength=num_classes)
        # Streamed: a file whose header passed but whose body does not decode is skipped by tf.data.
        find_dropped = None if mode == "memory" else _undecodable_finder(list(train.paths), cfg.max_pixels)
        # Validation batches carry each image's row in the label slot, so the evaluation knows which file
        # each example is (and which ones the stream dropped); the label is looked up by row.
        val_labels = np.asarray(val.labels, np.int32)
        val_by_row = dataclasses.replace(val, labels=np.arange(len(val_labels), dtype=np.int32))
        data = self._task_data(batches, train, val_by_row, class_names, counts, len(val_labels), problems,
                               list(val.paths), streamed=mode == "none", find_dropped=find_dropped,
                               val_labels=val_labels, val_records=list(val.paths))
        data.input_ids = {"train": input_ids(train.paths), "val": input_ids(val.paths)}
        return data

    def _packed_batches(self):
        """`datasets()` for a pack folder (`transferkit data pack`): its train and val splits' shards."""
        cfg = self.task_config.data
        pack = packing.Pack.open(cfg.train)
        class_names = list(pack.class_names)
        if cfg.class_names and list(cfg.class_names) != class_names:
            raise DataError(f"data.class_names: {list(cfg.class_names)} differ from the pack's {class_names} "
                            f"({cfg.train})")
        if cfg.train_fraction < 1.0:
            raise DataError(f"data.train_fraction: not available for a pack ({cfg.train}); pack a subset instead")
        val = pack.splits.get("val")
        if cfg.val:  # another pack replaces the pack's own val split (`transferkit evaluate --data`)
            if not packing.is_pack(cfg.val):
                raise DataError(f"data.val: {cfg.train} is a pack, so data.val must be one too "
                                f"(`transferkit data pack {cfg.val} OUT`); received {cfg.val}")
            val_pack = packing.Pack.open(cfg.val)
            if list(val_pack.class_names) != class_names:
                raise DataError(f"{cfg.val}: its classes {list(val_pack.class_names)} differ from "
                                f"{cfg.train}'s {class_names}")
            val = val_pack.splits["train"]
        if val is None:
            raise DataError(f"{cfg.train}: the pack has no val split; pack it with --val or --val-split, "
                            f"or give data.val as another pack")
        train, damaged = pack.splits["train"].verified()
        val, val_damaged = val.verified()
        problems = list(pack.problems) + damaged + val_damaged
        if cfg.on_bad_image == "error" and problems:
            raise DataError.for_bad_inputs(problems, "data.on_bad_image")
        for split, name in ((train, "training"), (val, "validation")):
            if not split.shards:
                raise DataError(f"{cfg.train}: no intact {name} shard: " + "; ".join(
                    f"{p['path']}: {p['reason']}" for p in problems[:3]))
        mode = self.cache_mode(train.count + val.count)
        stream = dict(self.build_preprocessor().resize_options(), batch_size=cfg.batch_size, cache=mode,
                      cache_dir=cfg.cache_dir or paths.home() / "data_cache",
                      skip_errors=cfg.on_bad_image == "skip")
        in_memory: set[int] = set()

        def batches(split, shuffle: bool, photo_crop=None):
            options = dict(stream)
            if mode == "memory":
                # One copy per split in memory: a second pipeline over it (the unshuffled pass of a
                # frozen stage's feature cache) decodes again instead of caching its own.
                options["cache"] = "memory" if id(split) not in in_memory else "none"
                in_memory.add(id(split))
            if photo_crop is not None:
                options["cache"] = "none"
            return streaming.pack_dataset(split, shuffle=shuffle, seed=self.config.training.seed,
                                          random_crop=photo_crop, **options)

        # The report names no files: the records' paths stay in the pack.
        return (batches, train, val, class_names, np.asarray(train.class_counts), val.count,
                problems, [], mode == "none")

    def _task_data(self, batches, train, val, class_names, counts, num_val, problems, examples,
                   streamed: bool, find_dropped=None, val_labels=None, val_records=None) -> TaskData:
        """The TaskData of `batches(split, shuffle)` over the train and val splits: labels, weights, augmentation.

        With `val_labels`, `val`'s batches carry rows in the label slot (the labels are looked up by row);
        without (a pack), rows count the validation stream.
        """
        import tensorflow as tf

        cfg = self.task_config.data
        seed = self.config.training.seed
        num_classes = len(class_names)
        num_train = int(np.sum(counts))
        weights = None
        if cfg.class_weights == "balanced":
            counts = np.asarray(counts, dtype="float64")
            weights = tf.constant(num_train / (num_classes * np.maximum(counts, 1)), tf.float32)

        def one_hot(images, labels):
            return tf.cast(images, tf.float32), tf.one_hot(labels, num_classes)

        def one_hot_weighted(images, labels):  # training batches carry the balanced class weights
            images, targets = one_hot(images, labels)
            return (images, targets) if weights is None else (images, targets, tf.gather(weights, labels))

        def plain(split, fn=one_hot):
            return batches(split, shuffle=False).map(fn, num_parallel_calls=tf.data.AUTOTUNE)

        if val_labels is not None:
            label_of = tf.constant(val_labels)
            val_ds = plain(val, lambda images, rows: one_hot(images, tf.gather(label_of, rows)))
            val_indexed = plain(val, lambda images, rows: (*one_hot(images, tf.gather(label_of, rows)), rows))
        else:
            val_ds = plain(val)
            val_indexed = batches(val, shuffle=False).unbatch().enumerate().map(
                lambda row, element: (*one_hot(*element), row)).batch(cfg.batch_size)

        shuffled = batches(train, shuffle=True).map(one_hot_weighted, num_parallel_calls=tf.data.AUTOTUNE)
        augment = self.task_config.augment
        train_ds = shuffled
        crop = (augment.crop_scale, augment.crop_ratio) if augment.crop_scale is not None else None
        if crop is not None and streamed:  # cut from the decoded photos, before the resize
            train_ds = batches(train, shuffle=True, photo_crop=crop).map(one_hot_weighted,
                                                                         num_parallel_calls=tf.data.AUTOTUNE)
        elif crop is not None:  # the data holds model-size images: cut from those
            train_ds = tf.data.Dataset.zip(train_ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True))
            train_ds = train_ds.map(_cached_crop(crop, cfg.image_size), num_parallel_calls=tf.data.AUTOTUNE)
        if augment.enabled:
            train_ds = train_ds.map(self._augmenter(seed), num_parallel_calls=tf.data.AUTOTUNE)

        info = {
            "class_names": class_names,
            "image_size": list(cfg.image_size),  # also in the preprocessor; kept for readers of the file
            "preprocessor": self.build_preprocessor().get_config(),
            "num_train": num_train,
            "num_val": int(num_val),
            "train_class_counts": [int(c) for c in counts],
        }
        return TaskData(
            train=train_ds.prefetch(tf.data.AUTOTUNE),
            val=val_ds.prefetch(tf.data.AUTOTUNE),
            val_indexed=val_indexed.prefetch(tf.data.AUTOTUNE),
            val_records=val_records,
            train_plain=plain(train, one_hot_weighted),
            info=info,
            train_augmented=augment.enabled,
            train_unaugmented=shuffled.prefetch(tf.data.AUTOTUNE),
            problems=problems,
            steps_per_epoch=math.ceil(num_train / cfg.batch_size),
            examples=examples,
            find_dropped=find_dropped,
        )

    def _augmenter(self, seed: int):
        import keras
        import tensorflow as tf

        aug = self.task_config.augment
        layers = []
        if aug.flip != "none":
            mode = {"both": "horizontal_and_vertical"}.get(aug.flip, aug.flip)
            layers.append(keras.layers.RandomFlip(mode, seed=seed))
        if aug.rotation:
            layers.append(keras.layers.RandomRotation(aug.rotation, fill_mode="reflect", seed=seed))
        if aug.zoom:
            layers.append(keras.layers.RandomZoom(aug.zoom, fill_mode="reflect", seed=seed))
        if aug.translation:
            layers.append(keras.layers.RandomTranslation(aug.translation, aug.translation,
                                                         fill_mode="reflect", seed=seed))
        if aug.brightness:
            layers.append(keras.layers.RandomBrightness(aug.brightness, value_range=(0, 255), seed=seed))
        if aug.contrast:
            layers.append(keras.layers.RandomContrast(aug.contrast, seed=seed))
        pipeline = keras.Sequential(layers, name="augment") if layers else None
        mixup, cutmix = aug.mixup_alpha, aug.cutmix_alpha
        # Built once, outside the tf.data trace (their seed generators hold state).
        mixup_layer = keras.layers.MixUp(alpha=mixup, seed=seed) if mixup > 0 else None
        cutmix_layer = keras.layers.CutMix(factor=cutmix, seed=seed) if cutmix > 0 else None

        def apply(images, labels, *weights):
            images, labels = mix(images, labels)
            return (images, labels, *weights)

        def mix(images, labels):
            if pipeline is not None:
                images = tf.clip_by_value(pipeline(images, training=True), 0.0, 255.0)
            if mixup > 0 and cutmix > 0:
                return tf.cond(tf.random.uniform([]) < 0.5, lambda: _mix(mixup_layer, images, labels),
                               lambda: _mix(cutmix_layer, images, labels))
            if mixup > 0:
                return _mix(mixup_layer, images, labels)
            if cutmix > 0:
                return _mix(cutmix_layer, images, labels)
            return images, labels

        return apply

    # -- evaluation and prediction -------------------------------------------

    def explain_missing(self, info):
        """For the report: why a validation file the stream dropped did not decode."""
        from transferkit.plugins.image_classification.report import decode_error

        max_pixels = self.preprocessor(info).max_pixels
        return lambda path: decode_error(path, max_pixels) or "dropped by the input pipeline while streaming"

    def read_input(self, path, info):
        from transferkit.errors import TransferkitError

        try:
            return self.preprocessor(info).read_file(path)
        except Exception as error:
            raise TransferkitError(f"{path}: unreadable image: {type(error).__name__}: {error}") from None

    # -- serving ---------------------------------------------------------------

    def serving_signatures(self, model, info: dict[str, Any]) -> dict[str, Any]:
        from transferkit.plugins.image_classification.serving import classification_signatures

        return classification_signatures(model, self.preprocessor(info), info["class_names"],
                                         top_k=self.task_config.head.top_k)

    def serving_examples(self, info, count):
        return image_serving_examples(self, info, count)

    def check_serving(self, model, signatures, examples, info):
        return check_image_serving(model, signatures, examples, self.preprocessor(info), float_outputs=("probabilities", "scores"))


def _labels(samples) -> list[str]:
    return [s.label for s in samples]


def _undecodable_finder(paths: list[str], max_pixels: int):
    """For TaskData.find_dropped: the files among `paths` that do not decode, as problems."""
    def find():
        from transferkit.plugins.image_classification.report import undecodable_files

        return undecodable_files(paths, max_pixels)

    return find


def _mix(layer, images, labels):
    mixed = layer({"images": images, "labels": labels}, training=True)
    return mixed["images"], mixed["labels"]


def _mixup(images, labels, alpha: float, seed: int | None = None):
    """Keras' MixUp layer: each image blended with another of the batch, labels by the same weight."""
    import keras

    return _mix(keras.layers.MixUp(alpha=alpha, seed=seed), images, labels)


def _cutmix(images, labels, alpha: float, seed: int | None = None):
    """Keras' CutMix layer: a box pasted from another image of the batch, labels mixed by its area."""
    import keras

    return _mix(keras.layers.CutMix(factor=alpha, seed=seed), images, labels)


def _cached_crop(crop, image_size):
    """A batch map: a random resized crop of each model-size image in (batch, draw), resized back."""
    import tensorflow as tf

    from transferkit.vision.images import random_crop_boxes

    scale, ratio = crop
    height, width = int(image_size[0]), int(image_size[1])

    def apply(batch, draw):
        images, *rest = batch
        count = tf.shape(images)[0]
        boxes = random_crop_boxes(count, tf.stack([draw, tf.constant(1, tf.int64)]), scale, ratio, height / width)
        cropped = tf.image.crop_and_resize(images, boxes, tf.range(count), (height, width))
        return (tf.clip_by_value(tf.round(cropped), 0.0, 255.0), *rest)

    return apply
