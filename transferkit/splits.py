"""The first half of every task's data pipeline: list the examples, name the classes, split and subset.

Each task reads its own format (class folders, annotations, label files, texts, clips) through a
`read` hook; what follows is the same for all of them and lives here: the `on_bad_*` policy on what
the listing found, the class names, the checks on them, the seeded, stratified validation hold-out
and the training subsets (`transferkit.sampling`). Decoding and batching stay with the task.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Generic, Hashable, Sequence, TypeVar

from transferkit.errors import DataError
from transferkit.sampling import hold_out_and_subset

T = TypeVar("T")

Problems = list[dict[str, str]]


@dataclasses.dataclass
class Splits(Generic[T]):
    """The training and validation examples a run uses, the class names, and what was skipped."""

    train: list[T]
    val: list[T]
    class_names: list[str]
    problems: Problems


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """Where the examples come from and how to split them: the fields every task's data section has.

    `on_bad` is the section's skip-or-raise policy (`"error"` raises on the first listing problem),
    named `on_bad_field` in errors; None when the task's reader applies its own policy.
    """

    train: str
    val: str | None
    val_split: float | int
    train_fraction: float
    seed: int
    on_bad: str | None = None
    on_bad_field: str = "data.on_bad_input"
    max_train: int | None = None
    val_field: str = "data.val_split"


def read_splits(source: SplitSource, read: Callable[[str, list[str] | None], tuple[list[T], Problems]],
                class_names: Callable[[list[T]], list[str]], strata: Callable[[Sequence[T], list[str]], list[Hashable]],
                min_classes: int = 2, keep: Callable[[list[T], list[str], Problems], list[T]] | None = None,
                before_split: Callable[[list[T], list[T] | None], tuple[list[T], list[T] | None, Problems]] | None = None,
                ) -> Splits[T]:
    """Lists `source.train` (and `source.val`), names the classes, and splits.

    Hooks:
        read(path, class_names): (examples, problems) of one split; `class_names` is None for the
            training split and the training split's names for the validation one.
        class_names(train): the class names, from the config or the training examples.
        strata(examples, class_names): each example's stratum for the split (its label, or what stands
            for it: a detection's main class, a multi-label image's rarest label).
        keep(examples, class_names, problems): drops examples the classes cannot express (an unknown
            label), adding a problem for each.
        before_split(train, val): a last pass before the hold-out (text drops duplicates across splits).

    Example:

    ```python
    splits = read_splits(SplitSource("data/", None, 0.2, 1.0, seed=0, on_bad="skip"),
                         read=lambda path, names: list_samples(path),
                         class_names=lambda train: sorted({s.label for s in train}),
                         strata=lambda items, names: [s.label for s in items])
    ```
    """
    train, problems = read(source.train, None)
    problems = list(problems)
    names = list(class_names(train))
    val = None
    if source.val:
        val, val_problems = read(source.val, names)
        problems += val_problems
    if source.on_bad == "error" and problems:  # skipped rows, missing files and links are bad inputs too
        raise DataError.for_bad_inputs(problems, source.on_bad_field)
    if len(names) < min_classes:
        raise DataError(f"{source.train}: found {len(names)} class(es) {names}; expected at least {min_classes}")
    if keep is not None:
        train = keep(train, names, problems)
        val = keep(val, names, problems) if val is not None else None
    if before_split is not None:
        train, val, found = before_split(train, val)
        problems += found
    train, val = hold_out_and_subset(train, val, lambda items: strata(items, names), source.val_split,
                                     source.train_fraction, source.seed, max_train=source.max_train,
                                     val_field=source.val_field)
    if not train or not val:
        raise DataError(f"{source.train}: {len(train)} training and {len(val)} validation examples after "
                        f"skipping bad inputs; expected at least one of each")
    return Splits(train, val, names, problems)
