"""Frozen-backbone stage: the plain Keras recipe vs transferkit's feature cache.

    python benchmarks/frozen_stage.py ../shared/datasets/hymenoptera [--epochs 10]

Both ways train the same head (same initial weights, batch size, epochs,
learning rate and data order) on the same decoded images, with the imported
EfficientNet-Lite0 at 224 px:

- plain: the Keras guide's recipe, backbone frozen, `model.fit` on the whole
  model every epoch;
- cached: transferkit's path, backbone features computed once, the head
  trained on them.

Each way runs in its own process so that peak memory is its own. Prints a
table and writes JSON (default benchmarks/results/frozen_stage.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _config(dataset: Path, args):
    from transferkit.config import build_run_config

    return build_run_config({
        "task": "image_classification",
        "data": {"train": str(dataset / "train"), "val": str(dataset / "val"),
                 "image_size": [args.image_size, args.image_size], "batch_size": args.batch_size},
        "backbone": {"preset": args.preset},
        "stages": [{"name": "head", "freeze": {"backbone": True}, "epochs": args.epochs,
                    "learning_rate": args.learning_rate}],
        "training": {"seed": 0, "verbose": 0, "tensorboard": False},
    })


def run_one(mode: str, dataset: Path, args) -> dict:
    """Trains the frozen stage one way; returns per-epoch times and accuracies."""
    import keras

    from transferkit.models.feature_cache import FeatureCache
    from transferkit.models.freezing import apply_freeze_plan
    from transferkit.registry import get_task
    from transferkit.streaming import pipeline_options

    config = _config(dataset, args)
    keras.utils.set_random_seed(0)
    task = get_task(config.task)(config)
    options = pipeline_options(config.training.data_autotune)  # as the runner sets them, for both ways
    data = task.datasets().with_options(options)
    task.info = dict(data.info)
    backbone = task.load_backbone(config.backbone)
    full_model = task.build_model(backbone, task.info)
    apply_freeze_plan(backbone, config.stages[0].freeze)
    split = task.cache_split(full_model, backbone)  # after the freeze plan: the contract since issue 10
    epochs, times, accuracies = [], [], []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)
            accuracies.append(float(logs["val_accuracy"]))

    started = time.perf_counter()
    setup_seconds = 0.0
    if mode == "plain":
        model = full_model
        task.compile(model, keras.optimizers.Adam(args.learning_rate))
        model.fit(data.train, validation_data=data.val, epochs=args.epochs, callbacks=[Timer()], verbose=0,
                  shuffle=False)
    else:
        train_cache = FeatureCache.compute(split.extractor, data.train_plain)
        val_cache = FeatureCache.compute(split.extractor, data.val)
        setup_seconds = time.perf_counter() - started
        task.compile(split.trainable, keras.optimizers.Adam(args.learning_rate))
        split.trainable.fit(train_cache.dataset(args.batch_size, shuffle=True, seed=0).with_options(options),
                            validation_data=val_cache.dataset(args.batch_size).with_options(options),
                            epochs=args.epochs, callbacks=[Timer()], verbose=0, shuffle=False)
    total = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    elapsed, to_target = setup_seconds, None
    for seconds, accuracy in zip(times, accuracies):
        elapsed += seconds
        if to_target is None and accuracy >= args.target_accuracy:
            to_target = elapsed
    epochs = list(range(1, len(times) + 1))
    return {"mode": mode, "epochs": epochs, "epoch_seconds": times, "val_accuracy": accuracies,
            "setup_seconds": setup_seconds, "total_seconds": total, "seconds_to_target": to_target,
            "final_val_accuracy": accuracies[-1], "peak_rss_mib": peak_mib}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="image-folder dataset with train/ and val/ class folders")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--target-accuracy", type=float, default=0.90)
    parser.add_argument("--preset", default="efficientnet-lite0")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "frozen_stage.json")
    parser.add_argument("--mode", choices=["plain", "cached"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.dataset / "train").is_dir() or not (args.dataset / "val").is_dir():
        parser.error(f"{args.dataset}: expected train/ and val/ folders of class sub-folders")

    if args.mode:  # child process: one way, JSON on the last line
        print(json.dumps(run_one(args.mode, args.dataset, args)))
        return 0

    results = {}
    for mode in ("plain", "cached"):
        child = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--mode", mode],
                               capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return child.returncode
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    plain, cached = results["plain"], results["cached"]
    print(f"frozen stage, {args.epochs} epochs, {args.image_size}px, batch {args.batch_size}, "
          f"lr {args.learning_rate:g}, backbone {args.preset}, data {args.dataset}")
    print(f"{'':28}{'plain Keras':>14}{'transferkit':>14}")
    rows = [
        ("feature extraction (s)", plain["setup_seconds"], cached["setup_seconds"]),
        ("mean epoch (s)", sum(plain["epoch_seconds"]) / args.epochs, sum(cached["epoch_seconds"]) / args.epochs),
        ("total (s)", plain["total_seconds"], cached["total_seconds"]),
        (f"to val acc {args.target_accuracy:.2f} (s)", plain["seconds_to_target"], cached["seconds_to_target"]),
        ("final val accuracy", plain["final_val_accuracy"], cached["final_val_accuracy"]),
        ("peak RSS (MiB)", plain["peak_rss_mib"], cached["peak_rss_mib"]),
    ]
    for name, a, b in rows:
        fmt = (lambda v: "never" if v is None else f"{v:.4f}") if "accuracy" in name and "to val" not in name \
            else (lambda v: "never" if v is None else f"{v:.1f}")
        print(f"{name:28}{fmt(a):>14}{fmt(b):>14}")
    speedup = plain["total_seconds"] / cached["total_seconds"]
    gap = abs(plain["final_val_accuracy"] - cached["final_val_accuracy"]) * 100
    extraction_ratio = cached["setup_seconds"] / (sum(plain["epoch_seconds"]) / args.epochs)
    print(f"extraction / mean plain epoch: {extraction_ratio:.2f}x (target <= 1.0); "
          f"speed-up over {args.epochs} epochs: {speedup:.1f}x (target >= 8x); "
          f"final accuracy gap {gap:.2f} points (target <= 1)")
    print("epoch by epoch (val accuracy plain / cached):",
          ", ".join(f"{e}: {p:.3f}/{c:.3f}" for e, p, c in
                    zip(plain["epochs"], plain["val_accuracy"], cached["val_accuracy"])))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "plain": plain,
                                     "cached": cached, "speedup": speedup, "extraction_to_plain_epoch": extraction_ratio,
                                     "accuracy_gap_points": gap}, indent=2))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
