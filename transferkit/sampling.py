"""Seeded, stratified subsets of a training set (`data.train_fraction`, learning curves in `compare`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np

from transferkit.config import check

T = TypeVar("T")


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


def split_validation(labels: Sequence[Hashable], held_out: int | float, seed: int,
                     field: str = "data.val_split") -> tuple[list[int], list[int]]:
    """(train, validation) indices, ascending: a seeded, stratified hold-out of `held_out` items (a count) or
    share (a fraction in (0, 1)). Every task's validation split comes from here.

    scikit-learn's `train_test_split(stratify=labels)` draws it; where a class is too small to stratify
    (one item, or fewer validation items than classes) each class gives its rounded share instead, and
    at least one item is held out. Labels of None items (an image without boxes) form their own stratum.

    Example:

    ```python
    train, val = split_validation(["a"] * 8 + ["b"] * 4, 0.25, seed=0)   # two a's and one b held out
    ```
    """
    total = len(labels)
    if isinstance(held_out, (int, np.integer)) and not isinstance(held_out, bool):
        check(0 < held_out < total, field, held_out, f"a count in [1, {total - 1}] (the examples available)")
        count = int(held_out)
    else:
        check(0.0 < float(held_out) < 1.0, field, held_out, "a number in (0, 1)")
        if total < 2:
            from transferkit.errors import DataError

            raise DataError(f"{field}: {total} example(s) cannot be split into training and validation; "
                            f"expected at least 2")
        count = min(total - 1, max(1, int(round(total * float(held_out)))))
    strata = [str(label) for label in labels]
    indices = np.arange(total)
    try:
        from sklearn.model_selection import train_test_split

        train, val = train_test_split(indices, test_size=count, random_state=seed, stratify=strata)
    except ValueError:  # a class with one member, or fewer held-out items than classes
        val = _rounded_per_class(strata, count / total, seed) or [int(np.random.default_rng(seed).integers(total))]
        train = sorted(set(range(total)) - set(val))
    return sorted(int(i) for i in train), sorted(int(i) for i in val)


def _rounded_per_class(strata: list[str], fraction: float, seed: int) -> list[int]:
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(strata):
        by_label[label].append(index)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(by_label):
        members = by_label[label]
        count = min(len(members) - 1, int(round(len(members) * fraction)))  # never a whole class
        chosen.extend(int(i) for i in rng.permutation(members)[:max(0, count)])
    return sorted(chosen)


def hold_out_and_subset(train: Sequence[T], val: Sequence[T] | None, strata: Callable[[Sequence[T]], list[Hashable]],
                        val_split: float | int, train_fraction: float, seed: int, max_train: int | None = None,
                        val_field: str = "data.val_split") -> tuple[list[T], list[T]]:
    """(training items, validation items) as every task takes them from its data section.

    `val` when the data has its own validation split, else a seeded, stratified `val_split` of `train`
    (`split_validation`); then a seeded, stratified `train_fraction` of the training items
    (`stratified_subset`, with its own random stream). `strata(items)` gives each item's stratum (its
    label, or what stands for it: a detection's main class, a multi-label image's rarest label).
    `val_split` is a share or a count (named `val_field` in errors); `max_train` caps the training
    items first, with a stratified draw of that many.

    Example:

    ```python
    train, val = hold_out_and_subset(samples, None, lambda items: [s.label for s in items], 0.2, 1.0, seed=0)
    ```
    """
    train = list(train)
    if val is None:
        kept, held = split_validation(strata(train), val_split, seed, field=val_field)
        train, val = [train[i] for i in kept], [train[i] for i in held]
    if max_train and max_train < len(train):
        train = [train[i] for i in split_validation(strata(train), max_train, seed + 1, "data.max_train")[1]]
    if train_fraction < 1.0:
        train = [train[i] for i in stratified_subset(strata(train), train_fraction, seed + SUBSET_SEED_OFFSET)]
    return train, list(val)
