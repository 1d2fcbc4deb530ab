"""The shared test kit, applied to every registered task through its `example_config`."""

import pytest

import transferkit.plugins  # noqa: F401  (registers the built-in tasks)
from transferkit.registry import available_tasks
from transferkit.testing import run_task_test

BUILT_IN = sorted(name for name, entry in available_tasks().items() if entry.source == "built-in")


def test_every_built_in_task_ships_an_example_config(tmp_path):
    assert {"image_classification", "object_detection", "text_classification", "audio_classification",
            "multilabel_classification"} <= set(BUILT_IN)
    for name in BUILT_IN:
        config = available_tasks()[name].task_class.example_config(tmp_path / name)
        assert isinstance(config, dict) and config["task"] == name, name


@pytest.mark.parametrize("name", sorted(available_tasks()))
def test_task_passes_the_kit(name, tmp_path):
    """Build, fit each stage, reload, the feature cache against the full pass, export and serving parity."""
    config = available_tasks()[name].task_class.example_config(tmp_path / "data")
    if config is None:
        pytest.skip(f"task {name!r} ships no example_config (a third-party task may add one)")
    result = run_task_test(name, config, tmp_path / "run")
    assert result["cache_checked"], f"{name}: no feature-cache split to check while the backbone is frozen"
    assert result["export_report"]["checked_examples"] > 0
