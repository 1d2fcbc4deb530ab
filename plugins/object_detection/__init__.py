"""Object detection: VOC, COCO, YOLO or CSV annotations in, a RetinaNet that serves boxes out."""

from transferkit.plugins.object_detection.config import (
    DetectConfig,
    DetectionAugmentConfig,
    DetectionDataConfig,
    DetectionModelConfig,
    ObjectDetectionConfig,
)
from transferkit.plugins.object_detection.task import ObjectDetection

__all__ = ["DetectConfig", "DetectionAugmentConfig", "DetectionDataConfig", "DetectionModelConfig",
           "ObjectDetection", "ObjectDetectionConfig"]
