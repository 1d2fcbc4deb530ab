"""The one validation splitter every task uses (issue 33): stratified, seeded, never an empty side."""

import pytest

from transferkit.errors import ConfigError, DataError
from transferkit.sampling import split_validation


def test_the_split_is_stratified_and_seeded():
    labels = ["a"] * 80 + ["b"] * 20
    train, val = split_validation(labels, 0.25, seed=3)
    assert len(val) == 25 and len(train) == 75 and not set(train) & set(val)
    assert sum(labels[i] == "b" for i in val) == 5  # the same share of every class
    assert split_validation(labels, 0.25, seed=3) == (train, val)
    assert split_validation(labels, 0.25, seed=4)[1] != val
    assert len(split_validation(labels, 10, seed=0)[1]) == 10  # a count


def test_classes_too_small_to_stratify_still_split_without_emptying_a_class():
    labels = ["a", "a", "a", "b", "c"]  # one-member classes: scikit-learn refuses to stratify
    train, val = split_validation(labels, 0.2, seed=0)
    assert len(val) >= 1 and sorted(train + val) == list(range(5))
    assert {labels[i] for i in train} >= {"b", "c"}  # a class is never moved whole to validation


@pytest.mark.parametrize("held_out, error", [(0.0, ConfigError), (1.0, ConfigError), (5, ConfigError),
                                             (0, ConfigError), (-2, ConfigError)])
def test_bad_shares_name_the_field(held_out, error):
    with pytest.raises(error, match="data.val_split"):
        split_validation(["a", "b", "a", "b", "a"], held_out, seed=0)


def test_one_example_cannot_be_split():
    with pytest.raises(DataError, match="cannot be split"):
        split_validation(["a"], 0.5, seed=0)


def test_hold_out_and_subset_is_the_split_every_task_takes():
    from transferkit.sampling import hold_out_and_subset, split_validation, stratified_subset

    items = [f"{label}{i}" for label in "ab" for i in range(10)]
    strata = lambda chosen: [item[0] for item in chosen]  # noqa: E731
    train, val = hold_out_and_subset(items, None, strata, 0.2, 1.0, seed=3)
    kept, held = split_validation(strata(items), 0.2, 3)
    assert val == [items[i] for i in held] and train == [items[i] for i in kept]
    given = ["x", "y"]
    train, val = hold_out_and_subset(items, given, strata, 0.2, 0.5, seed=3)
    assert val == given and len(train) == 10 and strata(train).count("a") == 5  # only training is subset
    # The subset draws from its own stream: a different fraction never moves the validation split.
    assert hold_out_and_subset(items, None, strata, 0.2, 0.5, seed=3)[1] == hold_out_and_subset(
        items, None, strata, 0.2, 1.0, seed=3)[1]


def test_read_splits_runs_every_hook_in_order_and_caps_training():
    from transferkit.splits import SplitSource, read_splits

    listed = {"train": [f"{label}{i}" for label in "ab" for i in range(10)] + ["zz", "a0"], "val": None}
    seen = []

    def read(path, names):
        seen.append((path, names))
        return list(listed[path]), [{"path": path, "reason": "one bad row"}]

    def keep(items, names, problems):  # an unknown label becomes a problem, not a training example
        problems += [{"path": i, "reason": "unknown label"} for i in items if i[0] not in names]
        return [i for i in items if i[0] in names]

    def dedupe(train, val):
        return sorted(set(train), key=train.index), val, [{"path": "a0", "reason": "duplicate"}]

    splits = read_splits(SplitSource("train", None, 4, 1.0, seed=0, max_train=8), read=read,
                         class_names=lambda items: ["a", "b"], strata=lambda items, names: [i[0] for i in items],
                         keep=keep, before_split=dedupe)
    assert seen == [("train", None)]
    assert len(splits.val) == 4 and len(splits.train) == 8 and not set(splits.train) & set(splits.val)
    assert [p["reason"] for p in splits.problems] == ["one bad row", "unknown label", "duplicate"]


def test_read_splits_refuses_problems_under_error_and_too_few_classes():
    from transferkit.splits import SplitSource, read_splits

    def read(path, names):
        return ["a1", "a2", "a3"], ([{"path": "x.jpg", "reason": "not an image"}] if path == "val" else [])

    source = SplitSource("train", "val", 0.2, 1.0, seed=0, on_bad="error", on_bad_field="data.on_bad_image")
    hooks = dict(read=read, class_names=lambda items: sorted({i[0] for i in items}),
                 strata=lambda items, names: [i[0] for i in items])
    with pytest.raises(DataError, match="x.jpg.*not an image|data.on_bad_image"):
        read_splits(source, **hooks)
    with pytest.raises(DataError, match=r"train: found 1 class\(es\) \['a'\]; expected at least 2"):
        read_splits(SplitSource("train", None, 0.2, 1.0, seed=0), **hooks)
    assert read_splits(SplitSource("train", None, 1, 1.0, seed=0), min_classes=1, **hooks).class_names == ["a"]
