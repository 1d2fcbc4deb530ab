"""What every task that maps an input to class scores shares: the base task, the head, the loss and metrics,
the evaluation and report, the served outputs and their records.

Image, audio and text classification build on it; a new classification plugin
(a `ClassificationTask` subclass) gets the rest by writing its data and model.
"""

from transferkit.classification.head import HeadConfig
from transferkit.classification.records import ClassifierRecords
from transferkit.classification.task import ClassificationTask

__all__ = ["ClassificationTask", "ClassifierRecords", "HeadConfig"]
