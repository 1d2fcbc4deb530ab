"""Annotated images into tf.data: decoded once, resized to the model's size, boxes padded.

Images are stretched to `image_size` (the serving graph does the same and
scales the boxes back to the original pixels), kept in memory as uint8, and
their boxes scaled with them. Boxes and class ids are padded with -1 to a
fixed count per image, so batches have fixed shapes (the label encoder and
the feature cache need them).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from transferkit.errors import DataError
from transferkit.vision.decoding import decode_each
from transferkit.vision.images import MAX_PIXELS, read_image, resize_array
from transferkit.plugins.object_detection.annotations import ImageAnnotation

PAD = -1


@dataclasses.dataclass
class LoadedDetections:
    images: np.ndarray | None  # (N, H, W, 3) uint8, model size; None when the images are streamed
    boxes: np.ndarray  # (N, M, 4) float32 xyxy in model pixels, PAD rows
    class_ids: np.ndarray  # (N, M) int32, PAD for no box
    original_sizes: np.ndarray  # (N, 2) int32 (height, width) of the decoded image
    paths: list[str]
    problems: list[dict[str, str]]
    image_size: tuple[int, int] = (0, 0)  # the model's (height, width)
    files: object = None  # streamed: the CheckedFiles, whose label is the row here

    def __len__(self) -> int:
        return len(self.paths)

    def ground_truth(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (in the original image's pixels) and class ids of one image, without padding."""
        keep = self.class_ids[index] >= 0
        height, width = self.original_sizes[index]
        scale = np.array([width, height, width, height], np.float32) / np.array(
            [self.image_size[1], self.image_size[0]] * 2, np.float32)
        return self.boxes[index][keep] * scale, self.class_ids[index][keep]

    def rows(self, indices: Sequence[int]) -> "LoadedDetections":
        """The ground truth of these rows (a streamed pass may drop a file that fails to decode)."""
        indices = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(self, images=None if self.images is None else self.images[indices],
                                   boxes=self.boxes[indices], class_ids=self.class_ids[indices],
                                   original_sizes=self.original_sizes[indices],
                                   paths=[self.paths[i] for i in indices], files=None)


def _padded_boxes(annotation: ImageAnnotation, real_h: int, real_w: int, index: dict[str, int],
                  image_size: Sequence[int], max_boxes: int, problems: list) -> tuple[np.ndarray, np.ndarray]:
    """One image's known boxes in model pixels (stretched with the image) and class ids, padded to `max_boxes`."""
    height, width = int(image_size[0]), int(image_size[1])
    image_boxes = np.full((max_boxes, 4), PAD, np.float32)
    image_ids = np.full((max_boxes,), PAD, np.int32)
    known = [(box, index[label]) for box, label in zip(annotation.boxes, annotation.labels) if label in index]
    if len(known) > max_boxes:
        problems.append({"path": annotation.path,
                         "reason": f"{len(known)} boxes, more than data.max_boxes={max_boxes}; extra boxes dropped"})
        known = known[:max_boxes]
    scale = np.array([width / real_w, height / real_h] * 2, np.float32)
    for row, (box, class_id) in enumerate(known):
        image_boxes[row] = np.asarray(box, np.float32) * scale
        image_ids[row] = class_id
    return image_boxes, image_ids


def check_detections(annotations: Sequence[ImageAnnotation], class_names: Sequence[str], image_size: Sequence[int],
                     max_boxes: int, on_bad_annotation: str = "skip", max_pixels: int = MAX_PIXELS
                     ) -> LoadedDetections:
    """For streaming: every image checked from its header (sizes included), boxes scaled; no pixels held."""
    from transferkit.vision import streaming

    index = {name: i for i, name in enumerate(class_names)}
    files = streaming.check_image_files([a.path for a in annotations], np.arange(len(annotations)), max_pixels,
                                        sizes=True)
    problems = list(files.problems)
    if problems and on_bad_annotation == "error":
        first = problems[0]
        raise DataError(f"{first['path']}: {first['reason']} (data.on_bad_annotation is 'error')")
    if not len(files):
        raise DataError("no usable images: " + "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5]))
    boxes, ids = [], []
    for row, (height, width) in zip(files.labels.tolist(), files.sizes.tolist()):
        image_boxes, image_ids = _padded_boxes(annotations[row], height, width, index, image_size, max_boxes,
                                               problems)
        boxes.append(image_boxes)
        ids.append(image_ids)
    # The files' labels become their rows here, which the streamed batches carry to their boxes.
    files.labels = np.arange(len(files), dtype=np.int32)
    return LoadedDetections(None, np.stack(boxes), np.stack(ids), files.sizes.copy(), list(files.paths), problems,
                            (int(image_size[0]), int(image_size[1])), files)


def load_detections(annotations: Sequence[ImageAnnotation], class_names: Sequence[str], image_size: Sequence[int],
                    max_boxes: int, on_bad_annotation: str = "skip", workers: int = 4) -> LoadedDetections:
    """Decodes every annotated image once; boxes past `max_boxes` per image are dropped (and reported)."""
    index = {name: i for i, name in enumerate(class_names)}
    height, width = int(image_size[0]), int(image_size[1])
    decoded, kept, problems = decode_each([a.path for a in annotations], read_image, on_bad_annotation,
                                          "data.on_bad_annotation", workers)
    images, boxes, ids, sizes, paths = [], [], [], [], []
    for pixels, row in zip(decoded, kept):
        annotation = annotations[row]
        real_h, real_w = pixels.shape[:2]
        image_boxes, image_ids = _padded_boxes(annotation, real_h, real_w, index, image_size, max_boxes, problems)
        images.append(resize_array(pixels, (height, width), "stretch"))
        boxes.append(image_boxes)
        ids.append(image_ids)
        sizes.append((real_h, real_w))
        paths.append(annotation.path)
    return LoadedDetections(np.stack(images), np.stack(boxes), np.stack(ids), np.asarray(sizes, np.int32), paths,
                            problems, (height, width))
