"""The multi-label report's contact sheet: the validation images with the most wrong labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferkit.vision.report import contact_sheet, record_name


def _names(flags, class_names) -> str:
    chosen = [name for name, flag in zip(class_names, flags) if flag]
    return ", ".join(chosen)[:30] or "(none)"


def plot_worst_labelled(worst: list, class_names: list[str], thresholds: np.ndarray, records, path: Path) -> None:
    """`worst`: (row, true multi-hot, probabilities, image) per example, worst first."""
    panels = [(image, f"true {_names(truth > 0.5, class_names)}\npred {_names(probabilities >= thresholds, class_names)}"
               + record_name(records, row)) for row, truth, probabilities, image in worst]
    contact_sheet(panels, "validation images with the most wrong labels", path)
