"""Report figures of tasks whose inputs are images (photos, spectrograms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferkit.reporting import pyplot


def contact_sheet(panels: list[tuple[np.ndarray, str]], title: str, path: Path) -> None:
    """Images in a grid of four columns, each with its caption (`panels`: (image, caption)), as one PNG."""
    plt = pyplot()
    cols = 4
    rows = max(1, int(np.ceil(len(panels) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, caption) in zip(axes.ravel(), panels):
        ax.imshow(image)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def record_name(records, row: int) -> str:
    """What `records[row]` names (a file), shortened for a caption line; empty without records."""
    return "" if records is None else f"\n{Path(str(records[row])).name[:24]}"


def plot_worst(worst: list, class_names: list[str], records, path: Path) -> None:
    """Contact sheet of `worst` ((row, true class, probabilities, image) per example, worst first).

    `records[row]` names the example (its file) when the validation data has names.
    """
    panels = []
    for row, true, probabilities, image in worst:
        predicted = int(np.argmax(probabilities))
        caption = f"true {class_names[true]} ({probabilities[true]:.2f})\npred {class_names[predicted]}"
        panels.append((image, caption + record_name(records, row)))
    contact_sheet(panels, "worst-classified validation images", path)
