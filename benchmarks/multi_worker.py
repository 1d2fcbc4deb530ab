"""Multi-worker training on one machine: 1 and 2 local workers, same config and global batch.

    python benchmarks/multi_worker.py [--preset efficientnet-lite0 | --tiny] [--images 640]
        [--image-size 128] [--epochs 3]

Each worker is a `transferkit train` process with its own `TF_CONFIG`
(loopback ports), as on several machines. On 2 cores two workers are not
expected to be faster; the point is that they run and agree. Reported per
cluster size: steps and images per second (epochs after the first, which
traces), the final losses, whether every worker's weights digest is equal,
and the largest loss difference from the one-worker run.

Prints a table and writes JSON (default benchmarks/results/multi_worker.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def run_cluster(workers: int, config_path: Path, run_dir: Path) -> dict:
    from transferkit.testing import free_ports

    ports = free_ports(workers)
    processes = []
    started = time.perf_counter()
    for index in range(workers):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps({
            "cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "transferkit", "train", str(config_path), "--output", str(run_dir)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    digests = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"worker failed ({process.returncode}):\n{err[-3000:]}")
        digests.append(re.search(r"weights sha256 ([0-9a-f]{64})", out).group(1))
    wall = time.perf_counter() - started
    history = json.loads((run_dir / "history.json").read_text())
    return {"workers": workers, "wall_seconds": round(wall, 1), "history": history,
            "digests_equal": len(set(digests)) == 1, "digest": digests[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="efficientnet-lite0")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny backbone instead of --preset")
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/multi_worker.json")
    args = parser.parse_args(argv)

    from transferkit.plugins.image_classification.testing import SHAPES, make_image_folder, tiny_config

    work = Path(tempfile.mkdtemp(prefix="transferkit-bench-mw-"))
    images = make_image_folder(work / "images", classes=SHAPES, per_class=args.images // len(SHAPES),
                               size=args.image_size)
    # The whole backbone trains: every step is a full forward and backward pass (no feature cache).
    config = tiny_config(images, image_size=args.image_size,
                         data={"val_split": 0.2, "batch_size": args.batch_size}, head={"dropout": 0.0},
                         stages=[{"name": "all", "freeze": {"all": True}, "epochs": args.epochs,
                                  "learning_rate": 1e-3}],
                         training={"verbose": 0, "tensorboard": False, "distribute": "multi_worker"})
    if not args.tiny:
        config["backbone"] = {"preset": args.preset}
    backbone = "tiny backbone" if args.tiny else args.preset
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    train_images = sum(1 for _ in images.rglob("*.png")) - round(0.2 * args.images)
    steps = -(-train_images // args.batch_size)

    rows = []
    for workers in (1, 2):
        result = run_cluster(workers, config_path, work / f"run{workers}")
        timed = [r["seconds"] for r in result["history"][1:]] or [result["history"][0]["seconds"]]
        per_epoch = sum(timed) / len(timed)
        rows.append({"workers": workers, "steps_per_second": round(steps / per_epoch, 2),
                     "images_per_second": round(train_images / per_epoch, 1),
                     "epoch_seconds": round(per_epoch, 2), "wall_seconds": result["wall_seconds"],
                     "final_loss": result["history"][-1]["loss"],
                     "final_val_loss": result["history"][-1]["val_loss"],
                     "digests_equal": result["digests_equal"], "history": result["history"]})
    base = rows[0]["history"]
    for row in rows:
        row["max_loss_difference"] = max(
            max(abs(a["loss"] - b["loss"]), abs(a["val_loss"] - b["val_loss"]))
            for a, b in zip(base, row["history"]))

    print(f"{train_images} training images at {args.image_size} px, global batch {args.batch_size} "
          f"({steps} steps/epoch), {args.epochs} epochs, {backbone} fully trainable, {os.cpu_count()} cores")
    print(f"{'workers':>7}  {'steps/s':>8}  {'images/s':>8}  {'epoch s':>7}  {'wall s':>6}  "
          f"{'final loss':>10}  {'max |diff| vs 1':>15}  weights equal")
    for row in rows:
        print(f"{row['workers']:>7}  {row['steps_per_second']:>8}  {row['images_per_second']:>8}  "
              f"{row['epoch_seconds']:>7}  {row['wall_seconds']:>6}  {row['final_loss']:>10.5f}  "
              f"{row['max_loss_difference']:>15.2e}  {row['digests_equal']}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"images": train_images, "image_size": args.image_size,
                                  "batch_size": args.batch_size, "epochs": args.epochs, "backbone": backbone,
                                  "cores": os.cpu_count(), "rows": rows}, indent=2))
    print(f"written {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
