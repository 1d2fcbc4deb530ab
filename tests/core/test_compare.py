"""transferkit compare: a tiny grid end to end, budgets, resume, and the training-set fraction."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from transferkit.cli import main
from transferkit.compare import CompareOptions, recipe_stages, run_compare
from transferkit.config import build_run_config
from transferkit.errors import ConfigError
from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
from transferkit.runner import load_run, train
from transferkit.sampling import stratified_subset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("shapes"), per_class=12, size=32)


@pytest.fixture(scope="module")
def config_file(shapes, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(shapes, data={"val_split": 0.25})))
    return path


@pytest.fixture(scope="module")
def finished(config_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("compare") / "out"
    code = main(["compare", str(config_file), "--recipes", "frozen,scratch", "--fractions", "0.5,1",
                 "--seeds", "1", "--scratch-epochs", "2", "--output", str(output)])
    assert code == 0
    return output


def test_every_cell_is_an_ordinary_finished_run(finished):
    summary = json.loads((finished / "compare.json").read_text())
    assert [c["status"] for c in summary["cells"]] == ["finished"] * 4
    # Frozen probes run first.
    assert [c["recipe"] for c in summary["cells"]][:2] == ["frozen", "frozen"]
    for cell in summary["cells"]:
        config, _, model, info = load_run(finished / cell["folder"])
        assert config.training.seed == 0 and config.task_config.data.train_fraction == cell["fraction"]
        assert cell["best_monitor"] == max(row["val_accuracy"] for row in json.loads(
            (finished / cell["folder"] / "history.json").read_text()))
        assert cell["score"] == json.loads((finished / cell["folder"] / "metrics.json").read_text())["accuracy"]
    scratch = load_run(finished / "efficientnet__from_config_/scratch/fraction-1/seed-0")[0]
    assert scratch.backbone.load_weights is False and [s.name for s in scratch.stages] == ["scratch"]


def test_fractions_train_on_stratified_subsets_and_validate_on_the_same_set(finished):
    infos = {f: json.loads((finished / f"efficientnet__from_config_/frozen/fraction-{f}/seed-0/info.json")
                           .read_text()) for f in ("0.5", "1")}
    assert infos["0.5"]["num_val"] == infos["1"]["num_val"]
    assert infos["0.5"]["num_train"] == pytest.approx(infos["1"]["num_train"] / 2, abs=len(infos["1"]["class_names"]))


def test_flops_follow_the_recipes_freeze_plans(finished):
    summary = json.loads((finished / "compare.json").read_text())
    cells = {(c["recipe"], c["fraction"]): c for c in summary["cells"]}
    scratch = cells[("scratch", 1.0)]
    forward = scratch["forward_flops_per_example"]
    assert forward > 0
    # Everything trains: forward plus a backward of twice the forward, every epoch.
    assert scratch["train_flops"] == scratch["epochs"] * scratch["num_train"] * 3 * forward
    frozen = cells[("frozen", 1.0)]
    # Cached features: one extraction pass, then only the head: far cheaper per epoch.
    assert 0 < frozen["train_flops"] < frozen["num_train"] * forward * 1.1
    assert cells[("scratch", 0.5)]["train_flops"] < scratch["train_flops"]
    # The curve accumulates the same numbers, with wall time.
    assert scratch["curve"][-1]["train_flops"] == scratch["train_flops"]
    assert all(p["elapsed"] > 0 for p in scratch["curve"])


def test_table_and_plots(finished):
    text = (finished / "compare.md").read_text()
    results, against = text.split("## Against the baseline")
    rows = [line for line in results.splitlines() if line.startswith("| efficientnet")]
    assert len(rows) == 4  # one row per recipe and fraction
    assert any("| scratch | 0.5 | 1/1 |" in line for line in rows)
    # Without a baseline recipe, the frozen probe is measured against the network from scratch.
    versus = [line for line in against.splitlines() if line.startswith("| efficientnet")]
    assert len(versus) == 2 and all("| frozen |" in line and "| scratch |" in line for line in versus)
    assert "| 1 | efficientnet (from config) |" in text  # the probe ranking
    for name in ("accuracy_vs_fraction.png", "accuracy_vs_time.png", "accuracy_vs_flops.png"):
        with Image.open(finished / name) as image:
            assert image.format == "PNG" and image.size[0] > 200
            assert np.asarray(image.convert("L")).std() > 5  # something was drawn


def test_resume_skips_finished_cells_and_reruns_the_missing_one(finished, config_file):
    kept = finished / "efficientnet__from_config_/scratch/fraction-1/seed-0/metrics.json"
    kept_time = kept.stat().st_mtime_ns
    lost = finished / "efficientnet__from_config_/frozen/fraction-0.5/seed-0"
    import shutil

    shutil.rmtree(lost)
    logged = []
    options = CompareOptions(recipes=("frozen", "scratch"), fractions=(0.5, 1.0), seeds=1, scratch_epochs=2)
    summary = run_compare(config_file, finished, options, log=logged.append)
    assert kept.stat().st_mtime_ns == kept_time
    assert (lost / "metrics.json").exists()
    assert logged == ["[2/4] efficientnet__from_config_/frozen/fraction-0.5/seed-0"]
    assert sum(1 for c in summary["cells"] if c.get("resumed")) == 3
    # Different options on the same folder: refused before anything runs, naming the cell.
    changed = CompareOptions(recipes=("scratch",), fractions=(1.0,), seeds=1, scratch_epochs=3)
    with pytest.raises(ConfigError, match=r"scratch/fraction-1/seed-0: a finished cell with a different config"):
        run_compare(config_file, finished, changed)
    # --report-only trains nothing and reports from what is finished.
    report = run_compare(config_file, finished, CompareOptions(recipes=("frozen",), fractions=(0.5, 0.25), seeds=1),
                         report_only=True)
    assert [(c["fraction"], c["status"]) for c in report["cells"]] == [(0.5, "finished"), (0.25, "not run")]
    assert kept.stat().st_mtime_ns == kept_time


def test_total_budget_reports_unrun_cells_instead_of_dropping_them(config_file, tmp_path):
    options = CompareOptions(recipes=("scratch",), fractions=(0.5, 1.0), seeds=1, scratch_epochs=3,
                             total_budget=0.001)
    summary = run_compare(config_file, tmp_path / "out", options, log=lambda _: None)
    first, second = summary["cells"]
    assert first["status"] == "finished" and first["time_limit_reached"] and first["epochs"] == 1
    assert second["status"] == "not run" and "total budget of 0.001 min spent" in second["reason"]
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "stopped by the time budget" in text and "seed 0: not run (total budget" in text


def test_time_limit_ends_the_run_with_the_best_weights_so_far(shapes, tmp_path):
    config = build_run_config(tiny_config(shapes, stages=[
        {"name": "a", "freeze": {"all": True}, "epochs": 3, "learning_rate": 1e-3},
        {"name": "b", "freeze": {"all": True}, "epochs": 3, "learning_rate": 1e-3}]))
    run = train(config, tmp_path / "run", time_limit=1e-3)
    history = json.loads((run / "history.json").read_text())
    assert [row["stage"] for row in history] == ["a"]  # stopped after the first batch of the first epoch
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["time_limit_reached"] is True and metrics["elapsed_seconds"] > 0
    assert (run / "model.keras").exists()


def test_recipes_derive_from_the_schedule(shapes):
    config = build_run_config(tiny_config(shapes))
    options = CompareOptions()
    assert recipe_stages(config.stages, "transfer", options) == config.stages
    assert [s.name for s in recipe_stages(config.stages, "frozen", options)] == ["head"]
    finetune = recipe_stages(config.stages, "finetune_all", options)[0]
    assert finetune.freeze.all and finetune.learning_rate == 1e-4 and finetune.epochs == 2
    scratch = recipe_stages(config.stages, "scratch", options)[0]
    assert scratch.freeze.all and scratch.epochs == 6
    unfrozen = build_run_config(tiny_config(shapes, stages=[{"name": "x", "freeze": {"all": True}}]))
    with pytest.raises(ConfigError, match="no frozen-backbone stage"):
        recipe_stages(unfrozen.stages, "frozen", options)


@pytest.mark.parametrize("argv, message", [
    (["--recipes", "transfer,linear"], "--recipes: expected one or more of transfer, frozen, finetune_all, scratch"),
    (["--fractions", "0.5,1.5"], "--fractions: expected numbers in (0, 1], received [0.5, 1.5]"),
    (["--fractions", "half"], "--fractions: expected comma-separated numbers"),
    (["--seeds", "0"], "--seeds: expected an integer >= 1, received 0"),
    (["--budget", "-1"], "--cell-budget: expected minutes > 0, received -1"),
])
def test_bad_options_are_one_line_errors(config_file, tmp_path, capsys, argv, message):
    assert main(["compare", str(config_file), "--output", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_stratified_subset_keeps_every_class_and_depends_on_the_seed():
    labels = ["a"] * 40 + ["b"] * 10 + ["c"] * 2
    chosen = stratified_subset(labels, 0.25, seed=1)
    picked = [labels[i] for i in chosen]
    assert (picked.count("a"), picked.count("b"), picked.count("c")) == (10, 2, 1)
    assert chosen == sorted(chosen) == stratified_subset(labels, 0.25, seed=1)
    assert chosen != stratified_subset(labels, 0.25, seed=2)
    assert stratified_subset(labels, 1.0, seed=3) == list(range(len(labels)))
    with pytest.raises(ConfigError, match=r"data.train_fraction: expected a number in \(0, 1\], received 0"):
        build_run_config(tiny_config("x", data={"train_fraction": 0}))


@pytest.mark.parametrize("task", ["text_classification", "object_detection"])
def test_every_task_compares_on_its_own_score(task, tmp_path):
    from transferkit.plugins.object_detection.testing import make_detection_dataset, tiny_detection_config
    from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config

    if task == "text_classification":
        make_text_dataset(tmp_path / "data", count=48)
        config, score = tiny_text_config(tmp_path / "data"), "accuracy"
    else:
        config, score = tiny_detection_config(make_detection_dataset(tmp_path / "data", count=16, size=64)), "map"
        config["stages"] = [{"name": "head", "freeze": {"backbone": True}, "epochs": 1, "learning_rate": 1e-3}]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    recipes = ("frozen", "baseline") if task == "text_classification" else ("frozen",)
    if task == "object_detection":  # no method of its own: its reference is the scratch recipe
        with pytest.raises(ConfigError, match="has no baseline method of its own; its baseline is the 'scratch'"):
            run_compare(path, tmp_path / "no", CompareOptions(recipes=("frozen", "baseline"), fractions=(0.5,),
                                                              seeds=1), log=lambda _: None)
    summary = run_compare(path, tmp_path / "out", CompareOptions(recipes=recipes, fractions=(0.5,), seeds=1),
                          log=lambda _: None)
    cell = summary["cells"][0]
    if task == "text_classification":
        baseline_cell = summary["cells"][1]
        assert baseline_cell["recipe"] == "baseline" and baseline_cell["status"] == "finished"
        baseline = json.loads((tmp_path / "out" / baseline_cell["folder"] / "baseline.json").read_text())
        assert baseline_cell["score"] == baseline["metrics"]["accuracy"]
        assert baseline["num_train"] == cell["num_train"]  # the same training subset as the network's
        (versus,) = summary["versus_baseline"]
        assert versus["reference"] == "baseline" and versus["points_ahead"] == pytest.approx(
            (cell["score"] - baseline_cell["score"]) * 100)
        assert "## Against the baseline" in (tmp_path / "out" / "compare.md").read_text()
    assert summary["score"] == score and cell["status"] == "finished"
    metrics = json.loads((tmp_path / "out" / cell["folder"] / "metrics.json").read_text())
    assert cell["score"] == metrics[score]
    assert cell["train_flops"] > 0 and cell["forward_flops_per_example"] > 0
    assert summary["ranking"][0]["probe_score"] == cell["score"]


def test_a_saved_config_from_an_older_schema_is_the_same_config(shapes):
    from transferkit.config import same_config

    config = build_run_config(tiny_config(shapes))
    saved = yaml.safe_load(config.to_yaml())
    del saved["data"]["train_fraction"]  # written before the field existed: its default applies
    assert same_config(yaml.safe_dump(saved, sort_keys=False), config)
    saved["data"]["batch_size"] = 4
    assert not same_config(yaml.safe_dump(saved, sort_keys=False), config)
    assert not same_config("task: [unreadable", config)


def test_core_reads_a_data_section_only_through_its_typed_interface(shapes, tmp_path):
    """compare and evaluate --data need a `DataSection`; a task config without one is refused by name."""
    import dataclasses

    from transferkit.compare import Cell, cell_config
    from transferkit.config import DataSection, ImageDataSection
    from transferkit.registry import get_task
    from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config

    image = build_run_config(tiny_config(shapes))
    text = build_run_config(tiny_text_config(make_text_dataset(tmp_path / "texts", count=16)))
    assert isinstance(get_task("image_classification").data_section_of(image), ImageDataSection)
    text_data = get_task("text_classification").data_section_of(text)
    assert isinstance(text_data, DataSection) and not isinstance(text_data, ImageDataSection)
    options = CompareOptions(native_size=True)
    cell = Cell(backbone=image.backbone.preset or "efficientnet (from config)", recipe="transfer", fraction=0.5, seed=1)
    assert cell_config(image, cell, options).task_config.data.train_fraction == 0.5

    @dataclasses.dataclass(frozen=True)
    class Untyped:
        data: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(ConfigError, match="has no data.train_fraction"):
        cell_config(image.replace(task_config=Untyped()), cell, options)


def test_versus_reference_prefers_the_baseline_and_says_when_a_gap_is_within_the_spread():
    from transferkit.compare import versus_reference

    def row(recipe, mean, std):
        return {"backbone": "b", "recipe": recipe, "fraction": 1.0, "mean": mean, "std": std}

    rows = [row("transfer", 0.80, 0.02), row("frozen", 0.76, 0.05), row("scratch", 0.50, 0.0),
            row("baseline", 0.79, 0.0)]
    by_recipe = {r["recipe"]: r for r in versus_reference(rows, "max")}
    assert set(by_recipe) == {"transfer", "frozen"} and by_recipe["transfer"]["reference"] == "baseline"
    assert by_recipe["transfer"]["verdict"] == "within the spread"  # 1 point ahead, 2 points of spread
    assert by_recipe["frozen"]["verdict"] == "within the spread"
    rows[-1] = row("baseline", 0.70, 0.0)
    assert {r["recipe"]: r["verdict"] for r in versus_reference(rows, "max")} == {"transfer": "ahead",
                                                                                  "frozen": "ahead"}
    # Without a baseline the network from scratch is the reference; lower-is-better scores flip the sign.
    assert versus_reference(rows[:3], "min")[0]["points_ahead"] == pytest.approx(-30.0)


def test_a_config_file_is_a_whole_starting_point_on_the_compare_configs_data(shapes, tmp_path):
    """`--backbones A.yaml`: that config's backbone, stages, model sections and input size; the compare
    config's data and splits. Another task's config, or a missing file, is refused by name."""
    from transferkit.compare import Cell, cell_config
    from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config

    base = build_run_config(tiny_config(shapes, data={"image_size": [32, 32]}))
    start_data = tiny_config(tmp_path / "elsewhere", data={"image_size": [64, 64], "batch_size": 3},
                             head={"dropout": 0.5},
                             stages=[{"name": "only", "freeze": {"all": True}, "epochs": 3, "learning_rate": 0.01}])
    start = tmp_path / "start.yaml"
    start.write_text(yaml.safe_dump(start_data))
    config = cell_config(base, Cell(str(start), "transfer", 0.5, 4), CompareOptions())
    data = config.task_config.data
    assert data.train == base.task_config.data.train and data.train_fraction == 0.5  # the compare's data
    assert tuple(data.image_size) == (64, 64) and data.batch_size == 3  # the start's input
    assert config.task_config.head.dropout == 0.5 and [s.name for s in config.stages] == ["only"]
    assert config.training.seed == 4

    text = tmp_path / "text.yaml"
    text.write_text(yaml.safe_dump(tiny_text_config(make_text_dataset(tmp_path / "texts", count=8))))
    with pytest.raises(ConfigError, match=r"text.yaml is a 'text_classification' config"):
        cell_config(base, Cell(str(text), "transfer", 1.0, 0), CompareOptions())
    with pytest.raises(ConfigError, match=r"missing.yaml: no such config file"):
        cell_config(base, Cell(str(tmp_path / "missing.yaml"), "transfer", 1.0, 0), CompareOptions())


def test_test_split_figures_are_averaged_over_seeds_and_tabled():
    from transferkit import compare_report
    from transferkit.compare import _test_means

    cells = [{"test": {"map": 0.4, "map50": 0.8}}, {"test": {"map": 0.6, "map50": 0.9, "extra": 1.0}}]
    means = _test_means(cells)
    assert set(means) == {"map", "map50"}  # only what every seed has
    assert means["map"]["mean"] == pytest.approx(0.5) and means["map"]["std"] == pytest.approx(0.1414, abs=1e-3)
    summary = {"score": "map", "summary": [{"backbone": "b", "recipe": "transfer", "fraction": 1.0, "test": means}]}
    lines = compare_report._test_lines(summary)
    assert "| b | transfer | 1 | 0.500 ± 0.141 | 0.850 ± 0.071 |" in lines
    assert compare_report._test_lines({"score": "map", "summary": [{"test": {}}]}) == []
