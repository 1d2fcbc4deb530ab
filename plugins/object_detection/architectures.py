"""The detector heads the task can put on a backbone pyramid, behind one small interface.

Each architecture says which pyramid levels it reads, builds its head (a
functional model from those levels to its raw outputs), turns padded
ground-truth boxes into the targets its loss reads (in `tf.data`, so they
can be cached), gives that loss, and decodes raw outputs into detections
with NMS in core TensorFlow ops. The task, its serving graph and its parity
check speak only this interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def padded_ground_truth(boxes, class_ids) -> dict[str, Any]:
    """Targets of a loss that assigns boxes itself: (B, M, 5) xyxy boxes and class ids, padded with -1."""
    import tensorflow as tf

    return {"predictions": tf.concat([boxes, tf.cast(class_ids, tf.float32)[..., None]], axis=-1)}


class RetinaNetHead:
    """RetinaNet (KerasHub's FeaturePyramid and PredictionHeads, anchors and label encoder)."""

    @classmethod
    def facts(cls, model_config, backbone_config, class_names) -> dict:
        """What the architecture needs recorded in the run (info.json) to rebuild and decode; none here."""
        return {}

    def __init__(self, model_config, image_size, num_classes: int, facts: Mapping | None = None):
        from transferkit.plugins.object_detection.retinanet import AnchorSpec

        self.config = model_config
        self.num_classes = num_classes
        self.anchors = AnchorSpec(image_size=tuple(int(s) for s in image_size), min_level=model_config.min_level,
                                  max_level=model_config.max_level, num_scales=model_config.anchor_scales,
                                  aspect_ratios=tuple(model_config.aspect_ratios),
                                  anchor_size=model_config.anchor_size)

    def levels(self, available: list[int]) -> list[str]:
        top = min(self.config.max_level, max(available, default=0))
        return [f"P{level}" for level in range(self.config.min_level, top + 1)]

    def head(self, pyramid_shapes: Mapping[str, tuple]):
        from transferkit.plugins.object_detection.retinanet import detection_head

        return detection_head(dict(pyramid_shapes), num_classes=self.num_classes, min_level=self.config.min_level,
                              max_level=self.config.max_level, fpn_channels=self.config.fpn_channels,
                              head_convs=self.config.head_convs,
                              num_anchors=self.anchors.num_anchors_per_location, name="detection_head")

    def targets(self, boxes, class_ids) -> dict[str, Any]:
        from transferkit.plugins.object_detection.retinanet import encode_targets

        return encode_targets(self.anchors, boxes, class_ids)

    def loss(self):
        from transferkit.plugins.object_detection.retinanet import detection_losses

        return detection_losses(self.config.box_loss_weight)

    def decode(self, raw, score_threshold, iou_threshold, max_detections: int, select=None) -> dict:
        from transferkit.plugins.object_detection.retinanet import decode_detections

        return decode_detections(self.anchors, raw["box_deltas"], raw["class_logits"], score_threshold=score_threshold,
                                 iou_threshold=iou_threshold, max_detections=max_detections, select=select)


class YoloV8Head:
    """YOLOv8 (KerasCV's path-aggregation FPN, head and task-aligned assigner) on P3-P5."""

    facts = RetinaNetHead.facts

    def __init__(self, model_config, image_size, num_classes: int, facts: Mapping | None = None):
        from transferkit.plugins.object_detection.yolo_v8 import AnchorPoints

        self.config = model_config
        self.num_classes = num_classes
        self.image_size = tuple(int(s) for s in image_size)
        self.points = AnchorPoints(self.image_size)

    def levels(self, available: list[int]) -> list[str]:
        return ["P3", "P4", "P5"]

    def head(self, pyramid_shapes: Mapping[str, tuple]):
        from transferkit.plugins.object_detection.yolo_v8 import yolo_v8_head

        return yolo_v8_head(dict(pyramid_shapes), self.num_classes, neck_channels=self.config.fpn_channels,
                            fpn_depth=max(1, self.config.head_convs - 1))

    def targets(self, boxes, class_ids) -> dict[str, Any]:
        # The assigner needs the predictions: targets stay the padded boxes and class ids.
        return padded_ground_truth(boxes, class_ids)

    def loss(self):
        from transferkit.plugins.object_detection.yolo_v8 import YoloV8Loss

        return {"predictions": YoloV8Loss(self.image_size, self.num_classes,
                                          box_weight=7.5 * self.config.box_loss_weight)}

    def decode(self, raw, score_threshold, iou_threshold, max_detections: int, select=None) -> dict:
        from transferkit.plugins.object_detection.yolo_v8 import decode_detections

        return decode_detections(self.points, raw["predictions"], score_threshold=score_threshold,
                                 iou_threshold=iou_threshold, max_detections=max_detections, select=select)


DEFAULT_ASSIGN_THRESHOLD = 0.213  # yolov4.cfg's iou_thresh


class YoloV4TinyHead:
    """YOLOv4-tiny, the whole COCO detector from the preset (neck and heads too), with new class rows."""

    @classmethod
    def facts(cls, model_config, backbone_config, class_names) -> dict:
        """The preset's cfg, anchors and thresholds, and where each class's rows start, checked against
        the preset: recorded in the run so that decoding never needs the preset again."""
        from transferkit.errors import ConfigError
        from transferkit.models import presets
        from transferkit.models.families import preset_facts

        spec = backbone_config.preset
        folder = Path(presets.resolve_preset(spec)) if spec else None
        cfg_name = preset_facts(folder).get("cfg") if folder and folder.is_dir() else None
        # A bare file name inside the preset: transferkit.json never points the reader elsewhere.
        if not isinstance(cfg_name, str) or Path(cfg_name).name != cfg_name or not (folder / cfg_name).is_file():
            raise ConfigError(f"model.architecture: yolov4_tiny takes the whole detector from a YOLOv4-tiny preset; "
                              f"expected backbone.preset: yolov4-tiny-coco (or such a folder). Received: "
                              f"backbone.preset={spec!r}")
        from transferkit.models.families.yolov4_tiny.model import parse_cfg, yolo_scales

        from transferkit.models.families.yolov4_tiny.model import MAX_TEXT_BYTES

        texts = {}
        for name in (cfg_name, "class_names.txt"):
            path = folder / name
            size = path.stat().st_size if path.is_file() else -1
            if not 0 < size <= MAX_TEXT_BYTES:  # checked before anything is read
                raise ConfigError(f"{path}: {'missing' if size < 0 else f'{size} bytes'}; a YOLOv4-tiny preset's "
                                  f"{name} is a text file of 1 to {MAX_TEXT_BYTES} bytes")
            texts[name] = path.read_text(encoding="utf-8", errors="replace")
        cfg_text = texts[cfg_name]
        source_names = [n for n in texts["class_names.txt"].split("\n") if n]
        init_from = dict(model_config.init_from or {})
        unknown = sorted(set(init_from) - set(class_names))
        if unknown:
            raise ConfigError(f"model.init_from: {unknown} are not classes of this data; its classes are "
                              f"{list(class_names)}")
        missing = sorted(v for v in init_from.values() if v not in source_names)
        if missing:
            import difflib

            close = {v: difflib.get_close_matches(v, source_names, n=2) for v in missing}
            raise ConfigError(f"model.init_from: {missing} are not classes of {spec} (closest: {close}); "
                              f"its {len(source_names)} classes are listed in {folder / 'class_names.txt'}")
        yolo = [options for kind, options in parse_cfg(cfg_text) if kind == "yolo"][0]
        scales = [{"name": s.name, "stride": s.stride, "anchors": [list(a) for a in s.anchors],
                   "scale_x_y": s.scale_x_y} for s in yolo_scales(cfg_text).values()]
        return {"preset": str(folder), "cfg": cfg_text, "scales": scales, "source_classes": len(source_names),
                "class_rows": [source_names.index(init_from[n]) if n in init_from else None for n in class_names],
                "transfer_weights": bool(backbone_config.load_weights),  # False: compare's scratch recipe
                "ignore_threshold": float(yolo.get("ignore_thresh", 0.7)),
                # YOLOv4's iou_thresh (the tiny cfg leaves it out, which would mean one anchor per box): more
                # positives per box, which measured better on raccoon (test mAP@0.5 0.907 against 0.862).
                "assign_threshold": float(yolo.get("iou_thresh", DEFAULT_ASSIGN_THRESHOLD))}

    def __init__(self, model_config, image_size, num_classes: int, facts: Mapping | None = None):
        from transferkit.plugins.object_detection.yolo_v4_tiny import YoloGrid

        if not facts or "scales" not in facts:
            raise ValueError("YoloV4TinyHead: needs the run's detector facts (YoloV4TinyHead.facts)")
        self.config = model_config
        self.num_classes = num_classes
        self.facts = dict(facts)
        self.image_size = tuple(int(s) for s in image_size)
        self.grid = YoloGrid(self.image_size, tuple(self.facts["scales"]))

    # In int8 files these stay float: each output conv's one tensor holds box offsets (about 0) and
    # objectness and class logits (down to about -10); quantised whole, mAP@0.5 fell 10 points on raccoon.
    int8_float_layers = ("head_p5_output", "head_p4_output", "predictions_p5", "predictions_p4", "predictions")

    def levels(self, available: list[int]) -> list[str]:
        return ["P4", "P5"]

    def head(self, pyramid_shapes: Mapping[str, tuple]):
        import keras

        from transferkit.models.families.yolov4_tiny.model import transfer_detector_weights
        from transferkit.plugins.object_detection.yolo_v4_tiny import yolo_v4_tiny_head

        head = yolo_v4_tiny_head(self.facts["cfg"], dict(pyramid_shapes), self.num_classes)
        if not self.facts.get("transfer_weights", True):
            return head
        source = keras.saving.load_model(Path(self.facts["preset"]) / "model.keras", compile=False)
        transfer_detector_weights(source, head, self.facts["class_rows"], self.facts["source_classes"])
        return head

    def targets(self, boxes, class_ids) -> dict[str, Any]:
        return padded_ground_truth(boxes, class_ids)  # assigned inside the loss, as YOLOv8's

    def loss(self):
        from transferkit.plugins.object_detection.yolo_v4_tiny import YoloV4TinyLoss

        return {"predictions": YoloV4TinyLoss(self.image_size, self.facts["scales"], self.num_classes,
                                              ignore_threshold=self.facts["ignore_threshold"],
                                              assign_threshold=self.facts["assign_threshold"],
                                              box_weight=0.05 * self.config.box_loss_weight)}

    def decode(self, raw, score_threshold, iou_threshold, max_detections: int, select=None) -> dict:
        from transferkit.plugins.object_detection.yolo_v4_tiny import decode_detections

        return decode_detections(self.grid, raw["predictions"], score_threshold=score_threshold,
                                 iou_threshold=iou_threshold, max_detections=max_detections, select=select)


ARCHITECTURES = {"retinanet": RetinaNetHead, "yolo_v8": YoloV8Head, "yolov4_tiny": YoloV4TinyHead}


def detector_facts(model_config, backbone_config, class_names) -> dict:
    """The configured architecture's facts for the run's info (see `YoloV4TinyHead.facts`)."""
    return ARCHITECTURES[model_config.architecture].facts(model_config, backbone_config, class_names)


def detector_head(model_config, image_size, num_classes: int, facts: Mapping | None = None):
    return ARCHITECTURES[model_config.architecture](model_config, image_size, num_classes, facts)
