"""Report figures of tasks whose inputs are images (photos, spectrograms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferkit.reporting import pyplot


def plot_worst(worst: list, class_names: list[str], records, path: Path) -> None:
    """Contact sheet of `worst` ((row, true class, probabilities, image) per example, worst first).

    `records[row]` names the example (its file) when the validation data has names.
    """
    plt = pyplot()
    cols = 4
    rows = max(1, int(np.ceil(len(worst) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (row, true, probabilities, image) in zip(axes.ravel(), worst):
        ax.imshow(image)
        predicted = int(np.argmax(probabilities))
        title = f"true {class_names[true]} ({probabilities[true]:.2f})\npred {class_names[predicted]}"
        if records is not None:
            title += f"\n{Path(str(records[row])).name[:24]}"
        ax.set_title(title, fontsize=7)
    fig.suptitle("worst-classified validation images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
