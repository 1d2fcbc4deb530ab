"""Seeded, stratified subsets of a training set (`data.train_fraction`, learning curves in `compare`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np

from transferkit.config import check


def stratified_subset(labels: Sequence[Hashable], fraction: float, seed: int) -> list[int]:
    """Indices (ascending) of a seeded `fraction` of the items, the same share of every label.

    Each label keeps at least one item, so a small fraction never drops a
    class. Different seeds draw different subsets; the same seed the same one.

    Example:

    ```python
    stratified_subset(["a", "a", "a", "a", "b", "b"], 0.5, seed=0)  # two a's, one b
    ```
    """
    check(0.0 < fraction <= 1.0, "data.train_fraction", fraction, "a number in (0, 1]")
    if fraction == 1.0:
        return list(range(len(labels)))
    by_label: dict[Hashable, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(by_label, key=str):
        indices = by_label[label]
        count = max(1, int(round(len(indices) * fraction)))
        chosen.extend(int(i) for i in rng.permutation(indices)[:count])
    return sorted(chosen)


# The subset's random stream is its own: changing the fraction never changes the validation split.
SUBSET_SEED_OFFSET = 7919
