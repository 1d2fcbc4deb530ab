"""Streaming input at scale: 20,000 generated 640x480 JPEGs (10 classes), against Keras' own loader.

Measured in one run (`python benchmarks/input_pipeline.py`; results in
benchmarks/results/input_pipeline.json and a printed table):

- images per second through decode + resize + augment alone, for
  transferkit's streaming pipeline (`data.cache: none`) and for
  `keras.utils.image_dataset_from_directory(...).cache().prefetch()` (its
  first, decoding epoch) with the same augmentation layers;
- peak RSS of a `transferkit train` process running one epoch of the frozen
  stage at 224 px (`data.cache: disk`), at 5,000 and at 20,000 images;
- time from `train()` to the end of the first training step at 20,000 images;
- one pass of the input pipeline with `data.cache: disk`: the first run
  (decode and write the cache) against the second (read it back).

The images are generated once (about 1.5 GB) under
$TRANSFERKIT_HOME/bench/jpeg_640x480 and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "input_pipeline.json"
CLASSES = 10
WIDTH, HEIGHT = 640, 480


def _draw(task):
    """One varied photo-like JPEG: a class-tinted gradient, random shapes and sensor-like noise."""
    from PIL import Image, ImageDraw

    path, class_index, seed = task
    rng = np.random.default_rng(seed)
    hue = np.array([(class_index * 37) % 256, (class_index * 91) % 256, (class_index * 53) % 256], np.float32)
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)[None, :, None]
    base = hue * (0.5 + 0.5 * y) + rng.uniform(0, 80, 3).astype(np.float32) * x
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, WIDTH - 40)), int(rng.integers(0, HEIGHT - 40))
        w, h = int(rng.integers(20, 240)), int(rng.integers(20, 240))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if (class_index + _) % 2 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
    pixels = np.asarray(image, np.int16) + rng.normal(0, 6, (HEIGHT, WIDTH, 3)).astype(np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def generate(root: Path, count: int) -> Path:
    marker = root / f"complete-{count}.json"
    if marker.exists():
        return root
    tasks = []
    for i in range(count):
        class_index = i % CLASSES
        folder = root / f"class_{class_index}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.jpg"
        if not path.exists():
            tasks.append((str(path), class_index, i))
    print(f"generating {len(tasks)} JPEGs under {root} ...", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_draw, tasks, chunksize=64))
    marker.write_text(json.dumps({"count": count, "seconds": time.perf_counter() - started}))
    return root


def subset_csv(root: Path, count: int, directory: Path) -> Path:
    """A path,label CSV of the first `count` images (balanced over the classes)."""
    rows = ["path,label"]
    for i in range(count):
        rows.append(f"{root}/class_{i % CLASSES}/{i:06d}.jpg,class_{i % CLASSES}")
    path = directory / f"subset_{count}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


AUGMENT = {"flip": "horizontal", "zoom": 0.1}


def throughput(root: Path, count: int, batch_size: int = 32) -> dict:
    """Images per second of one epoch of decode + resize + augment, ours and the Keras anchor."""
    import keras
    import tensorflow as tf

    from transferkit.config import build_run_config
    from transferkit.registry import get_task
    from transferkit.streaming import pipeline_options

    config = build_run_config({"task": "image_classification",
                               "data": {"train": str(root), "val_split": 0.01, "image_size": [224, 224],
                                        "batch_size": batch_size, "cache": "none"},
                               "augment": AUGMENT})
    task = get_task("image_classification")(config)
    # Both pipelines read the files from the page cache: a cold first reader would pay the disk for both.
    for path in sorted(root.rglob("*.jpg")):
        path.read_bytes()
    started = time.perf_counter()
    data = task.datasets().with_options(pipeline_options(config.training.data_autotune))  # as a run sets them
    listing = time.perf_counter() - started
    images = 0
    started = time.perf_counter()
    for batch in data.train:
        images += int(batch[0].shape[0])
    ours = images / (time.perf_counter() - started)

    layers = [keras.layers.RandomFlip("horizontal", seed=0), keras.layers.RandomZoom(0.1, seed=0)]

    def augment(x, y):
        for layer in layers:
            x = layer(x, training=True)
        return x, y

    started = time.perf_counter()
    anchor_ds = keras.utils.image_dataset_from_directory(str(root), image_size=(224, 224), batch_size=batch_size,
                                                         shuffle=True, seed=0, validation_split=0.01,
                                                         subset="training")
    anchor_listing = time.perf_counter() - started
    anchor_ds = anchor_ds.cache().prefetch(tf.data.AUTOTUNE).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    seen = 0
    started = time.perf_counter()
    for batch in anchor_ds:
        seen += int(batch[0].shape[0])
    anchor = seen / (time.perf_counter() - started)
    return {"images": images, "transferkit_images_per_second": round(ours, 1),
            "transferkit_listing_and_header_check_seconds": round(listing, 2),
            "anchor_images": seen, "anchor_images_per_second": round(anchor, 1),
            "anchor_listing_seconds": round(anchor_listing, 2)}


CHILD = textwrap.dedent("""
    import json, sys, time
    started = time.perf_counter()
    import keras
    from transferkit.config import build_run_config
    from transferkit.runner import train
    spec = json.loads(sys.argv[1])
    first = {}

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            first.setdefault("seconds", time.perf_counter() - started)
            first.setdefault("from_train", time.perf_counter() - called)

    config = build_run_config(spec["config"])
    called = time.perf_counter()
    train(config, spec["run_dir"], resume=False, extra_callbacks=[FirstStep()],
          time_limit=spec.get("time_limit"))
    # VmHWM: this process's own peak resident set (getrusage's maxrss survives exec, so it would
    # report the parent's peak).
    status = open("/proc/self/status").read()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    print(json.dumps({"peak_rss_mb": round(peak_kib / 1024, 1), "first_step_seconds": first.get("seconds"),
                      "first_step_seconds_from_train_call": first.get("from_train"),
                      "total_seconds": round(time.perf_counter() - started, 1)}))
""")


def run_child(config: dict, run_dir: Path, time_limit: float | None = None) -> dict:
    spec = {"config": config, "run_dir": str(run_dir), "time_limit": time_limit}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env,
                         cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"child failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def frozen_epoch_config(train_csv: Path, val_csv: Path, cache_dir: Path, feature_cache: str = "memory",
                        feature_cache_memory_mb: int = 1024) -> dict:
    return {"task": "image_classification",
            "data": {"train": str(train_csv), "val": str(val_csv), "image_size": [224, 224], "batch_size": 32,
                     "cache": "disk", "cache_dir": str(cache_dir)},
            "backbone": {"preset": "efficientnet-lite0"},
            "stages": [{"name": "head", "freeze": {"backbone": True}, "epochs": 1, "learning_rate": 1e-3}],
            "training": {"verbose": 0, "tensorboard": False, "feature_cache": feature_cache,
                         "feature_cache_memory_mb": feature_cache_memory_mb}}


def disk_cache_passes(train_csv: Path, cache_dir: Path) -> dict:
    """One pass of the streamed input with a fresh disk cache, then a second pass of a new pipeline."""
    from transferkit.config import build_run_config
    from transferkit.registry import get_task

    config = build_run_config({"task": "image_classification",
                               "data": {"train": str(train_csv), "val_split": 0.01, "image_size": [224, 224],
                                        "batch_size": 32, "cache": "disk", "cache_dir": str(cache_dir)}})
    seconds = []
    for _ in range(2):
        data = get_task("image_classification")(config).datasets()
        started = time.perf_counter()
        for _batch in data.train_plain:
            pass
        seconds.append(time.perf_counter() - started)
    return {"first_run_seconds": round(seconds[0], 1), "second_run_seconds": round(seconds[1], 1),
            "ratio": round(seconds[1] / seconds[0], 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--root", default=None, help="where the JPEGs are generated (default: under TRANSFERKIT_HOME)")
    parser.add_argument("--throughput-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from transferkit import paths

    root = Path(args.root) if args.root else paths.home() / "bench" / "jpeg_640x480"
    if args.throughput_only:  # the anchor caches 12 GB of float32 pixels: measured in its own process
        print(json.dumps(throughput(root, args.count)))
        return 0
    generate(root, args.count)
    results: dict = {"images": args.count, "size": f"{WIDTH}x{HEIGHT}", "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="tk-input-") as scratch:
        scratch = Path(scratch)
        print("throughput ...", flush=True)
        results["throughput"] = json.loads(subprocess.run(
            [sys.executable, __file__, "--throughput-only", "--root", str(root), "--count", str(args.count)],
            capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        ).stdout.strip().splitlines()[-1])
        val_csv = scratch / "val.csv"
        val_rows = ["path,label"] + [f"{root}/class_{i % CLASSES}/{i:06d}.jpg,class_{i % CLASSES}"
                                     for i in range(args.count - 500, args.count)]
        val_csv.write_text("\n".join(val_rows) + "\n")
        results["frozen_epoch"] = {}
        for count in (args.small, args.count - 500):
            print(f"frozen stage, one epoch, {count} images ...", flush=True)
            train_csv = subset_csv(root, count, scratch)
            measured = run_child(frozen_epoch_config(train_csv, val_csv, scratch / f"cache-{count}"),
                                 scratch / f"run-{count}")
            results["frozen_epoch"][str(count)] = measured
        # The same with features spilled to disk beyond 16 MB (training.feature_cache: auto), as a dataset
        # whose features outgrow the default 1,024 MB would: memory no longer grows with the images.
        results["frozen_epoch_spilled"] = {}
        for count in (args.small, args.count - 500):
            print(f"frozen stage, one epoch, {count} images, features spilled beyond 16 MB ...", flush=True)
            train_csv = subset_csv(root, count, scratch)
            results["frozen_epoch_spilled"][str(count)] = run_child(
                frozen_epoch_config(train_csv, val_csv, scratch / f"cache-{count}", feature_cache="auto",
                                    feature_cache_memory_mb=16), scratch / f"run-spilled-{count}")
        print("time to the first training step ...", flush=True)
        train_csv = subset_csv(root, args.count - 500, scratch)
        results["first_step"] = run_child(frozen_epoch_config(train_csv, val_csv, scratch / "cache-first",
                                                              feature_cache="off"),
                                          scratch / "run-first", time_limit=1e-3)
        print("disk cache, two runs ...", flush=True)
        results["disk_cache"] = disk_cache_passes(subset_csv(root, args.count, scratch), scratch / "cache-passes")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    t = results["throughput"]
    small, large = (results["frozen_epoch"][k] for k in results["frozen_epoch"])
    spilled_small, spilled_large = (results["frozen_epoch_spilled"][k] for k in results["frozen_epoch_spilled"])
    rows = [
        ("decode + resize + augment, images/s", f"{t['transferkit_images_per_second']}",
         f"{t['anchor_images_per_second']} (anchor)", ">= anchor"),
        (f"peak RSS, frozen epoch, {args.small} / {args.count - 500} images (MB)",
         f"{small['peak_rss_mb']} / {large['peak_rss_mb']}", "features in memory (up to 1,024 MB)",
         "<= 2500, flat"),
        ("peak RSS, frozen epoch, features spilled beyond 16 MB (MB)",
         f"{spilled_small['peak_rss_mb']} / {spilled_large['peak_rss_mb']}", "training.feature_cache_memory_mb: 16",
         "<= 2500, flat"),
        (f"time to first step, {args.count - 500} images (s)",
         f"{results['first_step']['first_step_seconds_from_train_call']:.1f}",
         f"{results['first_step']['first_step_seconds']:.1f} from process start (imports included)", "<= 10"),
        ("disk cache: second run / first run", f"{results['disk_cache']['ratio']}",
         f"{results['disk_cache']['second_run_seconds']} s / {results['disk_cache']['first_run_seconds']} s",
         "<= 0.5"),
    ]
    print("\n| figure | transferkit | detail | bar |\n| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nresults in {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
