"""Object detection on a real dataset: test mAP by training minute, serving latency, SavedModel size.

    python benchmarks/detection.py ../shared/datasets/raccoon [--config benchmarks/configs/raccoon.yaml]

Trains the config (by default `benchmarks/configs/raccoon.yaml`: the CSV's
train/test split, imported EfficientNet-Lite0, 320 px) with transferkit's
runner, and every `--eval-every` seconds of training evaluates COCO mAP on
the test split (the clock stops while it evaluates). Then exports the run
and times the SavedModel's `serving_default` (encoded JPEG bytes in,
detections out) at batch 1 and 8. Prints a table and writes JSON (default
benchmarks/results/detection.json). Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


class MapByMinute:
    """A Keras callback that evaluates test mAP every `every` seconds of training time."""

    def __init__(self, every: float, report_dir: Path):
        import keras

        outer = self
        self.every, self.report_dir = every, report_dir
        self.points: list[dict] = []
        self.training_seconds = 0.0
        self.started = None
        self.next_eval = every

        class Callback(keras.callbacks.Callback):
            def bind_run(self, full_model, task, data):
                outer.full_model, outer.task, outer.data = full_model, task, data
                outer.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.tick(final=False)

        self.callback = Callback()

    def tick(self, final: bool) -> None:
        now = time.perf_counter()
        self.training_seconds += now - self.started
        if final or self.training_seconds >= self.next_eval:
            from transferkit.runner import evaluate_split

            # The test split, never the validation split that picks the best epoch.
            metrics = evaluate_split(self.task, self.full_model, self.task.info, self.task.data_section().test,
                                     self.report_dir)
            self.points.append({"training_seconds": round(self.training_seconds, 1), "map50": metrics["map50"],
                                "map": metrics["map"]})
            print(f"  {self.training_seconds / 60:5.2f} min: mAP@0.5 {metrics['map50']:.3f}  "
                  f"mAP@[.5:.95] {metrics['map']:.3f}", flush=True)
            while self.next_eval <= self.training_seconds:
                self.next_eval += self.every
        self.started = time.perf_counter()  # evaluation time is not training time


def latency(saved_dir: Path, images: list[bytes], batch: int, repeats: int) -> dict:
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_dir)).signatures["serving_default"]
    batch_images = tf.constant((images * batch)[:batch])
    for _ in range(3):
        serve(images=batch_images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        serve(images=batch_images)
        times.append((time.perf_counter() - start) * 1000)
    return {"batch": batch, "p50_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
            "per_image_ms": statistics.median(times) / batch}


def frozen_stage_epochs(config, output: Path, epochs: int) -> dict:
    """The first (frozen) stage alone, with and without the pyramid feature cache: seconds per epoch."""
    import dataclasses

    from transferkit.runner import train

    stage = dataclasses.replace(config.stages[0], epochs=epochs)
    result = {}
    for mode in ("memory", "off"):
        run_config = config.replace(stages=(stage,),
                                    training=dataclasses.replace(config.training, feature_cache=mode))
        started = time.perf_counter()
        run_dir = train(run_config, output / f"frozen-{mode}")
        total = time.perf_counter() - started
        history = json.loads((run_dir / "history.json").read_text())
        seconds = [row["seconds"] for row in history]
        # The first epoch pays for tracing; the rest are the steady state.
        result[mode] = {"epoch_seconds": seconds, "steady_epoch_seconds": statistics.median(seconds[1:]),
                        "run_seconds": total}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="the raccoon folder (train_labels.csv, test_labels.csv, images/)")
    parser.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "configs" / "raccoon.yaml")
    parser.add_argument("--eval-every", type=float, default=20.0, help="seconds of training between evaluations")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench-detection")
    parser.add_argument("--cache-epochs", type=int, default=4,
                        help="epochs of the frozen stage timed with and without the feature cache (0: skip)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "detection.json")
    args = parser.parse_args(argv)
    if not (args.dataset / "train_labels.csv").is_file():
        parser.error(f"{args.dataset}: expected train_labels.csv, test_labels.csv and images/")

    from transferkit.config import load_config
    from transferkit.runner import train
    from transferkit.serving.export import export_run

    dataset = args.dataset.resolve()
    config = load_config(args.config, overrides=[f"data.train={dataset / 'train_labels.csv'}", "data.val=null",
                                                 f"data.test={dataset / 'test_labels.csv'}",
                                                 "training.verbose=0", "training.tensorboard=false"])
    if args.output.exists():
        shutil.rmtree(args.output)
    tracker = MapByMinute(args.eval_every, args.output / "bench-report")
    started = time.perf_counter()
    run_dir = train(config, args.output / "run", extra_callbacks=[tracker.callback])
    tracker.started = time.perf_counter()
    wall = time.perf_counter() - started
    final = json.loads((run_dir / "metrics.json").read_text())
    model_base = args.output / "models"
    version = export_run(run_dir, model_base, "raccoon")
    size_mb = sum(f.stat().st_size for f in version.rglob("*") if f.is_file()) / 1e6
    weights_mb = (run_dir / "best.weights.h5").stat().st_size / 1e6
    images = [p.read_bytes() for p in sorted((dataset / "images").glob("*.jpg"))[:8]]
    latencies = [latency(version, images, 1, 60), latency(version, images, 8, 15)]

    cache = frozen_stage_epochs(config, args.output, args.cache_epochs) if args.cache_epochs > 1 else None

    height, width = config.task_config.data.image_size
    print(f"\nobject detection, {dataset.name}, {config.backbone.preset}, {height}x{width}, "
          f"{final['num_images']} test images / {final['num_boxes']} boxes")
    print(f"{'training min':>12} {'mAP@0.5':>9} {'mAP@[.5:.95]':>13}")
    for point in tracker.points:
        print(f"{point['training_seconds'] / 60:12.2f} {point['map50']:9.3f} {point['map']:13.3f}")
    print(f"final (best weights, run's own evaluation): mAP@0.5 {final['map50']:.3f}, mAP@[.5:.95] {final['map']:.3f}, "
          f"mAP@0.75 {final['map75']:.3f}; wall time of the whole run {wall / 60:.2f} min")
    for row in latencies:
        print(f"serving_default, JPEG bytes in, detections out, batch {row['batch']}: p50 {row['p50_ms']:.1f} ms "
              f"({row['per_image_ms']:.1f} ms/image), p90 {row['p90_ms']:.1f} ms")
    print(f"SavedModel {size_mb:.1f} MB (best.weights.h5 {weights_mb:.1f} MB, with the optimizer state)")
    if cache:
        cached, full = cache["memory"], cache["off"]
        print(f"frozen stage, {args.cache_epochs} epochs: {cached['steady_epoch_seconds']:.2f} s/epoch on cached "
              f"pyramid features vs {full['steady_epoch_seconds']:.2f} s/epoch with full forward passes "
              f"({full['steady_epoch_seconds'] / cached['steady_epoch_seconds']:.1f}x); whole stage "
              f"{cached['run_seconds']:.1f} s vs {full['run_seconds']:.1f} s (data loading included)")
    within = [p for p in tracker.points if p["training_seconds"] <= 600]
    best = max(within, key=lambda p: p["map50"]) if within else None
    result = {"config": str(args.config), "dataset": str(dataset), "points": tracker.points, "final": {
        k: final[k] for k in ("map", "map50", "map75", "map_medium", "map_large", "num_images", "num_boxes")},
        "wall_seconds": wall, "latency": latencies, "frozen_stage_cache": cache, "saved_model_mb": size_mb, "weights_mb": weights_mb,
        "bars": {"map50_within_10_min": best["map50"] if best else None,
                 "map_within_10_min": max((p["map"] for p in within), default=None),
                 "p50_batch1_ms": latencies[0]["p50_ms"]}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
