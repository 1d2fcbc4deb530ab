"""The text classifier's own report page: the worst-classified texts (metrics are `ClassificationEvaluation`'s)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from transferkit.fileio import atomic_write_text


def write_worst_texts(path: Path, worst: list, texts: Sequence[str] | None, class_names: list[str],
                      chars: int = 600) -> None:
    """A readable Markdown file of `worst` ((row, true class, probabilities, _) per text, worst first).

    Only the texts shown are read: `texts` may read them from their files (`data.TextColumn`).
    """
    if texts is None:
        return
    lines = ["# Worst-classified validation texts", "",
             f"The {len(worst)} texts whose true class got the lowest probability.", ""]
    for rank, (row, true, probabilities, _) in enumerate(worst, start=1):
        predicted = int(np.argmax(probabilities))
        excerpt = " ".join(texts[row].split())
        if len(excerpt) > chars:
            excerpt = excerpt[:chars] + " ..."
        lines += [f"## {rank}. true **{class_names[true]}** ({probabilities[true]:.3f}), "
                  f"predicted **{class_names[predicted]}** ({probabilities[predicted]:.3f})", "",
                  textwrap.fill(excerpt, width=100), ""]
    atomic_write_text(path, "\n".join(lines))
