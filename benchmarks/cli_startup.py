"""CLI start-up: the commands that need no model, against `import tensorflow` (issue 35, item 3).

Each light command (`--help`, `--version`, `tasks`, `config check --no-backbone`,
`show`, and argument, path and config errors of `config check`, `train`,
`evaluate`, `data pack` and `serve`) runs N times as `python -m transferkit ...`
in a fresh process; the baseline is one `python -c "import tensorflow"`. Printed:
the median wall time, its ratio to the baseline (target: under 0.2), the
largest peak RSS, and whether TensorFlow (or Keras, KerasHub, KerasCV) was
imported. Results in benchmarks/results/cli_startup.json (`--json`).

    python benchmarks/cli_startup.py [--repeats 3] [--json PATH]

The inputs (configs, a run folder, a bad batching parameters file) are written
to a temporary folder; TRANSFERKIT_HOME points into it too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "cli_startup.json"
HEAVY = ("tensorflow", "keras", "keras_hub", "keras_cv")
TARGET_RATIO = 0.2

# `python -m transferkit ARGS`, and at exit one line on stderr naming the heavy modules that were imported.
WRAPPER = (
    "import atexit, runpy, sys\n"
    f"atexit.register(lambda: print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), "
    "file=sys.stderr, flush=True))\n"
    "sys.argv = ['transferkit', *sys.argv[1:]]\n"
    "runpy.run_module('transferkit', run_name='__main__', alter_sys=True)\n"
)


def _inputs(root: Path) -> dict[str, Path]:
    """A valid tiny config, a config with a misspelt key, a fake finished run, a bad batching file."""
    import yaml

    from transferkit.testing import tiny_vision_config

    good = tiny_vision_config("image_classification", root / "images")
    (root / "good.yaml").write_text(yaml.safe_dump(good))
    (root / "unknown_key.yaml").write_text(yaml.safe_dump({**good, "data": {**good["data"], "bach_size": 2}}))
    run = root / "run"
    run.mkdir()
    (run / "info.json").write_text(json.dumps({"task": "image_classification", "backbone": "b",
                                               "class_names": ["a", "b"], "num_train": 4, "num_val": 2}))
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "num_examples": 2, "elapsed_seconds": 3.0}))
    (root / "models").mkdir()
    (root / "batching.txt").write_text("max_batch_size { value: 8 }\nnot_a_field { value: 1 }\n")
    (root / "home").mkdir()
    return {"root": root}


def _commands(root: Path) -> list[tuple[str, list[str], int]]:
    """(label, CLI arguments, expected exit code)."""
    r = str(root)
    return [
        ("--help", ["--help"], 0),
        ("--version", ["--version"], 0),
        ("tasks", ["tasks"], 0),
        ("config check --no-backbone (valid)", ["config", "check", f"{r}/good.yaml", "--no-backbone"], 0),
        ("config check (unknown key)", ["config", "check", f"{r}/unknown_key.yaml"], 2),
        ("config check (missing file)", ["config", "check", f"{r}/missing.yaml"], 2),
        ("show RUN", ["show", f"{r}/run"], 0),
        ("train (unknown key)", ["train", f"{r}/unknown_key.yaml", "-o", f"{r}/out"], 2),
        ("evaluate (not a run)", ["evaluate", f"{r}/images"], 2),
        ("data pack (missing source)", ["data", "pack", f"{r}/images", f"{r}/pack"], 2),
        ("serve (bad parameters file)", ["serve", "--model-base", f"{r}/models", "--batching-parameters-file",
                                         f"{r}/batching.txt"], 2),
    ]


def _run(command: list[str], env: dict[str, str], cwd: Path) -> dict:
    """One process: wall seconds, peak RSS (MB), exit code, the heavy modules it imported, stderr."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:  # no pipe to fill
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out_file, stderr=err_file, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(errors="replace"), err_file.read().decode(errors="replace")
    heavy = [line[len("HEAVY="):] for line in err.splitlines() if line.startswith("HEAVY=")]
    return {"seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "code": child.returncode,
            "heavy": [m for m in (heavy[-1].split(",") if heavy else []) if m], "stdout": out,
            "stderr": "\n".join(line for line in err.splitlines() if not line.startswith("HEAVY="))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", "-n", type=int, default=3, help="runs per command (default 3)")
    parser.add_argument("--json", "--out", dest="json", type=Path, default=RESULTS,
                        help=f"results file (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cli_startup_") as scratch:
        root = Path(scratch)
        _inputs(root)
        env = {**os.environ, "TRANSFERKIT_HOME": str(root / "home")}
        baseline = _run([sys.executable, "-c", "import tensorflow"], env, root)
        rows = []
        for label, cli_args, expected in _commands(root):
            runs = [_run([sys.executable, "-c", WRAPPER, *cli_args], env, root) for _ in range(args.repeats)]
            last = runs[-1]
            if last["code"] != expected:
                print(f"{label}: exit {last['code']}, expected {expected}\n{last['stderr'][-2000:]}", file=sys.stderr)
            median = statistics.median(r["seconds"] for r in runs)
            rows.append({"command": label, "argv": ["transferkit", *[a.replace(scratch, "$TMP") for a in cli_args]],
                         "median_seconds": round(median, 3), "seconds": [round(r["seconds"], 3) for r in runs],
                         "ratio_to_import_tensorflow": round(median / baseline["seconds"], 3),
                         "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
                         "exit_code": last["code"], "expected_exit_code": expected,
                         "heavy_imported": sorted({m for r in runs for m in r["heavy"]}),
                         "stderr_lines": len(last["stderr"].splitlines())})

    width = max(len(r["command"]) for r in rows + [{"command": "import tensorflow"}])
    print(f"{'COMMAND':<{width}}  {'MEDIAN S':>8}  {'RATIO':>6}  {'RSS MB':>7}  TENSORFLOW IMPORTED")
    print(f"{'import tensorflow':<{width}}  {baseline['seconds']:>8.3f}  {1:>6.3f}  {baseline['peak_rss_mb']:>7.1f}  "
          f"yes (baseline, once)")
    for r in rows:
        imported = "yes (" + ", ".join(r["heavy_imported"]) + ")" if r["heavy_imported"] else "no"
        print(f"{r['command']:<{width}}  {r['median_seconds']:>8.3f}  {r['ratio_to_import_tensorflow']:>6.3f}  "
              f"{r['peak_rss_mb']:>7.1f}  {imported}")
    over = [r["command"] for r in rows if r["ratio_to_import_tensorflow"] >= TARGET_RATIO or r["heavy_imported"]
            or r["exit_code"] != r["expected_exit_code"]]
    print(f"target: every command under {TARGET_RATIO} of `import tensorflow`, without it: "
          + ("met" if not over else "missed by " + "; ".join(over)))

    results = {"repeats": args.repeats, "cpus": os.cpu_count(), "python": platform.python_version(),
               "import_tensorflow": {"seconds": round(baseline["seconds"], 3),
                                     "peak_rss_mb": round(baseline["peak_rss_mb"], 1)},
               "target_ratio": TARGET_RATIO, "target_met": not over, "commands": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.json}")
    return 0 if not over else 1


if __name__ == "__main__":
    raise SystemExit(main())
