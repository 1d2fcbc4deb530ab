"""`transferkit compare`: recipes x data fractions x seeds x backbones, each cell an ordinary run.

The promises of transfer learning (less time, less compute, better on small
data, more stable than training from scratch) are measured on the user's
own data: every cell of the grid is a run folder made by `runner.train`, so
any cell can be evaluated, exported and served, and an interrupted compare
resumes by skipping finished cells (an interrupted cell resumes from its
checkpoint). Frozen probes run first: they rank the backbones in seconds,
and fine-tuning then goes to the best-ranked backbone first, so a total
budget that runs out cuts the least promising cells.

Example:

```python
from transferkit.compare import CompareOptions, run_compare

summary = run_compare("hymenoptera.yaml", "runs/compare",
                      CompareOptions(recipes=("transfer", "scratch"), fractions=(0.25, 1.0), seeds=2))
summary["summary"][0]["mean"]
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from transferkit.config import FreezeConfig, RunConfig, StageConfig, check, load_config, same_config
from transferkit.errors import ConfigError
from transferkit.fileio import atomic_write_text

RECIPES = ("transfer", "frozen", "finetune_all", "scratch", "baseline")
RECIPE_HELP = {
    "transfer": "the config's own schedule (frozen, then unfreezing)",
    "frozen": "the schedule's frozen-backbone stages alone (a linear probe on cached features)",
    "finetune_all": "everything trainable from the first step, at a low learning rate",
    "scratch": "the same architecture, randomly initialised, everything trainable",
    "baseline": "what a user would try first without transfer (the task's own method, for text TF-IDF with "
                "logistic regression) on the same training subset and validation split",
}
# What a transfer recipe is measured against: the task's baseline method, else the network from scratch.
REFERENCE_RECIPES = ("baseline", "scratch")
BASELINE_FILE = "baseline.json"


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    """What `compare` runs. Budgets are minutes of wall time; None: no limit.

    `finetune_epochs` and `scratch_epochs` default to the transfer schedule's
    total epochs and three times that; `native_size` uses each preset's own
    training resolution (from its `transferkit.json`) instead of the config's.
    """

    recipes: tuple[str, ...] = RECIPES
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    seeds: int = 3
    backbones: tuple[str, ...] = ()
    native_size: bool = False
    cell_budget: float | None = None
    total_budget: float | None = None
    finetune_learning_rate: float = 1e-4
    finetune_epochs: int | None = None
    scratch_learning_rate: float = 1e-3
    scratch_epochs: int | None = None

    def __post_init__(self):
        unknown = [r for r in self.recipes if r not in RECIPES]
        check(not unknown and len(self.recipes) >= 1, "--recipes", list(self.recipes),
              f"one or more of {', '.join(RECIPES)}")
        check(len(set(self.recipes)) == len(self.recipes), "--recipes", list(self.recipes), "no repeats")
        check(len(self.fractions) >= 1 and all(0.0 < f <= 1.0 for f in self.fractions), "--fractions",
              list(self.fractions), "numbers in (0, 1]")
        check(len(set(self.fractions)) == len(self.fractions), "--fractions", list(self.fractions), "no repeats")
        check(isinstance(self.seeds, int) and self.seeds >= 1, "--seeds", self.seeds, "an integer >= 1")
        for name in ("cell_budget", "total_budget"):
            value = getattr(self, name)
            check(value is None or value > 0, f"--{name.replace('_', '-')}", value, "minutes > 0")
        for name in ("finetune_learning_rate", "scratch_learning_rate"):
            check(getattr(self, name) > 0, f"--{name.replace('_', '-')}", getattr(self, name), "a number > 0")
        for name in ("finetune_epochs", "scratch_epochs"):
            value = getattr(self, name)
            check(value is None or value >= 1, f"--{name.replace('_', '-')}", value, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class Cell:
    backbone: str
    recipe: str
    fraction: float
    seed: int

    @property
    def folder(self) -> str:
        return f"{_slug(self.backbone)}/{self.recipe}/fraction-{self.fraction:g}/seed-{self.seed}"


def _slug(text: str) -> str:
    name = Path(text).name if os.sep in text else text
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "backbone"


# --------------------------------------------------------------------------
# Recipes -> configs.
# --------------------------------------------------------------------------


def recipe_stages(stages: Sequence[StageConfig], recipe: str, options: CompareOptions) -> tuple[StageConfig, ...]:
    """The stages of `recipe`, derived from the config's own schedule `stages`."""
    total_epochs = sum(stage.epochs for stage in stages)
    if recipe == "transfer":
        return tuple(stages)
    if recipe == "frozen":
        frozen = tuple(s for s in stages if s.freeze.freezes_whole_backbone)
        if not frozen:
            raise ConfigError("compare --recipes frozen: the config's stages have no frozen-backbone stage "
                              "(freeze: {backbone: true}) to run alone")
        return frozen
    if recipe == "finetune_all":
        return (StageConfig(name="finetune_all", freeze=FreezeConfig(all=True),
                            epochs=options.finetune_epochs or total_epochs,
                            learning_rate=options.finetune_learning_rate, decay="cosine"),)
    if recipe == "baseline":
        return tuple(stages)  # no network is trained; the cell's config records the data it used
    if recipe == "scratch":
        return (StageConfig(name="scratch", freeze=FreezeConfig(all=True),
                            epochs=options.scratch_epochs or 3 * total_epochs,
                            learning_rate=options.scratch_learning_rate, decay="cosine",
                            warmup_epochs=1.0 if (options.scratch_epochs or 3 * total_epochs) > 2 else 0.0),)
    raise ConfigError(f"--recipes: unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")


def native_image_size(backbone: str) -> list[int] | None:
    """A preset's own training resolution, from its transferkit.json (imported presets), or None."""
    from transferkit.models.presets import resolve_preset

    try:
        folder = Path(resolve_preset(backbone))
    except Exception:
        return None
    meta = folder / "transferkit.json"
    if meta.is_file():
        size = json.loads(meta.read_text()).get("image_size")
        if isinstance(size, list) and len(size) == 2:
            return [int(v) for v in size]
    return None


def is_config_start(backbone: str) -> bool:
    """Whether a `--backbones` entry is a run config (a whole starting point) rather than a preset."""
    return Path(backbone).suffix.lower() in (".yaml", ".yml")


def starting_point(base: RunConfig, path: str) -> RunConfig:
    """A run config used as a starting point: read, and checked to be of `base`'s task."""
    if not Path(path).is_file():
        raise ConfigError(f"--backbones: {path}: no such config file")
    start = load_config(path)
    if start.task != base.task:
        raise ConfigError(f"--backbones: {path} is a {start.task!r} config; the compare is of {base.task!r}")
    return start


def _from_start(base: RunConfig, start: RunConfig) -> RunConfig:
    """`base` with `start`'s backbone, stages, task sections other than data (model, augment, ...) and input
    size and batch: the data, the splits and the evaluation stay `base`'s, so the cells are comparable."""
    from transferkit.registry import get_task

    task = get_task(base.task)
    data, start_data = task.data_section_of(base), task.data_section_of(start)
    carried = {name: getattr(start_data, name) for name in ("image_size", "batch_size")
               if hasattr(data, name) and hasattr(start_data, name)}
    sections = {f.name: getattr(start.task_config, f.name) for f in dataclasses.fields(start.task_config)
                if f.name != "data"}
    task_config = dataclasses.replace(base.task_config, **sections, data=dataclasses.replace(data, **carried))
    return base.replace(task_config=task_config, backbone=start.backbone, stages=start.stages)


def cell_config(base: RunConfig, cell: Cell, options: CompareOptions) -> RunConfig:
    """`base` changed for one cell: backbone (or a whole starting point, a config file), stages, training
    fraction, seed; evaluation unchanged."""
    from transferkit.config_sections import ImageDataSection
    from transferkit.registry import get_task

    if is_config_start(cell.backbone):
        base = _from_start(base, starting_point(base, cell.backbone))
    data = get_task(base.task).data_section_of(base)
    if data is None:
        raise ConfigError(f"compare: task {base.task!r} has no data.train_fraction, so its training set "
                          f"cannot be subsampled")
    data_changes: dict[str, Any] = {"train_fraction": float(cell.fraction)}
    if options.native_size and isinstance(data, ImageDataSection):
        size = native_image_size(cell.backbone)
        if size is not None:
            data_changes["image_size"] = tuple(size)
    task_config = dataclasses.replace(base.task_config, data=dataclasses.replace(data, **data_changes))
    backbone = base.backbone
    if cell.backbone != _backbone_name(base) and not is_config_start(cell.backbone):
        backbone = dataclasses.replace(backbone, preset=cell.backbone, architecture=None, config=None)
    if cell.recipe == "scratch":
        backbone = dataclasses.replace(backbone, load_weights=False)
    training = dataclasses.replace(base.training, seed=cell.seed, tensorboard=False)
    stages = recipe_stages(base.stages, cell.recipe, options)
    config = base.replace(task_config=task_config, backbone=backbone, stages=stages, training=training)
    get_task(config.task).validate_config(config)
    return config


def _backbone_name(config: RunConfig) -> str:
    return config.backbone.preset or f"{config.backbone.architecture} (from config)"


def plan_cells(base: RunConfig, options: CompareOptions) -> list[Cell]:
    """Every cell, frozen probes first."""
    backbones = options.backbones or (_backbone_name(base),)
    seeds = [base.training.seed + i for i in range(options.seeds)]
    cells = [Cell(b, r, f, s) for b in backbones for r in options.recipes
             for f in sorted(options.fractions, reverse=True) for s in seeds]
    return sorted(cells, key=lambda c: c.recipe != "frozen")


# --------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------


def _cell_finished(folder: Path) -> bool:
    from transferkit.models.checkpoints import CheckpointStore

    if (folder / BASELINE_FILE).is_file():
        return (folder / "metrics.json").is_file()
    latest = CheckpointStore(folder).latest() if folder.is_dir() else None
    return bool(latest and latest[1].get("complete") and (folder / "metrics.json").exists())


def _eta(ran_minutes: list[float], left: int) -> str:
    """`, about N min left` once a cell has run in this session (cells of one compare cost alike)."""
    if not ran_minutes:
        return ""
    minutes = sum(ran_minutes) / len(ran_minutes) * left
    return f" ({len(ran_minutes)} trained in {sum(ran_minutes):.1f} min; about {minutes:.0f} min left)"


def run_compare(config_path: str | os.PathLike | None, output: str | os.PathLike, options: CompareOptions,
                overrides: Sequence[str] = (), base: RunConfig | None = None, log=print,
                report_only: bool = False) -> dict[str, Any]:
    """Runs (or resumes) every cell, then writes compare.json, compare.md and the plots into `output`.

    `report_only` trains nothing: the outputs are rewritten from the cells already finished (after an
    upgrade, or to redraw the plots), and the others are reported as not run.
    """
    from transferkit import runner

    base = base or load_config(config_path, overrides)
    output = Path(output)
    cells = plan_cells(base, options)
    from transferkit.models.presets import check_preset_known

    for backbone in options.backbones:  # an unknown name is an error before any cell, not a column of failures
        if is_config_start(backbone):
            check_preset_known(starting_point(base, backbone).backbone.preset or "")
        else:
            check_preset_known(backbone)
    configs = {cell: cell_config(base, cell, options) for cell in cells}  # every cell checked before any runs
    if "baseline" in options.recipes:
        _check_task_has_baseline(base)
    if report_only:
        results = {cell: {"status": "finished", "resumed": True} if _cell_finished(output / cell.folder)
                   else {"status": "not run", "reason": "--report-only"} for cell in cells}
        summary = summarize(output, base, options, cells, results, configs)
        write_outputs(output, summary, plots=True)
        return summary
    for cell, config in configs.items():
        folder = output / cell.folder
        if _cell_finished(folder) and not same_config((folder / "config.yaml").read_text(), config):
            raise ConfigError(f"{folder}: a finished cell with a different config (the compare options or the "
                              f"config changed); choose another --output, delete that folder, or pass "
                              f"--report-only to rewrite the report from the finished cells")
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[Cell, dict[str, Any]] = {}
    ran_minutes: list[float] = []  # cells trained in this session, for the estimate of what is left
    order = list(cells)
    for position in range(len(order)):
        cell = order[position]
        folder = output / cell.folder
        if _cell_finished(folder):
            results[cell] = {"status": "finished", "resumed": True}
        else:
            spent = (time.perf_counter() - started) / 60
            if options.total_budget is not None and spent >= options.total_budget:
                results[cell] = {"status": "not run", "reason": f"total budget of {options.total_budget:g} min spent"}
                continue
            limits = [m for m in (options.cell_budget,
                                  None if options.total_budget is None else options.total_budget - spent)
                      if m is not None]
            limit = min(limits) * 60 if limits else None
            log(f"[{position + 1}/{len(order)}] {cell.folder}{_eta(ran_minutes, len(order) - position)}")
            cell_started = time.perf_counter()
            try:
                if cell.recipe == "baseline":
                    _run_baseline(configs[cell], folder)
                else:
                    runner.train(configs[cell], folder, resume=True, time_limit=limit)
                results[cell] = {"status": "finished"}
                ran_minutes.append((time.perf_counter() - cell_started) / 60)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # one failing cell must not lose the others
                # One line: the reason lands in a Markdown table cell.
                results[cell] = {"status": "failed", "reason": " ".join(f"{type(error).__name__}: {error}".split())}
                if folder.is_dir():
                    atomic_write_text(folder / "compare_error.txt", traceback.format_exc())
                log(f"  failed: {type(error).__name__}: {error}")
        summary = summarize(output, base, options, cells, results, configs)
        if cell.recipe == "frozen" and not any(c.recipe == "frozen" for c in order[position + 1:]):
            # All probes done: fine-tune the best-ranked backbone first.
            ranking = [row["backbone"] for row in summary["ranking"]]
            order[position + 1:] = sorted(order[position + 1:], key=lambda c: ranking.index(c.backbone)
                                          if c.backbone in ranking else len(ranking))
        write_outputs(output, summary, plots=False)
    summary = summarize(output, base, options, cells, results, configs)
    summary["wall_seconds_this_session"] = round(time.perf_counter() - started, 1)
    write_outputs(output, summary, plots=True)
    return summary


def _check_task_has_baseline(config: RunConfig) -> None:
    from transferkit.registry import get_task
    from transferkit.task import Task

    if get_task(config.task).baseline is Task.baseline:
        raise ConfigError(f"compare --recipes baseline: task {config.task!r} has no baseline method of its own; "
                          f"its baseline is the 'scratch' recipe (the same network, randomly initialised)")


def _run_baseline(config: RunConfig, folder: Path) -> None:
    """A baseline cell: the task's `baseline()` on the cell's data, written as a run's metrics.json."""
    from transferkit.config import write_config
    from transferkit.registry import get_task

    task = get_task(config.task)(config)
    result = task.baseline()
    folder.mkdir(parents=True, exist_ok=True)
    write_config(config, folder)
    metrics = {**result["metrics"], "elapsed_seconds": result.get("seconds"), "score": task.score()[0],
               "baseline": result}
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(folder / "info.json", json.dumps({"task": config.task, "num_train": result.get("num_train"),
                                                        "num_val": result.get("num_val")}, indent=2))
    atomic_write_text(folder / BASELINE_FILE, json.dumps(result, indent=2))  # last: the cell is finished


# --------------------------------------------------------------------------
# Reading cells back: scores, curves, FLOPs.
# --------------------------------------------------------------------------


class _FlopCounter:
    """Stage costs per (task, backbone, input size, classes), traced once each."""

    def __init__(self):
        self._built: dict[tuple, tuple] = {}

    def stage_costs(self, config: RunConfig, info: dict[str, Any]) -> dict[str, Any]:
        from transferkit.models.flops import count_forward_flops, stage_cost
        from transferkit.models.freezing import apply_freeze_plan
        from transferkit.registry import get_task

        task = get_task(config.task)(config, info)
        preprocessor = task.preprocessor(info)  # the model's input shape: image size, sequence length, ...
        key = (config.task, config.backbone.preset, json.dumps(config.backbone.config, sort_keys=True),
               json.dumps(preprocessor.get_config() if preprocessor is not None else None, sort_keys=True),
               len(info.get("class_names", [])))
        if key not in self._built:
            backbone = task.load_backbone(config.backbone, load_weights=False)
            model = task.build_model(backbone, info)
            self._built[key] = (backbone, count_forward_flops(model, backbone))
        backbone, flops = self._built[key]
        costs = {}
        for stage in config.stages:
            apply_freeze_plan(backbone, stage.freeze)
            costs[stage.name] = stage_cost(flops, backbone)
        return costs


def read_cell(folder: Path, config: RunConfig, monitor: tuple[str, str], score: tuple[str, str],
              counter: _FlopCounter) -> dict[str, Any]:
    """A finished cell's score, epochs, wall time, FLOPs and its curve (one point per epoch of the monitor)."""
    history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").exists() else []
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
    info = json.loads((folder / "info.json").read_text()) if (folder / "info.json").exists() else {}
    name, mode = monitor
    values = [row.get(name) for row in history]
    scored = [v for v in values if v is not None]
    best = (max(scored) if mode == "max" else min(scored)) if scored else None
    final = metrics.get(score[0])
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    examples = int(info.get("num_train") or 0)
    curve, flops, error = [], 0, None
    try:
        costs = None if (folder / BASELINE_FILE).is_file() else counter.stage_costs(config, info)
    except Exception as failure:  # FLOPs are a report, not a reason to lose the cell
        costs, error = None, f"{type(failure).__name__}: {failure}"
    previous_cached_stage = None
    for row, value in zip(history, values):
        if costs is not None:
            cost = costs[row["stage"]]
            if row.get("feature_cache"):
                if previous_cached_stage != row["stage"]:
                    flops += examples * cost.frozen_prefix  # the one extraction pass
                flops += examples * cost.cached_train_step
                previous_cached_stage = row["stage"]
            else:
                flops += examples * cost.train_step
                previous_cached_stage = None
        curve.append({"epoch": row["global_epoch"], "stage": row["stage"], "elapsed": row.get("elapsed"),
                      "train_flops": flops if costs is not None else None, "monitor": value})
    return {
        # The task's own evaluation of the best weights on the whole validation set.
        "score": float(final) if isinstance(final, (int, float)) else None,
        # The config's data.test, scored once with the same weights (never used to choose them).
        "test": {k: float(v) for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        "best_monitor": best,
        "epochs": len(history),
        "wall_seconds": metrics.get("elapsed_seconds"),
        "time_limit_reached": bool(metrics.get("time_limit_reached")),
        "train_flops": flops if costs is not None else None,
        "forward_flops_per_example": next(iter(costs.values())).forward if costs else None,
        "flops_error": error,
        "num_train": examples,
        "curve": curve,
    }


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _test_means(cells: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean and spread over seeds of every test-split figure the cells share ({} without a data.test)."""
    shared = set.intersection(*(set(c.get("test") or {}) for c in cells)) if cells else set()
    return {key: dict(zip(("mean", "std"), _mean_std([c["test"][key] for c in cells]))) for key in sorted(shared)}


def _time_to(curve: list[dict[str, Any]], target: float, mode: str) -> float | None:
    for point in curve:
        score = point["monitor"]
        if score is not None and (score >= target if mode == "max" else score <= target):
            return point["elapsed"]
    return None


def summarize(output: Path, base: RunConfig, options: CompareOptions, cells: list[Cell],
              results: dict[Cell, dict[str, Any]], configs: dict[Cell, RunConfig],
              counter: _FlopCounter | None = None) -> dict[str, Any]:
    """compare.json's content: one record per cell, then mean and spread per (backbone, recipe, fraction)."""
    from transferkit.registry import get_task

    counter = counter or _FLOPS
    task = get_task(base.task)(base)
    monitor = task.monitor()
    score = task.score()
    name, mode = score
    records = []
    for cell in cells:
        result = results.get(cell, {"status": "pending"})
        record = {**dataclasses.asdict(cell), "folder": cell.folder, **result}
        folder = output / cell.folder
        if result.get("status") == "finished" or (folder / "metrics.json").exists():
            record.update(read_cell(folder, configs[cell], monitor, score, counter))
        records.append(record)
    rows = []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["backbone"], record["recipe"], record["fraction"]), []).append(record)
    # Time to X% of the best: on the monitor's per-epoch curve, when higher is better.
    best_per_group: dict[tuple, float] = {}
    for (backbone, recipe, fraction), members in groups.items():
        values = [m["best_monitor"] for m in members if m.get("best_monitor") is not None]
        if values and monitor[1] == "max":
            key = (backbone, fraction)
            best_per_group[key] = max(values + [best_per_group.get(key, -math.inf)])
    for (backbone, recipe, fraction), members in groups.items():
        scored = [m for m in members if m.get("score") is not None]
        mean, std = _mean_std([m["score"] for m in scored])
        best = best_per_group.get((backbone, fraction))
        row = {"backbone": backbone, "recipe": recipe, "fraction": fraction, "seeds": len(scored),
               "planned_seeds": len(members), "mean": mean, "std": std,
               "min": min((m["score"] for m in scored), default=None),
               "max": max((m["score"] for m in scored), default=None),
               "wall_seconds": _mean_std([m["wall_seconds"] for m in scored if m.get("wall_seconds") is not None])[0],
               "epochs": _mean_std([m["epochs"] for m in scored])[0],
               "train_flops": _mean_std([m["train_flops"] for m in scored if m.get("train_flops") is not None])[0],
               "time_limit_reached": sum(1 for m in scored if m.get("time_limit_reached")),
               "test": _test_means(scored),
               "not_finished": [f"seed {m['seed']}: {m.get('status')}" + (f" ({m['reason']})" if m.get("reason") else "")
                                for m in members if m.get("score") is None]}
        for share in (0.9, 0.95):
            times = []
            if best is not None:
                times = [_time_to(m["curve"], share * best, "max") for m in scored]
            reached = [t for t in times if t is not None]
            row[f"seconds_to_{int(share * 100)}pct_of_best"] = _mean_std(reached)[0]
            row[f"reached_{int(share * 100)}pct_of_best"] = f"{len(reached)}/{len(scored)}"
        rows.append(row)
    rows.sort(key=lambda r: (r["backbone"], RECIPES.index(r["recipe"]), r["fraction"]))
    ranking = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        probes = [r for r in rows if r["backbone"] == backbone and r["recipe"] == "frozen" and r["mean"] is not None]
        if probes:
            full = max(probes, key=lambda r: r["fraction"])
            ranking.append({"backbone": backbone, "probe_score": full["mean"], "fraction": full["fraction"],
                            "probe_seconds": full["wall_seconds"],
                            "forward_flops_per_example": next((m.get("forward_flops_per_example") for m in records
                                                               if m["backbone"] == backbone
                                                               and m.get("forward_flops_per_example")), None)})
    ranking.sort(key=lambda r: -r["probe_score"] if mode == "max" else r["probe_score"])
    versus = versus_reference(rows, mode)
    return {"task": base.task, "score": name, "mode": mode, "monitor": monitor[0],
            "options": dataclasses.asdict(options),
            "recipes": {r: RECIPE_HELP[r] for r in options.recipes}, "ranking": ranking, "summary": rows,
            "versus_baseline": versus,
            "cells": records}


def versus_reference(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Per backbone, fraction and transfer recipe: its mean score minus the reference recipe's (`baseline`,
    else `scratch`) at the same fraction, in points, with the spread of that difference over seeds
    (the two standard deviations added in quadrature) and whether transfer is ahead by more than it."""
    by_key = {(r["backbone"], r["recipe"], r["fraction"]): r for r in rows}
    compared = []
    for row in rows:
        if row["recipe"] in REFERENCE_RECIPES or row["mean"] is None:
            continue
        reference = next((by_key.get((row["backbone"], name, row["fraction"])) for name in REFERENCE_RECIPES
                          if by_key.get((row["backbone"], name, row["fraction"]), {}).get("mean") is not None), None)
        if reference is None:
            continue
        sign = 1.0 if mode == "max" else -1.0
        difference = sign * (row["mean"] - reference["mean"]) * 100
        spread = math.hypot(row["std"] or 0.0, reference["std"] or 0.0) * 100
        compared.append({"backbone": row["backbone"], "recipe": row["recipe"], "fraction": row["fraction"],
                         "reference": reference["recipe"], "score": row["mean"], "reference_score": reference["mean"],
                         "points_ahead": difference, "spread_points": spread,
                         "verdict": ("ahead" if difference > spread else "behind" if -difference > spread
                                     else "within the spread")})
    return compared


_FLOPS = _FlopCounter()


def write_outputs(output: Path, summary: dict[str, Any], plots: bool = True) -> None:
    from transferkit import compare_report

    atomic_write_text(output / "compare.json", json.dumps(summary, indent=2))
    atomic_write_text(output / "compare.md", compare_report.markdown(summary))
    if plots:
        compare_report.plot_all(summary, output)
