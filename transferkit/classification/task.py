"""`ClassificationTask`: what every task that maps an input to class probabilities shares."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from transferkit.classification.records import ClassifierRecords
from transferkit.task import Task


class ClassificationTask(ClassifierRecords, Task):
    """A `Task` whose model ends in a softmax over `info["class_names"]`.

    It owns the head (`transferkit.classification.head`), the loss and metrics,
    the monitor, the `labels.txt` artifact and the ranking of predictions; a
    subclass says how inputs are read (`datasets`, `predict`), how the backbone
    is wired (`build_model`) and how the report shows its worst examples
    (`evaluation`). The config's `head` section is a `HeadConfig`.

    Example:

    ```python
    @register_task("my_classification")
    class MyClassification(ClassificationTask):
        config_class = MyConfig        # with a `head: HeadConfig` section
        preprocessor_class = MyPreprocessor

        def datasets(self): ...
        def build_model(self, backbone, info, backbone_training=False): ...
    ```
    """

    def classifier_head(self, backbone, info: Mapping[str, Any], feature_dim: int):
        """The head on pooled features; built once per backbone so every stage's model shares it."""
        cached = getattr(self, "_built_head", None)
        if cached is not None and cached[0] is backbone:
            return cached[1]
        head = self.build_head(feature_dim, info)
        self._built_head = (backbone, head)
        return head

    def build_head(self, feature_dim: int, info: Mapping[str, Any]):
        """A new head (`classifier_head` keeps one per backbone): a softmax over the classes by default."""
        from transferkit.classification.head import build_classifier_head

        return build_classifier_head(feature_dim, len(info["class_names"]), self.task_config.head)

    def compile(self, model, optimizer=None):
        import keras

        from transferkit.classification.metrics import keras_metrics

        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=self.task_config.head.label_smoothing),
            metrics=keras_metrics(self.task_config.head.top_k, len(self.info["class_names"])))

    def monitor(self) -> tuple[str, str]:
        return "val_accuracy", "max"

    def artifacts(self, info) -> dict[str, str]:
        return {"labels.txt": "\n".join(info["class_names"]) + "\n"}

    @staticmethod
    def ranked(probabilities: Iterable[np.ndarray], class_names: list[str],
               top_k: int) -> list[list[tuple[str, float]]]:
        """The `top_k` best (label, probability) of each row, best first."""
        k = max(1, min(int(top_k), len(class_names)))
        rows = []
        for row in probabilities:
            row = np.asarray(row)
            order = np.argsort(-row)[:k]
            rows.append([(class_names[i], float(row[i])) for i in order])
        return rows
