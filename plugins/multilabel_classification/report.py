"""The multi-label report's contact sheet: the validation images with the most wrong labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferkit.reporting import pyplot


def _names(flags, class_names) -> str:
    chosen = [name for name, flag in zip(class_names, flags) if flag]
    return ", ".join(chosen)[:30] or "(none)"


def plot_worst_labelled(worst: list, class_names: list[str], thresholds: np.ndarray, records, path: Path) -> None:
    """`worst`: (row, true multi-hot, probabilities, image) per example, worst first."""
    plt = pyplot()
    cols = 4
    rows = max(1, int(np.ceil(len(worst) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (row, truth, probabilities, image) in zip(axes.ravel(), worst):
        ax.imshow(image)
        title = f"true {_names(truth > 0.5, class_names)}\npred {_names(probabilities >= thresholds, class_names)}"
        if records is not None:
            title += f"\n{Path(str(records[row])).name[:24]}"
        ax.set_title(title, fontsize=7)
    fig.suptitle("validation images with the most wrong labels")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
