"""What a finished run says to its user: data, problems, stages, the score, and where everything is.

`run_summary(run_dir)` reads only the run folder's files (info.json,
problems.json, history.json, metrics.json, report/), so `train`, `evaluate`
and `transferkit show` print the same page for a run made today or a year ago.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

# Per-class rows are printed up to this many classes; beyond, the extremes are named.
MAX_CLASS_ROWS = 20


# A run's own JSON files are small; one larger than this is not read (a summary must not hang on it).
MAX_JSON_BYTES = 64 << 20
# Longer class names are cut in the table (labels.txt keeps them whole).
NAME_WIDTH = 40
MAX_SECONDS = 10 * 365 * 86400  # a longer time is a damaged value


def _read(path: Path, expected: type, notes: list[str]) -> Any:
    """The file's JSON value when it has the `expected` type; otherwise None, and a note of why when the
    file exists (damaged, too large, another type): a summary says what it could not read."""
    if not path.exists():
        return None
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            notes.append(f"{path.name}: larger than {MAX_JSON_BYTES >> 20} MB; not read")
            return None
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        notes.append(f"{path.name}: damaged ({type(error).__name__}); not read")
        return None
    if not isinstance(value, expected):
        notes.append(f"{path.name}: expected a JSON {'object' if expected is dict else 'list'}, found "
                     f"{type(value).__name__}; not read")
        return None
    return value


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 12 else None


def _name(value) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= NAME_WIDTH else text[:NAME_WIDTH - 1] + "…"


def problem_kind(reason: str) -> str:
    """A problem's reason without its particulars (names, numbers, quoted values): what it has in common."""
    head = reason.split(":", 1)[0] if ":" in reason[:60] else reason
    head = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]", "…", head)
    head = re.sub(r"\d[\d,.]*", "N", head)
    head = head.strip()[:70]
    return re.sub(r"\s*\([^)]*$", "", head).strip() or head  # a parenthesis the cut (or the split) left open


def _count(value: int) -> str:
    return f"{value:,}"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _data_lines(info: dict, metrics: dict) -> list[str]:
    parts = []
    for key, name in (("num_train", "train"), ("num_val", "val"), ("num_test", "test"),
                      ("num_train_boxes", "train boxes"), ("num_val_boxes", "val boxes")):
        if _count_or_none(info.get(key)) is not None:
            parts.append(f"{name} {_count(info[key])}")
    classes = _class_names(info)
    if classes:
        parts.append(f"{len(classes)} classes")
    return [f"data      {' · '.join(parts)}"] if parts else []


def _class_names(info: dict) -> list[str]:
    names = info.get("class_names")
    return [str(n) for n in names] if isinstance(names, list) else []


def _class_table(info: dict, metrics: dict) -> list[str]:
    classes = _class_names(info)
    per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
    counts = info.get("train_class_counts")
    train_counts = counts if isinstance(counts, list) and all(_count_or_none(c) is not None for c in counts) else []
    if not classes or not (per_class or train_counts) or len(classes) > MAX_CLASS_ROWS:
        return []
    width = max(len("class"), *(len(_name(c)) for c in classes))
    metric_names = [k for k in ("precision", "recall", "f1", "ap", "ap50") if any(
        isinstance(per_class.get(c), dict) and k in per_class[c] for c in classes)]
    header = f"  {'class':<{width}}  {'train':>7}  {'val':>6}" + "".join(f"  {m:>9}" for m in metric_names)
    lines = [header]
    for i, name in enumerate(classes):
        row = per_class.get(name, {}) if isinstance(per_class.get(name), dict) else {}
        train = _count(train_counts[i]) if i < len(train_counts) else "-"
        val = _count(row["support"]) if _count_or_none(row.get("support")) is not None else "-"
        values = "".join(f"  {row[m]:>9.3f}" if _finite(row.get(m)) else f"  {'-':>9}" for m in metric_names)
        lines.append(f"  {_name(name):<{width}}  {train:>7}  {val:>6}{values}")
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
        if not isinstance(row, dict):
            continue
        stage = stages.setdefault(_name(row.get("stage", "?")), {"epochs": 0, "start": previous_end, "end": previous_end,
                                                                "cached": False})
        stage["epochs"] += 1
        elapsed = row.get("elapsed")
        if _finite(elapsed) and 0 <= elapsed < MAX_SECONDS:
            stage["end"] = previous_end = float(elapsed)
        stage["cached"] = stage["cached"] or bool(row.get("feature_cache"))
    parts = [f"{name} {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''} {_seconds(s['end'] - s['start'])}"
             + (" (cached features)" if s["cached"] else "") for name, s in stages.items()]
    return [f"stages    {' · '.join(parts)}"] if parts else []


def _scores(metrics: dict) -> dict[str, float]:
    """The figures of merit: finite numbers that are not counts, and not COCO's -1 for "no such boxes"."""
    skip = {"num_examples", "best_epoch", "elapsed_seconds", "time_limit_reached"}
    return {_name(k): float(v) for k, v in metrics.items()
            if _finite(v) and k not in skip and not str(k).startswith("num_") and not (v == -1 and k.startswith("ma"))}


def _counted(metrics: dict, examples: str) -> str:
    """" on 24 images, 25 boxes": what a metrics record counted (`num_examples` named `examples`), as integers."""
    parts = [f"{_count(int(v))} {examples if k == 'num_examples' else _name(k[4:]).replace('_', ' ')}"
             for k, v in metrics.items()
             if str(k).startswith("num_") and _finite(v) and float(v).is_integer() and 0 <= v < 10 ** 12]
    return f" on {', '.join(parts)}" if parts else ""


def _figures(scores: dict[str, float], chosen=None) -> str:
    """The figures, or only those the task chose (info.json `summary_figures`) that are there, in its order."""
    if isinstance(chosen, list) and any(name in scores for name in chosen):
        scores = {name: scores[name] for name in chosen if name in scores}
    return " · ".join(f"{k} {v:.4f}" for k, v in scores.items())


def run_summary(run_dir: str | Path, metrics_dir: str | Path | None = None) -> str:
    """The run's summary page; `metrics_dir` is an evaluation folder of the run (`evaluate --data`)."""
    run_dir = Path(run_dir)
    folder = Path(metrics_dir) if metrics_dir is not None else run_dir
    notes: list[str] = []
    info = _read(run_dir / "info.json", dict, notes) or {}
    metrics = _read(folder / "metrics.json", dict, notes) or {}
    history = _read(run_dir / "history.json", list, notes) or []
    problems = metrics.get("problems") if isinstance(metrics.get("problems"), list) else (
        _read(run_dir / "problems.json", list, notes) or [])
    backbone = _name(Path(str(info.get("backbone", "?"))).name)
    lines = [f"{_name(info.get('task', 'run'))} on {backbone}: {run_dir}"]
    lines += [f"unread    {note}" for note in notes]
    lines += _data_lines(info, metrics)
    lines += _class_table(info, metrics)
    lines += _problem_lines(problems, folder / "metrics.json" if metrics_dir else run_dir / "problems.json")
    lines += _stage_lines(history)
    scores = _scores(metrics)
    if scores:
        examples = f"{'validation' if metrics_dir is None else 'evaluation'} examples"
        lines.append(f"result    {_figures(scores, info.get('summary_figures'))}{_counted(metrics, examples)}")
        if isinstance(metrics.get("test"), dict):
            test = metrics["test"]
            overlap = {name: _count_or_none(test.get(f"also_in_{name}")) for name in ("train", "val")}
            scores_shown = {k: v for k, v in _scores(test).items() if not k.startswith("also_in_")}
            lines.append(f"test      {_figures(scores_shown, info.get('summary_figures'))}"
                         f"{_counted(test, 'test examples')}"
                         f" (report in {folder / 'test' / 'report'})")
            if any(overlap.values()):
                parts = [f"{n:,} also in {'training' if k == 'train' else 'validation'}"
                         for k, n in overlap.items() if n]
                lines.append(f"          warning: {' and '.join(parts)}: the test score is not a held-out score")
    lines += _baseline_lines(metrics)
    skipped = metrics.get("skipped_in_evaluation")
    if isinstance(skipped, list) and skipped:
        lines.append(f"          {len(skipped)} validation inputs did not decode; listed in metrics.json")
    figures = sorted((folder / "report").glob("*.png")) + sorted((folder / "report").glob("*.md"))
    if figures:
        lines.append(f"report    {', '.join(str(p) for p in figures)}")
    lines += _preset_lines(run_dir, notes)
    if (run_dir / "logs").is_dir():
        lines.append(f"logs      tensorboard --logdir {run_dir / 'logs'}")
    lines.append(_closing_line(run_dir, info, metrics, scores, folder))
    return "\n".join(lines)


def _preset_lines(run_dir: Path, notes: list[str]) -> list[str]:
    """Where the run's fine-tuned backbone is, and whether it is the starting one (`backbone.preset: RUN`)."""
    facts = _read(run_dir / "backbone" / "transferkit.json", dict, notes)
    origin = facts.get("from_run") if isinstance(facts, dict) else None
    if not isinstance(origin, dict):
        return []
    stage = origin.get("unchanged_in_stage")
    if isinstance(stage, str):
        return [f"preset    {run_dir / 'backbone'}: the starting weights (best epoch in frozen stage {_name(stage)!r})"]
    return [f"preset    {run_dir / 'backbone'}: start another run from it with backbone.preset: {run_dir}"]


def _baseline_lines(metrics: dict) -> list[str]:
    """The baseline's score beside the run's (`Task.baseline`), or why it was not fitted."""
    baseline = metrics.get("baseline")
    if not isinstance(baseline, dict):
        return []
    if isinstance(baseline.get("skipped"), str):
        return [f"baseline  not fitted: {baseline['skipped'][:200]}"]
    if isinstance(baseline.get("error"), str):
        return [f"baseline  failed: {baseline['error'][:200]}"]
    name = metrics.get("score") if isinstance(metrics.get("score"), str) else None
    values = baseline.get("metrics") if isinstance(baseline.get("metrics"), dict) else {}
    if name is None or not _finite(values.get(name)) or not _finite(metrics.get(name)):
        return []
    ours, theirs = float(metrics[name]), float(values[name])
    verdict = "transfer is ahead" if ours > theirs else "the baseline is ahead" if theirs > ours else "a tie"
    if name == "loss":
        verdict = "transfer is ahead" if ours < theirs else "the baseline is ahead" if theirs < ours else "a tie"
    method = _name(baseline.get("method", "baseline"))
    return [f"baseline  {method}: {name} {theirs:.4f} ({verdict} by {abs(ours - theirs) * 100:.1f} points)"]


def _closing_line(run_dir: Path, info: dict, metrics: dict, scores: dict, folder: Path) -> str:
    # The score the task names (Task.score, recorded in metrics.json as "score"); runs from before it was
    # recorded: the first of mAP, accuracy, loss.
    named = metrics.get("score") if isinstance(metrics.get("score"), str) else None
    name = named if named in scores else next((k for k in ("map", "accuracy", "loss") if k in scores),
                                              next(iter(scores), None))
    score = f"{name} {scores[name]:.4f}" if name in scores else "no score"
    elapsed = metrics.get("elapsed_seconds")
    took = f" in {_seconds(float(elapsed))}" if _finite(elapsed) and 0 <= elapsed < MAX_SECONDS else ""
    best = f", best epoch {metrics['best_epoch']}" if _count_or_none(metrics.get("best_epoch")) is not None else ""
    return f"done: {score}{took}{best}; model {run_dir / 'model.keras'}, metrics {folder / 'metrics.json'}"
