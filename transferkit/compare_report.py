"""compare.md and the three compare plots, from compare.json's content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RECIPE_COLOURS = {"transfer": "tab:blue", "frozen": "tab:green", "finetune_all": "tab:orange", "scratch": "tab:red",
                  "baseline": "tab:gray"}
BACKBONE_STYLES = ("-", "--", ":", "-.")


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _flops(value) -> str:
    if value is None:
        return "-"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# transferkit compare: {summary['task']}", "",
             f"Score: `{summary['score']}` of each run's best weights (best `{summary['monitor']}` epoch) on the "
             f"full validation set, from the task's evaluation; mean ± sample standard deviation over seeds (each "
             f"seed also draws its own stratified training subset).", ""]
    lines += ["Recipes:", ""] + [f"- `{name}`: {text}" for name, text in summary["recipes"].items()] + [""]
    if summary["ranking"]:
        lines += ["## Backbones ranked by frozen probe", "",
                  "| rank | backbone | probe score | fraction | probe wall s | forward FLOPs / example |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for rank, row in enumerate(summary["ranking"], 1):
            lines.append(f"| {rank} | {row['backbone']} | {_number(row['probe_score'])} | {row['fraction']:g} | "
                         f"{_seconds(row['probe_seconds'])} | {_flops(row['forward_flops_per_example'])} |")
        lines.append("")
    lines += ["## Results", "",
              "| backbone | recipe | fraction | seeds | mean | std | min | max | wall s | epochs | train FLOPs | "
              "s to 90% of best | s to 95% of best | notes |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in summary["summary"]:
        notes = []
        if row["time_limit_reached"]:
            notes.append(f"{row['time_limit_reached']} stopped by the time budget (score reached so far)")
        notes += row["not_finished"]
        t90 = f"{_seconds(row['seconds_to_90pct_of_best'])} ({row['reached_90pct_of_best']})"
        t95 = f"{_seconds(row['seconds_to_95pct_of_best'])} ({row['reached_95pct_of_best']})"
        lines.append(
            f"| {row['backbone']} | {row['recipe']} | {row['fraction']:g} | {row['seeds']}/{row['planned_seeds']} | "
            f"{_number(row['mean'])} | {_number(row['std'])} | {_number(row['min'])} | {_number(row['max'])} | "
            f"{_seconds(row['wall_seconds'])} | {_number(row['epochs'], 1)} | {_flops(row['train_flops'])} | "
            f"{t90} | {t95} | {'; '.join(notes)} |")
    lines += _test_lines(summary)
    lines += _versus_lines(summary)
    lines += ["", "Wall time includes reading the data, building the model and any feature caching; training "
              "FLOPs count forward and backward passes over the training set (a multiply-add is 2 FLOPs; a "
              "backward pass is 2x the forward FLOPs of trainable layers, 1x of frozen layers above the lowest "
              "trainable one); validation passes are not counted. \"s to 90% of best\": wall seconds until a "
              f"run's `{summary['monitor']}` first reached 90% of the best any recipe reached at that fraction "
              "(runs that reached it / runs).", "",
              "Plots: `accuracy_vs_fraction.png`, `accuracy_vs_time.png`, `accuracy_vs_flops.png`.", ""]
    return "\n".join(lines)


def _test_lines(summary: dict[str, Any]) -> list[str]:
    """The config's test split, scored once per run with the weights validation chose."""
    rows = [row for row in summary["summary"] if (row.get("test") or {}).get(summary["score"])]
    if not rows:
        return []
    extra = sorted({key for row in rows for key in row["test"]} & {"map50", "accuracy", "macro_f1"} - {summary["score"]})
    lines = ["", "## Test split", "", f"`{summary['score']}`" + "".join(f" and `{k}`" for k in extra)
             + " on the config's `data.test`, scored once per run; mean ± std over seeds.", "",
             "| backbone | recipe | fraction | " + " | ".join([summary["score"], *extra]) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in [summary["score"], *extra]) + " |"]
    for row in rows:
        cells = [f"{_number(row['test'][k]['mean'])} ± {_number(row['test'][k]['std'])}" if k in row["test"] else "-"
                 for k in [summary["score"], *extra]]
        lines.append(f"| {row['backbone']} | {row['recipe']} | {row['fraction']:g} | " + " | ".join(cells) + " |")
    return lines


def _versus_lines(summary: dict[str, Any]) -> list[str]:
    """Whether each transfer recipe beats the baseline (or scratch) at each fraction, and by how much."""
    versus = summary.get("versus_baseline") or []
    if not versus:
        return []
    lines = ["", "## Against the baseline", "",
             "Points ahead: the recipe's mean score minus the reference's at the same fraction, x100 (for a score "
             "where lower is better, the reference's minus the recipe's). Spread: both standard deviations over "
             "seeds, added in quadrature; \"ahead\" or \"behind\" only beyond it.", "",
             "| backbone | recipe | fraction | reference | score | reference score | points ahead | spread | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in versus:
        lines.append(f"| {row['backbone']} | {row['recipe']} | {row['fraction']:g} | {row['reference']} | "
                     f"{_number(row['score'])} | {_number(row['reference_score'])} | {row['points_ahead']:+.1f} | "
                     f"{row['spread_points']:.1f} | {row['verdict']} |")
    return lines


def plot_all(summary: dict[str, Any], output: Path) -> list[Path]:
    return [plot_vs_fraction(summary, output / "accuracy_vs_fraction.png"),
            plot_curves(summary, output / "accuracy_vs_time.png", "elapsed", "wall time (s)", log=False),
            plot_curves(summary, output / "accuracy_vs_flops.png", "train_flops", "training FLOPs", log=True)]


def _style(summary, backbone) -> str:
    backbones = list(dict.fromkeys(row["backbone"] for row in summary["summary"]))
    return BACKBONE_STYLES[backbones.index(backbone) % len(BACKBONE_STYLES)]


def _save(plt, fig, ax, path: Path) -> Path:
    """Legend (when anything is labelled), layout, and a small PNG written through a temporary file."""
    from transferkit.fileio import atomic_path

    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


def plot_vs_fraction(summary: dict[str, Any], path: Path) -> Path:
    """Mean score per recipe against the training-set fraction, with a band of ± one standard deviation."""
    from transferkit.reporting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = dict.fromkeys((row["backbone"], row["recipe"]) for row in summary["summary"])
    several = len({b for b, _ in keys}) > 1
    for backbone, recipe in keys:
        rows = sorted((r for r in summary["summary"] if r["backbone"] == backbone and r["recipe"] == recipe
                       and r["mean"] is not None), key=lambda r: r["fraction"])
        if not rows:
            continue
        x = [r["fraction"] for r in rows]
        mean = [r["mean"] for r in rows]
        std = [r["std"] or 0.0 for r in rows]
        colour = RECIPE_COLOURS.get(recipe)
        label = f"{recipe} ({backbone})" if several else recipe
        ax.plot(x, mean, _style(summary, backbone), marker="o", color=colour, label=label)
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=colour, alpha=0.15)
    ax.set_xscale("log")
    fractions = sorted({r["fraction"] for r in summary["summary"]})
    ax.set_xticks(fractions)
    ax.set_xticklabels([f"{f:g}" for f in fractions])
    ax.set_xlabel("fraction of the training set")
    ax.set_ylabel(f"validation {summary['score']}")
    ax.set_title("Score vs training data (band: ± 1 std over seeds)")
    return _save(plt, fig, ax, path)


def plot_curves(summary: dict[str, Any], path: Path, x_key: str, x_label: str, log: bool) -> Path:
    """Each run's validation score per epoch against wall time or training FLOPs, at the largest fraction."""
    from transferkit.reporting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    cells = [c for c in summary["cells"] if c.get("curve")]
    largest = max((c["fraction"] for c in cells), default=None)
    labelled = set()
    for cell in cells:
        if cell["fraction"] != largest:
            continue
        points = [(p[x_key], p["monitor"]) for p in cell["curve"]
                  if p.get(x_key) is not None and p["monitor"] is not None]
        if not points:
            continue
        key = (cell["backbone"], cell["recipe"])
        several = len({c["backbone"] for c in cells}) > 1
        label = None if key in labelled else (f"{cell['recipe']} ({cell['backbone']})" if several else cell["recipe"])
        labelled.add(key)
        ax.plot([p[0] for p in points], [p[1] for p in points], _style(summary, cell["backbone"]), marker=".",
                color=RECIPE_COLOURS.get(cell["recipe"]), alpha=0.8, label=label)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{summary['monitor']} (per epoch)")
    title = "Score vs " + ("wall time" if x_key == "elapsed" else "training compute")
    ax.set_title(title + (f" (fraction {largest:g}, one line per seed)" if largest is not None else ""), fontsize=10)
    return _save(plt, fig, ax, path)
