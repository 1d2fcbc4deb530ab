"""Multi-label image classification: every label that applies to an image, from a CSV or label files."""

from transferkit.plugins.multilabel_classification.config import (
    MultiLabelAugmentConfig,
    MultiLabelConfig,
    MultiLabelDataConfig,
    MultiLabelHeadConfig,
)
from transferkit.plugins.multilabel_classification.task import MultiLabelClassification

__all__ = ["MultiLabelAugmentConfig", "MultiLabelClassification", "MultiLabelConfig", "MultiLabelDataConfig",
           "MultiLabelHeadConfig"]
