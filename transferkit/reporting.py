"""Report figures every task shares: the training curves of a run's history.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict[str, Any]], path: Path, metrics: Sequence[str] = ("loss",)) -> None:
    """One panel per metric (training and validation), with the stage changes marked."""
    plt = pyplot()
    metrics = [m for m in metrics if any(m in row or f"val_{m}" in row for row in history)] or ["loss"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    epochs = [row["global_epoch"] for row in history]
    boundaries = [row["global_epoch"] - 0.5 for a, row in zip(history, history[1:]) if row["stage"] != a["stage"]]
    for ax, metric in zip(axes[0], metrics):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--o")):
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=key)
        for x in boundaries:
            ax.axvline(x, color="gray", linewidth=0.8)
        ax.set_xlabel("epoch (vertical lines: stage changes)")
        ax.set_title(metric)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
