"""What a finished run says to its user: data, problems, stages, the score, and where everything is.

`run_summary(run_dir)` reads only the run folder's files (info.json,
problems.json, history.json, metrics.json, report/), so `train`, `evaluate`
and `transferkit show` print the same page for a run made today or a year ago.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

# Per-class rows are printed up to this many classes; beyond, the extremes are named.
MAX_CLASS_ROWS = 20


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def problem_kind(reason: str) -> str:
    """A problem's reason without its particulars (names, numbers, quoted values): what it has in common."""
    head = reason.split(":", 1)[0] if ":" in reason[:60] else reason
    head = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]", "…", head)
    head = re.sub(r"\d[\d,.]*", "N", head)
    return head.strip()[:70]


def _count(value: int) -> str:
    return f"{value:,}"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _data_lines(info: dict, metrics: dict) -> list[str]:
    parts = []
    for key, name in (("num_train", "train"), ("num_val", "val"), ("num_test", "test")):
        if isinstance(info.get(key), int):
            parts.append(f"{name} {_count(info[key])}")
    for key, name in (("num_train_boxes", "train boxes"), ("num_val_boxes", "val boxes")):
        if isinstance(info.get(key), int):
            parts.append(f"{name} {_count(info[key])}")
    classes = info.get("class_names") or []
    if classes:
        parts.append(f"{len(classes)} classes")
    return [f"data      {' · '.join(parts)}"] if parts else []


def _class_table(info: dict, metrics: dict) -> list[str]:
    classes = list(info.get("class_names") or [])
    per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
    train_counts = info.get("train_class_counts") or []
    if not classes or not (per_class or train_counts) or len(classes) > MAX_CLASS_ROWS:
        return []
    width = max(len("class"), *(len(c) for c in classes))
    metric_names = [k for k in ("precision", "recall", "f1", "ap", "ap50") if any(
        isinstance(per_class.get(c), dict) and k in per_class[c] for c in classes)]
    header = f"  {'class':<{width}}  {'train':>7}  {'val':>6}" + "".join(f"  {m:>9}" for m in metric_names)
    lines = [header]
    for i, name in enumerate(classes):
        row = per_class.get(name, {}) if isinstance(per_class.get(name), dict) else {}
        train = _count(train_counts[i]) if i < len(train_counts) else "-"
        val = _count(row["support"]) if "support" in row else "-"
        values = "".join(f"  {row[m]:>9.3f}" if isinstance(row.get(m), (int, float)) else f"  {'-':>9}"
                         for m in metric_names)
        lines.append(f"  {name:<{width}}  {train:>7}  {val:>6}{values}")
    return lines


def _problem_lines(problems: list, listed_in: Path) -> list[str]:
    if not problems:
        return ["problems  none"]
    kinds = Counter(problem_kind(str(p.get("reason", ""))) for p in problems if isinstance(p, dict))
    shown = " · ".join(f"{kind} ×{_count(n)}" for kind, n in kinds.most_common(4))
    more = f" · {len(kinds) - 4} more kinds" if len(kinds) > 4 else ""
    return [f"problems  {_count(len(problems))} inputs skipped or repaired, listed in {listed_in}",
            f"          {shown}{more}"]


def _stage_lines(history: list) -> list[str]:
    """Each stage's epochs and wall time (from the run's elapsed clock: data reading and feature caching count)."""
    stages: dict[str, dict[str, Any]] = {}
    previous_end = 0.0
    for row in history:
        stage = stages.setdefault(str(row.get("stage", "?")), {"epochs": 0, "start": previous_end, "end": previous_end,
                                                                "cached": False})
        stage["epochs"] += 1
        elapsed = row.get("elapsed")
        if isinstance(elapsed, (int, float)):
            stage["end"] = previous_end = float(elapsed)
        stage["cached"] = stage["cached"] or bool(row.get("feature_cache"))
    parts = [f"{name} {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''} {_seconds(s['end'] - s['start'])}"
             + (" (cached features)" if s["cached"] else "") for name, s in stages.items()]
    return [f"stages    {' · '.join(parts)}"] if parts else []


def _scores(metrics: dict) -> dict[str, float]:
    skip = {"num_examples", "best_epoch", "elapsed_seconds", "time_limit_reached"}
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip}


def run_summary(run_dir: str | Path, metrics_dir: str | Path | None = None) -> str:
    """The run's summary page; `metrics_dir` is an evaluation folder of the run (`evaluate --data`)."""
    run_dir = Path(run_dir)
    folder = Path(metrics_dir) if metrics_dir is not None else run_dir
    info = _read(run_dir / "info.json") or {}
    metrics = _read(folder / "metrics.json") or {}
    history = _read(run_dir / "history.json") or []
    problems = metrics.get("problems") if isinstance(metrics.get("problems"), list) else (
        _read(run_dir / "problems.json") or [])
    backbone = Path(str(info.get("backbone", "?"))).name
    lines = [f"{info.get('task', 'run')} on {backbone}: {run_dir}"]
    lines += _data_lines(info, metrics)
    lines += _class_table(info, metrics)
    lines += _problem_lines(problems, folder / "metrics.json" if metrics_dir else run_dir / "problems.json")
    lines += _stage_lines(history)
    scores = _scores(metrics)
    if scores:
        evaluated = metrics.get("num_examples")
        where = f" on {_count(evaluated)} {'validation' if metrics_dir is None else 'evaluation'} examples" \
            if isinstance(evaluated, int) else ""
        lines.append(f"result    {' · '.join(f'{k} {v:.4f}' for k, v in scores.items())}{where}")
        if isinstance(metrics.get("test"), dict):
            test = metrics["test"]
            count = f" on {_count(test['num_examples'])} test examples" if isinstance(test.get("num_examples"), int) else ""
            lines.append(f"test      {' · '.join(f'{k} {v:.4f}' for k, v in _scores(test).items())}{count}"
                         f" (report in {folder / 'test' / 'report'})")
    skipped = metrics.get("skipped_in_evaluation") or []
    if skipped:
        lines.append(f"          {len(skipped)} validation inputs did not decode; listed in metrics.json")
    figures = sorted((folder / "report").glob("*.png")) + sorted((folder / "report").glob("*.md"))
    if figures:
        lines.append(f"report    {', '.join(str(p) for p in figures)}")
    if (run_dir / "logs").is_dir():
        lines.append(f"logs      tensorboard --logdir {run_dir / 'logs'}")
    lines.append(_closing_line(run_dir, info, metrics, scores, folder))
    return "\n".join(lines)


def _closing_line(run_dir: Path, info: dict, metrics: dict, scores: dict, folder: Path) -> str:
    # The score `compare` reports for each task (Task.score): mAP for detection, accuracy for classifiers.
    name = next((k for k in ("map", "accuracy", "loss") if k in scores), next(iter(scores), None))
    score = f"{name} {scores[name]:.4f}" if name in scores else "no score"
    elapsed = metrics.get("elapsed_seconds")
    took = f" in {_seconds(float(elapsed))}" if isinstance(elapsed, (int, float)) else ""
    best = f", best epoch {metrics['best_epoch']}" if isinstance(metrics.get("best_epoch"), int) else ""
    return f"done: {score}{took}{best}; model {run_dir / 'model.keras'}, metrics {folder / 'metrics.json'}"
