"""Evaluation of a detector: COCO metrics (pycocotools), a PR curve and a contact sheet."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

GT_COLOUR = (40, 200, 60)
PRED_COLOUR = (230, 40, 40)
SIZE_NAMES = ("small", "medium", "large")


def _coco_ground_truth(val, class_names: Sequence[str]):
    from pycocotools.coco import COCO

    images, annotations = [], []
    for index in range(len(val)):
        height, width = (int(v) for v in val.original_sizes[index])
        images.append({"id": index + 1, "width": width, "height": height})
        boxes, class_ids = val.ground_truth(index)
        for box, class_id in zip(boxes, class_ids):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": int(class_id) + 1,
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _model_size(info: Mapping[str, Any]) -> tuple[int, int]:
    """The model's (height, width), from the run's preprocessor (older runs: read by its legacy path)."""
    from transferkit.vision.preprocessor import ImagePreprocessor

    return ImagePreprocessor.from_info(info).image_size


def _scales(val, image_size) -> np.ndarray:
    """Per image: model pixels -> original pixels, as (sx, sy, sx, sy)."""
    height, width = image_size
    sizes = val.original_sizes.astype(np.float32)
    return np.stack([sizes[:, 1] / width, sizes[:, 0] / height] * 2, axis=-1)


def coco_metrics(detections: Mapping[str, np.ndarray], val, info: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """mAP@[.5:.95], mAP@0.5, mAP@0.75, AP by size and per class; returns (metrics, COCOeval or None)."""
    from pycocotools.cocoeval import COCOeval

    class_names = list(info["class_names"])
    ground_truth = _coco_ground_truth(val, class_names)
    scales = _scales(val, _model_size(info))
    results = []
    for i in range(len(val)):
        for j in range(int(detections["num_detections"][i])):
            x0, y0, x1, y1 = (detections["boxes"][i, j] * scales[i]).tolist()
            results.append({"image_id": i + 1, "category_id": int(detections["class_ids"][i, j]) + 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(detections["scores"][i, j])})
    metrics: dict[str, Any] = {"num_images": len(val), "num_boxes": len(ground_truth.dataset["annotations"]),
                               "num_detections": len(results)}
    if not results:
        boxes_per_class = np.bincount([a["category_id"] - 1 for a in ground_truth.dataset["annotations"]],
                                      minlength=len(class_names))
        metrics.update({"map": 0.0, "map50": 0.0, "map75": 0.0, **{f"map_{s}": -1.0 for s in SIZE_NAMES},
                        "per_class_ap": {name: 0.0 for name in class_names},
                        "per_class": {name: {"ap": 0.0, "ap50": 0.0, "support": int(boxes_per_class[k])}
                                      for k, name in enumerate(class_names)}})
        return metrics, None
    with contextlib.redirect_stdout(io.StringIO()):
        predictions = ground_truth.loadRes(results)
        evaluator = COCOeval(ground_truth, predictions, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    metrics.update({"map": float(stats[0]), "map50": float(stats[1]), "map75": float(stats[2]),
                    "map_small": float(stats[3]), "map_medium": float(stats[4]), "map_large": float(stats[5]),
                    "mar100": float(stats[8])})
    # precision: [IoU thresholds, recall points, classes, areas, max detections]; -1 where undefined.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class_ap, per_class = {}, {}
    boxes_per_class = np.bincount([a["category_id"] - 1 for a in ground_truth.dataset["annotations"]],
                                  minlength=len(class_names))
    for k, name in enumerate(class_names):
        every = precision[:, :, k][precision[:, :, k] > -1]
        at_50 = precision[0, :, k][precision[0, :, k] > -1]  # the first IoU threshold is 0.5
        per_class_ap[name] = float(every.mean()) if every.size else -1.0
        per_class[name] = {"ap": per_class_ap[name], "ap50": float(at_50.mean()) if at_50.size else -1.0,
                           "support": int(boxes_per_class[k])}
    metrics["per_class_ap"] = per_class_ap  # AP@[.5:.95] by class, as runs before per_class recorded it
    metrics["per_class"] = per_class
    return metrics, evaluator


def plot_precision_recall(evaluator, class_names: Sequence[str], path: Path) -> None:
    """Precision against recall at IoU 0.5, one line per class."""
    from transferkit.reporting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    recall = evaluator.params.recThrs
    for k, name in enumerate(class_names):
        precision = evaluator.eval["precision"][0, :, k, 0, -1]
        if (precision > -1).any():
            ax.plot(recall, np.clip(precision, 0, 1), label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall at IoU 0.5")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _iou(box, boxes) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area - inter, 1e-9)


def draw_boxes(image: np.ndarray, boxes, labels: Sequence[str], colour, width: int | None = None):
    """Boxes and their labels, with lines and text sized to the image (legible on a 4000-pixel photo too)."""
    from PIL import Image, ImageDraw, ImageFont

    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    side = max(picture.size)
    width = width or max(2, round(side / 300))
    font = ImageFont.load_default(size=max(11, round(side / 45)))
    draw = ImageDraw.Draw(picture)
    for box, label in zip(boxes, labels):
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        if label:
            left, top, right, bottom = draw.textbbox((x0 + width, y0 + width), label, font=font)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=(0, 0, 0))
            draw.text((x0 + width, y0 + width), label, fill=colour, font=font)
    return picture


def image_errors(gt_boxes, gt_ids, pred_boxes, pred_ids, iou: float = 0.5) -> dict[str, Any]:
    """One image's detection errors at `iou`: boxes missed, false positives and wrong classes.

    Predictions are taken best first (the caller's order); each is matched to the unmatched ground-truth
    box it overlaps most. Overlapping a box of another class counts as a wrong class, overlapping none a
    false positive; ground-truth boxes left unmatched are missed.
    """
    matched = np.zeros(len(gt_boxes), bool)
    false_positives = wrong_class = 0
    ious = []
    for box, class_id in zip(pred_boxes, pred_ids):
        overlaps = _iou(box, gt_boxes) if len(gt_boxes) else np.zeros(0)
        candidates = np.where((overlaps >= iou) & ~matched)[0]
        if not candidates.size:
            false_positives += 1
            continue
        best = candidates[np.argmax(overlaps[candidates])]
        matched[best] = True
        ious.append(float(overlaps[best]))
        if int(gt_ids[best]) != int(class_id):
            wrong_class += 1
    missed = int((~matched).sum())
    return {"missed": missed, "false_positives": false_positives, "wrong_class": wrong_class,
            "errors": missed + false_positives + wrong_class, "mean_iou": float(np.mean(ious)) if ious else 0.0}


def save_annotated(image: np.ndarray, detections, path: Path) -> Path:
    """A copy of `image` with its detections drawn, written as PNG."""
    from transferkit.fileio import atomic_path

    picture = draw_boxes(image, [d.box for d in detections], [f"{d.label} {d.score:.2f}" for d in detections],
                         PRED_COLOUR)
    with atomic_path(path, suffix=".png") as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def contact_sheet(detections, val, info, path: Path, threshold: float, count: int = 12, tile: int = 256) -> None:
    """The validation images with the most errors (missed boxes, false positives, wrong classes; then the
    loosest boxes): ground truth green, predictions red, each tile captioned with its counts."""
    from PIL import Image, ImageDraw

    from transferkit.fileio import atomic_path
    from transferkit.vision.images import read_image

    scales = _scales(val, _model_size(info))
    names = info["class_names"]
    rows = []
    for i in range(len(val)):
        gt_boxes, gt_ids = val.ground_truth(i)
        keep = [j for j in range(int(detections["num_detections"][i])) if detections["scores"][i, j] >= threshold]
        pred = detections["boxes"][i, keep] * scales[i] if keep else np.zeros((0, 4), np.float32)
        pred_ids = detections["class_ids"][i, keep] if keep else np.zeros((0,), np.int32)
        errors = image_errors(gt_boxes, gt_ids, pred, pred_ids)
        rows.append((-errors["errors"], errors["mean_iou"], i, pred, errors,
                     [f"{names[int(detections['class_ids'][i, j])]} {detections['scores'][i, j]:.2f}" for j in keep]))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    chosen = rows[:count]
    cols = 4
    sheet = Image.new("RGB", (cols * tile, max(1, -(-len(chosen) // cols)) * (tile + 28)), "white")
    writer = ImageDraw.Draw(sheet)
    for n, (_, _, i, pred, errors, labels) in enumerate(chosen):
        gt_boxes, gt_ids = val.ground_truth(i)
        # Shrink first, then draw, so lines and labels stay legible on large photos.
        original = Image.fromarray(read_image(val.paths[i]))
        factor = tile / max(original.size)
        picture = original.resize((max(1, round(original.width * factor)), max(1, round(original.height * factor))))
        picture = draw_boxes(picture, gt_boxes * factor, [names[int(c)] for c in gt_ids], GT_COLOUR)
        picture = draw_boxes(picture, pred * factor, labels, PRED_COLOUR)
        x, y = (n % cols) * tile, (n // cols) * (tile + 28)
        sheet.paste(picture, (x, y))
        writer.text((x + 2, y + tile + 2), Path(val.paths[i]).name[:36], fill=(0, 0, 0))
        writer.text((x + 2, y + tile + 14), f"{errors['missed']} missed · {errors['false_positives']} false · "
                                            f"{errors['wrong_class']} wrong class", fill=(0, 0, 0))
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")


def evaluate_detector(detections, val, info, report_dir: Path, sheet_threshold: float = 0.3) -> dict[str, Any]:
    import json

    metrics, evaluator = coco_metrics(detections, val, info)
    report_dir.mkdir(parents=True, exist_ok=True)
    if evaluator is not None:
        plot_precision_recall(evaluator, info["class_names"], report_dir / "precision_recall.png")
    contact_sheet(detections, val, info, report_dir / "worst_detections.png", sheet_threshold)
    history = report_dir.parent / "history.json"
    if history.exists():
        from transferkit.reporting import plot_history

        plot_history(json.loads(history.read_text()), report_dir / "training_curves.png",
                     ("loss", "class_logits_loss", "box_deltas_loss"))
    metrics["class_names"] = list(info["class_names"])
    return metrics
