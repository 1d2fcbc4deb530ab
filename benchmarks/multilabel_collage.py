"""Multi-label on real photos: collages of ants, bees and raccoons from ../shared/datasets, with a one-label baseline.

    python benchmarks/multilabel_collage.py OUT [--shared ../shared/datasets] [--train-count 480]
        [--test-count 240] [--seeds 0,1,2] [--preset efficientnet-lite0] [--no-train]

Builds OUT/train and OUT/test: each image is a 2x2 grid of 112-pixel tiles at 224x224, one to three tiles
holding a photo (hymenoptera's ants and bees, raccoon's raccoons; centre square crops), the rest grey
noise; an image's labels are the classes of its photos (`labels.csv`, `path,labels`). Training collages
use only hymenoptera's train photos and raccoon's train_labels.csv images, test collages only the
hymenoptera val photos and test_labels.csv images, so no photo is in both.

Then it trains (unless --no-train), on EfficientNet-Lite0 with each task's default schedule:
- multilabel_classification on the training collages (20% held out for validation and thresholds);
- image_classification on the same collages with one label each (the first photo's class): what a user
  with a one-label tool would do;
and scores both on the test collages: mAP over labels (the one-label model's softmax as its scores),
micro F1 and exact match of the label sets (the one-label model predicts its top-1 class). Each seed
draws its own collages and trains with that seed (OUT/seed<N>); the table gives the mean and the standard
deviation over seeds, and benchmarks/results/multilabel_collage.json every seed's numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = ("ant", "bee", "raccoon")
TILE = 112


def photos(shared: Path) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: [photo, ...]}} with the datasets' own train/test splits."""
    hymenoptera, raccoon = shared / "hymenoptera", shared / "raccoon"
    if not hymenoptera.is_dir() or not raccoon.is_dir():
        raise SystemExit(f"multilabel_collage: {shared} needs hymenoptera/ and raccoon/ (see its README)")
    result = {}
    for split, hym_split, raccoon_csv in (("train", "train", "train_labels.csv"), ("test", "val", "test_labels.csv")):
        with open(raccoon / raccoon_csv, newline="") as file:
            raccoons = sorted({row["filename"] for row in csv.DictReader(file)})
        result[split] = {
            "ant": sorted((hymenoptera / hym_split / "ants").glob("*.jpg")),
            "bee": sorted((hymenoptera / hym_split / "bees").glob("*.jpg")),
            "raccoon": [raccoon / "images" / name for name in raccoons if (raccoon / "images" / name).exists()],
        }
    return result


def tile(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return np.asarray(image.crop((left, top, left + side, top + side)).resize((TILE, TILE), Image.BILINEAR))


def build(out: Path, pool: dict[str, list[Path]], count: int, rng: np.random.Generator) -> dict:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rows, first = [], []
    for i in range(count):
        chosen = [CLASSES[j] for j in rng.integers(0, len(CLASSES), size=int(rng.integers(1, 4)))]
        tiles = [tile(pool[name][int(rng.integers(len(pool[name])))]) for name in chosen]
        grey = [np.clip(rng.normal(128, 20, (TILE, TILE, 3)), 0, 255).astype(np.uint8)
                for _ in range(4 - len(tiles))]
        order = rng.permutation(4)
        cells = [(tiles + grey)[j] for j in order]
        image = np.concatenate([np.concatenate(cells[:2], axis=1), np.concatenate(cells[2:], axis=1)], axis=0)
        name = f"collage_{i:04d}.jpg"
        Image.fromarray(image).save(out / name, quality=90)
        labels = sorted(set(chosen))
        rows.append((name, ";".join(labels)))
        first.append((name, chosen[0]))
    (out / "labels.csv").write_text("path,labels\n" + "".join(f"{n},{l}\n" for n, l in rows))
    (out / "one_label.csv").write_text("path,label\n" + "".join(f"{n},{l}\n" for n, l in first))
    sizes = [len(l.split(";")) for _, l in rows]
    return {"images": count, "labels_per_image": round(float(np.mean(sizes)), 3),
            "label_counts": {c: sum(c in l.split(";") for _, l in rows) for c in CLASSES}}


def truth_of(folder: Path) -> tuple[list[str], np.ndarray]:
    with open(folder / "labels.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    paths = [str(folder / row["path"]) for row in rows]
    truth = np.array([[c in row["labels"].split(";") for c in CLASSES] for row in rows], np.float32)
    return paths, truth


def scores_of(run_dir: Path, paths: list[str], multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(per-class scores, predicted label sets) of a run on `paths`, classes in CLASSES order."""
    from transferkit.runner import load_run

    _, task, model, info = load_run(run_dir)
    names = list(info["class_names"])
    order = [names.index(c) for c in CLASSES]
    scores = []
    for start in range(0, len(paths), 32):
        pixels = np.stack([task.read_input(p, info) for p in paths[start:start + 32]]).astype("float32")
        scores.append(np.asarray(model(pixels, training=False))[:, order])
    scores = np.concatenate(scores)
    if multilabel:
        from transferkit.plugins.multilabel_classification.layers import thresholds_of

        predicted = scores >= thresholds_of(model)[order]
    else:
        predicted = np.eye(len(CLASSES), dtype=bool)[scores.argmax(axis=1)]
    return scores, predicted


def score(truth: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> dict:
    from sklearn import metrics

    return {
        "map": float(np.mean([metrics.average_precision_score(truth[:, i], scores[:, i]) for i in range(truth.shape[1])])),
        "micro_f1": float(metrics.f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1": float(metrics.f1_score(truth, predicted, average="macro", zero_division=0)),
        "exact_match": float(np.mean(np.all(truth.astype(bool) == predicted, axis=1))),
    }


def run_seed(out: Path, shared: Path, seed: int, train_count: int, test_count: int, preset: str,
             train_models: bool) -> dict:
    rng = np.random.default_rng(seed)
    pools = photos(shared)
    facts = {split: build(out / split, pools[split], count, rng)
             for split, count in (("train", train_count), ("test", test_count))}
    print(json.dumps({"seed": seed, **facts}), flush=True)
    result = {"seed": seed, "data": facts, "runs": {}}
    if not train_models:
        return result
    from transferkit.config import build_run_config
    from transferkit.runner import train

    paths, truth = truth_of(out / "test")
    for name, task, train_file in (("multilabel", "multilabel_classification", "labels.csv"),
                                   ("one_label", "image_classification", "one_label.csv")):
        config = build_run_config({"task": task, "backbone": {"preset": preset},
                                   "data": {"train": str(out / "train" / train_file), "image_size": [224, 224],
                                            "batch_size": 32},
                                   "training": {"seed": seed, "verbose": 0, "tensorboard": False}})
        run_dir = out / "runs" / name
        started = time.perf_counter()
        train(config, run_dir, resume=False)
        seconds = time.perf_counter() - started
        scores, predicted = scores_of(run_dir, paths, multilabel=task == "multilabel_classification")
        result["runs"][name] = {"task": task, "train_seconds": round(seconds, 1), **score(truth, scores, predicted)}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--train-count", type=int, default=480)
    parser.add_argument("--test-count", type=int, default=240)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="efficientnet-lite0")
    parser.add_argument("--no-train", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = [run_seed(args.out / f"seed{seed}", args.shared, seed, args.train_count, args.test_count,
                        args.preset, not args.no_train) for seed in seeds]
    if args.no_train:
        return
    print(f"{'run':<12} {'mAP':>13} {'micro F1':>13} {'macro F1':>13} {'exact':>13} {'train s':>8}")
    for name in results[0]["runs"]:
        rows = [r["runs"][name] for r in results]
        cells = [f"{np.mean([r[k] for r in rows]):.3f} ± {np.std([r[k] for r in rows]):.3f}"
                 for k in ("map", "micro_f1", "macro_f1", "exact_match")]
        print(f"{name:<12} " + " ".join(f"{c:>13}" for c in cells) +
              f" {np.mean([r['train_seconds'] for r in rows]):8.0f}")
    # Another starting point (an imported name, or a finished run: `--preset runs/hymenoptera`) gets its own file.
    suffix = "" if args.preset == "efficientnet-lite0" else "_from_" + "".join(
        c if c.isalnum() else "_" for c in Path(args.preset).name)
    target = Path(__file__).resolve().parent / "results" / f"multilabel_collage{suffix}.json"
    target.write_text(json.dumps({"preset": args.preset, "seeds": results}, indent=2) + "\n")
    print(f"written: {target}")


if __name__ == "__main__":
    sys.exit(main())
