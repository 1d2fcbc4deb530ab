"""The detector heads the task can put on a backbone pyramid, behind one small interface.

Each architecture says which pyramid levels it reads, builds its head (a
functional model from those levels to its raw outputs), turns padded
ground-truth boxes into the targets its loss reads (in `tf.data`, so they
can be cached), gives that loss, and decodes raw outputs into detections
with NMS in core TensorFlow ops. The task, its serving graph and its parity
check speak only this interface.
"""

from __future__ import annotations

from typing import Any, Mapping


class RetinaNetHead:
    """RetinaNet (KerasHub's FeaturePyramid and PredictionHeads, anchors and label encoder)."""

    def __init__(self, model_config, image_size, num_classes: int):
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

    def __init__(self, model_config, image_size, num_classes: int):
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
        import tensorflow as tf

        # The assigner needs the predictions: targets stay the padded boxes and class ids.
        return {"predictions": tf.concat([boxes, tf.cast(class_ids, tf.float32)[..., None]], axis=-1)}

    def loss(self):
        from transferkit.plugins.object_detection.yolo_v8 import YoloV8Loss

        return {"predictions": YoloV8Loss(self.image_size, self.num_classes,
                                          box_weight=7.5 * self.config.box_loss_weight)}

    def decode(self, raw, score_threshold, iou_threshold, max_detections: int, select=None) -> dict:
        from transferkit.plugins.object_detection.yolo_v8 import decode_detections

        return decode_detections(self.points, raw["predictions"], score_threshold=score_threshold,
                                 iou_threshold=iou_threshold, max_detections=max_detections, select=select)


ARCHITECTURES = {"retinanet": RetinaNetHead, "yolo_v8": YoloV8Head}


def detector_head(model_config, image_size, num_classes: int):
    return ARCHITECTURES[model_config.architecture](model_config, image_size, num_classes)
