"""The object-detection task: RetinaNet, YOLOv8 or a whole transferred YOLOv4-tiny on a backbone's pyramid."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from transferkit.vision import streaming
from transferkit.plugins.object_detection import annotations as annotations_lib
from transferkit.plugins.object_detection import data as data_lib
from transferkit.plugins.object_detection.config import DEFAULT_MAX_BOXES, ObjectDetectionConfig
from transferkit.registry import register_task
from transferkit.splits import SplitSource, read_splits
from transferkit.vision.preprocessor import ImagePreprocessor
from transferkit.task import CacheSplit, Task, TaskData, input_ids

# Evaluation keeps low-scoring boxes, as COCO evaluation expects (100 per image).
EVAL_SCORE_THRESHOLD = 0.01
EVAL_MAX_DETECTIONS = 100


@register_task("object_detection")
class ObjectDetection(Task):
    """Fine-tunes a RetinaNet on a backbone's feature pyramid to find boxes (VOC, COCO, YOLO, CSV).

    The task owns its whole graph: pixels -> the backbone's pyramid levels ->
    the detector head (`model.architecture`: RetinaNet, KerasHub's
    FeaturePyramid and shared box and class heads; YOLOv8, KerasCV's
    path-aggregation FPN and head; or YOLOv4-tiny, whose neck and heads come
    with their COCO weights from the `yolov4-tiny-coco` preset). Anchors,
    targets and decoding live in `retinanet.py`, `yolo_v8.py` and
    `yolo_v4_tiny.py`, NMS in `nms.py`; the exported `serving_default`
    decodes, resizes, runs the model, decodes boxes and applies NMS in the
    graph, and answers in the original image's pixels.

    Example:

    ```python
    from transferkit import load_config
    from transferkit.runner import train

    config = load_config("benchmarks/configs/raccoon.yaml")   # task: object_detection
    run_dir = train(config, "runs/raccoon")
    ```
    """

    config_class = ObjectDetectionConfig
    preprocessor_class = ImagePreprocessor
    summary_figures = ("map50", "map", "map75", "mar100")

    @classmethod
    def validate_config(cls, config) -> None:
        from transferkit.errors import ConfigError

        if config.task_config.model.architecture == "yolov4_tiny" and not config.backbone.preset:
            raise ConfigError("model.architecture: yolov4_tiny takes the whole detector from a YOLOv4-tiny preset; "
                              "expected backbone.preset: yolov4-tiny-coco, received a backbone built from "
                              "backbone.config")

    @classmethod
    def example_config(cls, root):
        from transferkit.plugins.object_detection.testing import make_detection_dataset, tiny_detection_config

        return tiny_detection_config(make_detection_dataset(Path(root) / "shapes", count=16, size=64))

    # -- data ----------------------------------------------------------------

    def build_preprocessor(self) -> ImagePreprocessor:
        """Detection stretches to the model's size (boxes scale back by two factors), bilinear."""
        return ImagePreprocessor(image_size=tuple(self.task_config.data.image_size), resize="stretch",
                                 crop_fraction=1.0, interpolation="bilinear")

    def detector(self, info: Mapping[str, Any] | None = None):
        """The configured architecture (RetinaNet or YOLOv8) for the run's input size and classes."""
        from transferkit.plugins.object_detection.architectures import detector_head

        info = info or self.info
        size = self.preprocessor(info if info.get("preprocessor") else {}).image_size
        return detector_head(self.task_config.model, size, len(info["class_names"]), info.get("detector"))

    def _read(self, source: str, images: str | None, class_names):
        cfg = self.task_config.data
        return annotations_lib.read_annotations(source, cfg.format, images, class_names, cfg.on_bad_annotation)

    def datasets(self) -> TaskData:
        import tensorflow as tf

        from transferkit.plugins.object_detection.architectures import detector_facts

        cfg = self.task_config.data
        seed = self.config.training.seed
        splits = read_splits(
            SplitSource(cfg.train, cfg.val, cfg.val_split, cfg.train_fraction, seed),  # the reader skips or raises
            read=lambda path, names: (self._read(path, cfg.images, cfg.class_names) if names is None
                                      else self._read(path, cfg.val_images, names)),
            class_names=lambda found: list(cfg.class_names) if cfg.class_names else annotations_lib.class_names_of(found),
            strata=lambda found, names: _main_labels(found), min_classes=1)
        train_annotations, val_annotations, class_names, problems = (splits.train, splits.val, splits.class_names,
                                                                     splits.problems)
        most = max(1, max(len(a.labels) for a in [*train_annotations, *val_annotations]))
        max_boxes = min(most, cfg.max_boxes or DEFAULT_MAX_BOXES)
        load = dict(class_names=class_names, image_size=cfg.image_size, max_boxes=max_boxes,
                    on_bad_annotation=cfg.on_bad_annotation)
        mode = streaming.resolve_cache(cfg.cache, len(train_annotations) + len(val_annotations),
                                       streaming.image_bytes(cfg.image_size), cfg.cache_memory_mb)
        reader = data_lib.load_detections if mode == "memory" else data_lib.check_detections
        train = reader(train_annotations, **load)
        val = reader(val_annotations, **load)
        problems += train.problems + val.problems
        info = {"class_names": class_names, "image_size": list(cfg.image_size),
                "preprocessor": self.build_preprocessor().get_config(), "max_boxes": max_boxes, "num_train": len(train), "num_val": len(val),
                "num_train_boxes": int((train.class_ids >= 0).sum()), "num_val_boxes": int((val.class_ids >= 0).sum()),
                "train_class_counts": np.bincount(train.class_ids[train.class_ids >= 0].ravel(),
                                                  minlength=len(class_names)).tolist()}  # boxes per class
        info["detector"] = detector_facts(self.task_config.model, self.config.backbone, class_names)
        detector = self.detector(info)

        def to_model(images, boxes, class_ids):
            return tf.cast(images, tf.float32), detector.targets(boxes, class_ids)

        def batched(loaded, shuffle: bool, augment=None):
            if loaded.images is None:  # streamed: the shared reader's batches carry each image's row
                ds = self._streamed_images(loaded, shuffle, mode).map(
                    _with_boxes(loaded), num_parallel_calls=tf.data.AUTOTUNE)
            else:
                ds = tf.data.Dataset.from_tensor_slices((loaded.images, loaded.boxes, loaded.class_ids))
                if shuffle:
                    ds = ds.shuffle(len(loaded), seed=seed, reshuffle_each_iteration=True)
                ds = ds.batch(cfg.batch_size)
            if augment is not None:
                ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            return ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE)

        def indexed(loaded):
            """Validation batches with each image's row: (pixels, targets, rows), for the evaluation."""
            if loaded.images is None:
                ds = self._streamed_images(loaded, False, mode).map(
                    lambda images, rows: (*_with_boxes(loaded)(images, rows), rows), num_parallel_calls=tf.data.AUTOTUNE)
            else:
                ds = tf.data.Dataset.from_tensor_slices((loaded.images, loaded.boxes, loaded.class_ids,
                                                         tf.range(len(loaded)))).batch(cfg.batch_size)
            return ds.map(lambda images, boxes, class_ids, rows: (*to_model(images, boxes, class_ids), rows),
                          num_parallel_calls=tf.data.AUTOTUNE)

        augment = self.task_config.augment
        unaugmented = batched(train, shuffle=True)
        train_ds = batched(train, shuffle=True, augment=self._augmenter(seed)) if augment.enabled else unaugmented
        return TaskData(
            train=train_ds.prefetch(tf.data.AUTOTUNE),
            val=batched(val, shuffle=False).prefetch(tf.data.AUTOTUNE),
            val_indexed=indexed(val).prefetch(tf.data.AUTOTUNE),
            val_records=val,
            train_plain=batched(train, shuffle=False),
            info=info,
            train_augmented=augment.enabled,
            train_unaugmented=unaugmented.prefetch(tf.data.AUTOTUNE),
            problems=problems,
            steps_per_epoch=math.ceil(len(train) / cfg.batch_size),
            examples=list(val.paths),
            input_ids={"train": input_ids(train.paths), "val": input_ids(val.paths)},
        )

    def _streamed_images(self, loaded, shuffle: bool, mode: str):
        """Batches of (uint8 images, rows) of `loaded`'s files from the shared streaming reader."""
        from transferkit import paths

        cfg = self.task_config.data
        return streaming.image_dataset(loaded.files, cfg.image_size, "stretch", cfg.batch_size, shuffle=shuffle,
                                       seed=self.config.training.seed, cache=mode,
                                       cache_dir=cfg.cache_dir or paths.home() / "data_cache",
                                       skip_errors=cfg.on_bad_annotation == "skip")

    def _augmenter(self, seed: int):
        """Keras' box-aware augmentation layers on (images, boxes, class ids) batches."""
        import keras
        import tensorflow as tf

        aug = self.task_config.augment
        box_layers = []
        if aug.flip == "horizontal":
            box_layers.append(keras.layers.RandomFlip("horizontal", bounding_box_format="xyxy", seed=seed))
        if aug.zoom:
            box_layers.append(keras.layers.RandomZoom(aug.zoom, bounding_box_format="xyxy", fill_mode="constant",
                                                      seed=seed))
        if aug.translation:
            box_layers.append(keras.layers.RandomTranslation(aug.translation, aug.translation, fill_mode="constant",
                                                             bounding_box_format="xyxy", seed=seed))
        colour = []
        if aug.brightness:
            colour.append(keras.layers.RandomBrightness(aug.brightness, value_range=(0, 255), seed=seed))
        if aug.contrast:
            colour.append(keras.layers.RandomContrast(aug.contrast, seed=seed))

        def apply(images, boxes, class_ids):
            images = tf.cast(images, tf.float32)
            data = {"images": images, "bounding_boxes": {"boxes": boxes, "labels": tf.cast(class_ids, tf.float32)}}
            for layer in box_layers:
                data = layer(data, training=True)
            images = data["images"]
            for layer in colour:
                images = layer(images, training=True)
            boxes = data["bounding_boxes"]["boxes"]
            class_ids = tf.cast(tf.round(data["bounding_boxes"]["labels"]), tf.int32)
            # Padding rows, and boxes pushed out of the image, become padding again.
            size = boxes[..., 2:] - boxes[..., :2]
            valid = (class_ids >= 0) & (size[..., 0] >= 1.0) & (size[..., 1] >= 1.0)
            boxes = tf.where(valid[..., None], boxes, tf.constant(float(data_lib.PAD)))
            class_ids = tf.where(valid, class_ids, data_lib.PAD)
            return tf.clip_by_value(images, 0.0, 255.0), boxes, class_ids

        return apply

    # -- model ---------------------------------------------------------------

    def _levels(self, backbone, info) -> list[str]:
        model = self.task_config.model
        available = sorted(int(name[1:]) for name in backbone.pyramid_outputs if name[1:].isdigit())
        levels = self.detector(info).levels(available)
        if not levels or any(level not in backbone.pyramid_outputs for level in levels):
            from transferkit.errors import ConfigError

            raise ConfigError(
                f"model.min_level: the backbone {backbone.architecture} has pyramid levels "
                f"{['P%d' % a for a in available] or 'none'}; the detector needs P{model.min_level} and up to "
                f"P5 (or its top level)")
        return levels

    def _head(self, backbone, info):
        """The FPN and box/class heads; built once per backbone so every stage's model shares them."""
        cached = getattr(self, "_built_head", None)
        if cached is not None and cached[0] is backbone:
            return cached[1]
        height, width = self.preprocessor(info).image_size
        pyramid = backbone.pyramid_model(self._levels(backbone, info))
        shapes = {level: (height // 2 ** int(level[1:]), width // 2 ** int(level[1:]), int(out.shape[-1]))
                  for level, out in pyramid.output.items()}
        head = self.detector(info).head(shapes)
        self._built_head = (backbone, head)
        return head

    def _pyramid_features(self, backbone, info, training):
        import keras

        inputs = keras.Input(shape=(*self.preprocessor(info).image_size, 3), name="pixels")
        pyramid = backbone.pyramid_model(self._levels(backbone, info))
        from transferkit.models.backbones import InferenceMode

        if training is False:  # fit's training flag would otherwise reach the backbone's stochastic depth
            pyramid = InferenceMode(pyramid, name="backbone_inference")
        return inputs, pyramid(backbone.normalization(inputs), training=training)

    def build_model(self, backbone, info, backbone_training: bool = False):
        """pixels (0..255) -> normalisation -> backbone pyramid levels -> FPN -> box and class heads."""
        import keras

        head = self._head(backbone, info)
        inputs, features = self._pyramid_features(backbone, info, None if backbone_training else False)
        return keras.Model(inputs, head(features), name="detector")

    def register_keras_objects(self) -> None:
        import transferkit.plugins.object_detection.retinanet  # noqa: F401  (registers the heads and losses)
        import transferkit.plugins.object_detection.yolo_v8  # noqa: F401

        if self.task_config.model.architecture == "yolov4_tiny":
            import transferkit.models.families.yolov4_tiny.model  # noqa: F401  (its backbone's channel-group layer)
            import transferkit.plugins.object_detection.yolo_v4_tiny  # noqa: F401

    def cache_split(self, model, backbone):
        import keras

        if not backbone.is_frozen():
            return None  # only a wholly frozen backbone is cached
        inputs, features = self._pyramid_features(backbone, self.info, False)
        return CacheSplit(extractor=keras.Model(inputs, features, name="pyramid_extractor"),
                          trainable=model.get_layer("detection_head"))

    def compile(self, model, optimizer=None):
        model.compile(optimizer=optimizer, loss=self.detector().loss())

    # -- detections ----------------------------------------------------------

    def detect_pixels(self, model, pixels, info, score_threshold=None, iou_threshold=None, max_detections=None):
        """Model-size pixels (N, H, W, 3) -> detections in model pixels (numpy dict)."""
        from transferkit.models.inference import traced_forward

        detect = self.task_config.detect
        raw = traced_forward(model)(pixels)
        out = self.detector(info).decode(raw,
                                score_threshold=detect.score_threshold if score_threshold is None else score_threshold,
                                iou_threshold=detect.iou_threshold if iou_threshold is None else iou_threshold,
                                max_detections=max_detections or detect.max_detections)
        return {key: np.asarray(value) for key, value in out.items()}

    def _records(self, out, index, scale, class_names):
        from transferkit.plugins.object_detection.records import Detection

        return [Detection(label=class_names[int(out["class_ids"][index, j])], class_id=int(out["class_ids"][index, j]),
                          score=float(out["scores"][index, j]),
                          box=tuple(float(v) for v in out["boxes"][index, j] * scale))
                for j in range(int(out["num_detections"][index]))]

    def score(self) -> tuple[str, str]:
        return "map", "max"  # COCO mAP@[.5:.95] on the validation set, from the evaluation report

    # -- evaluation and prediction -------------------------------------------

    def evaluation(self, info, records):
        from transferkit.plugins.object_detection.evaluation import DetectionEvaluation

        detect = self.task_config.detect
        return DetectionEvaluation(self.detector(info), records, info, score_threshold=EVAL_SCORE_THRESHOLD,
                                   iou_threshold=detect.iou_threshold, max_detections=EVAL_MAX_DETECTIONS,
                                   sheet_threshold=detect.score_threshold)

    def edge_model(self, model, info):
        """Pixels of one image -> boxes (xyxy, model-input pixels), scores, class ids and their count, with
        per-class NMS in LiteRT builtin ops; int8 files keep decoding and NMS in float."""
        import tensorflow as tf

        from transferkit.edge import PIXEL_INPUT_NOTES, EdgeModel
        from transferkit.plugins.object_detection.evaluation import DetectionScore
        from transferkit.plugins.object_detection.nms import select_detections_one_image

        detector = self.detector(info)
        height, width = self.preprocessor(info).image_size

        def detect(pixels):
            raw = model(pixels, training=False)
            return detector.decode(raw, score_threshold=EVAL_SCORE_THRESHOLD, iou_threshold=self.task_config.detect
                                   .iou_threshold, max_detections=EVAL_MAX_DETECTIONS,
                                   select=select_detections_one_image)

        spec = tf.TensorSpec([1, int(height), int(width), 3], tf.float32, name="pixels")
        # Quantised whole, box decoding shares one int8 scale between anchors (hundreds of pixels) and
        # deltas (about 1), and every box collapses to one point (mAP 0 on raccoon): only the network is int8.
        return EdgeModel(inputs={"pixels": spec}, function=detect,
                         score=lambda data: DetectionScore(data, info), one_example=True, int8_integer_scope=model.name,
                         int8_float_layers=getattr(detector, "int8_float_layers", ()),
                         output_steps=("run one image at a time; read boxes (xyxy, in model-input pixels: scale by "
                                       "the original size over image_size), scores, class_ids (labels order) and "
                                       "num_detections (rows past it are padding)",),
                         input_notes={"pixels": PIXEL_INPUT_NOTES})

    @classmethod
    def decode_edge(cls, outputs, labels: list[str], top_k: int = 3):
        """An exported detector's outputs -> [Detection, ...] per image, boxes in model-input pixels."""
        from transferkit.plugins.object_detection.records import Detection

        counts = np.asarray(outputs["num_detections"]).reshape(-1)
        return [[Detection(label=labels[c] if 0 <= (c := int(outputs["class_ids"][i][j])) < len(labels)
                           else f"class {c}", class_id=c, score=float(outputs["scores"][i][j]),
                           box=tuple(round(float(v), 1) for v in outputs["boxes"][i][j]))
                 for j in range(int(count))] for i, count in enumerate(counts)]

    def predict(self, model, paths, info, save_dir=None, score_threshold: float | None = None, **options):
        """Yields (path, [Detection, ...]) with boxes in the image's own pixels; `save_dir` gets annotated copies."""
        from transferkit.errors import TransferkitError
        from transferkit.vision.images import read_image
        from transferkit.plugins.object_detection import report

        from transferkit.fileio import unique_names

        preprocessor = self.preprocessor(info)
        height, width = preprocessor.image_size
        for path, saved_name in zip(paths, unique_names(paths, ".png")):
            try:
                original = read_image(path, preprocessor.max_pixels)
            except Exception as error:
                raise TransferkitError(f"{path}: unreadable image: {type(error).__name__}: {error}") from None
            pixels = preprocessor.resize_pixels(original).numpy()[None]
            out = self.detect_pixels(model, pixels, info, score_threshold=score_threshold)
            scale = np.array([original.shape[1] / width, original.shape[0] / height] * 2, np.float32)
            found = self._records(out, 0, scale, info["class_names"])
            if save_dir is not None:
                report.save_annotated(original, found, Path(save_dir) / saved_name)
            yield path, found

    output_keys = frozenset({"boxes", "scores", "class_ids", "labels", "num_detections"})

    @classmethod
    def decode(cls, outputs, top_k=None):
        """[Detection, ...] per image, from the served boxes, scores, classes and counts."""
        from transferkit.plugins.object_detection.records import detections_from_outputs

        return detections_from_outputs(outputs)

    @classmethod
    def describe(cls, record) -> str:
        if not record:
            return "  (no detections)"
        return "\n".join(f"  {detection}" for detection in record)

    def artifacts(self, info) -> dict[str, str]:
        return {"labels.txt": "\n".join(info["class_names"]) + "\n"}

    # -- serving ---------------------------------------------------------------

    def serving_signatures(self, model, info):
        from transferkit.plugins.object_detection.serving import detection_signatures

        return detection_signatures(model, self.detector(info), self.preprocessor(info), info, self.task_config.detect)

    def serving_examples(self, info, count):
        from transferkit.serving.examples import encoded_image_examples

        return [{"images": image} for image in encoded_image_examples(info, count, self.preprocessor(info).image_size)]

    def check_serving(self, model, signatures, examples, info):
        from transferkit.plugins.object_detection.serving import check_detection_parity

        return check_detection_parity(self, model, signatures, examples, info)


def _with_boxes(loaded):
    """A batch map: (images, rows) -> (images, boxes, class ids) of those rows."""
    import tensorflow as tf

    boxes, class_ids = tf.constant(loaded.boxes), tf.constant(loaded.class_ids)

    def add(images, rows):
        return images, tf.gather(boxes, rows), tf.gather(class_ids, rows)

    return add


def _main_labels(annotations) -> list:
    """Each image's most frequent box label ("" without boxes): the stratum of its splits and subsets."""
    return [Counter(a.labels).most_common(1)[0][0] if len(a.labels) else "" for a in annotations]
