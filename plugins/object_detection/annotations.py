"""Reading and writing object-detection annotations: Pascal VOC, COCO, YOLO and CSV.

Each format reader only parses its files into raw records; `_finish` then checks
every record the same way (the image exists and is an image, its real size, the
class, the box inside the image). What it fixes or skips is listed as a problem,
or raised as DataError with `on_bad_annotation="error"`. Boxes come out as
absolute xyxy pixels in the size of the decoded, upright image.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferkit.compressed import DAMAGE, inner_suffix, is_compressed, read_bounded
from transferkit.errors import ConfigError, DataError
from transferkit.fileio import atomic_path, atomic_writer, checked_rows

FORMATS = ("voc", "coco", "yolo", "csv")
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
YOLO_NAME_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names")
_EXIF_ORIENTATION = 0x0112
# The project's decoder (image_classification.data.decode_encoded) turns JPEGs
# upright in TensorFlow and other TF formats not at all; the Pillow fallback used
# for the rest always does. Real sizes must match what training decodes.
_TF_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "WEBP"}


@dataclasses.dataclass
class ImageAnnotation:
    """One image and its boxes, in the image's real pixel size."""

    path: str  # absolute path of the image file
    width: int  # real width of the decoded image (pixels)
    height: int
    boxes: np.ndarray  # (n, 4) float32: xmin, ymin, xmax, ymax in pixels
    labels: list[str]  # n class names

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)


@dataclasses.dataclass
class _RawBox:
    label: str
    coords: tuple[float, ...]  # xyxy pixels, or normalised cx cy w h for YOLO
    where: str  # "line 4", "object 2": names the box in problem messages


@dataclasses.dataclass
class _RawImage:
    source_file: Path  # the annotation file that problems point at
    image_name: str  # as written in the annotation
    candidates: list[Path]  # where the image may be, first existing wins
    size: tuple[int | None, int | None] | None  # annotated (w, h); None when the format has none (YOLO)
    boxes: list[_RawBox] = dataclasses.field(default_factory=list)
    normalised: bool = False


class _Problems:
    """Collects problems, or raises on the first one in "error" mode."""

    def __init__(self, mode: str):
        self.items: list[dict[str, str]] = []
        self.raise_first = mode == "error"

    def add(self, path: str | os.PathLike, reason: str) -> None:
        if self.raise_first:
            raise DataError(f"{path}: {reason}")
        self.items.append({"path": str(path), "reason": reason})


def class_names_of(annotations: Sequence[ImageAnnotation]) -> list[str]:
    """Sorted unique class names used by the annotations."""
    return sorted({label for annotation in annotations for label in annotation.labels})


def detect_format(source: str | os.PathLike) -> str:
    """"voc", "coco", "yolo" or "csv" from the file suffix or the folder layout."""
    path = Path(source)
    suffixes = {".json": "coco", ".csv": "csv", ".xml": "voc", ".yaml": "yolo", ".yml": "yolo"}
    if path.is_file() and inner_suffix(path) in suffixes:  # reviews.csv.gz is a CSV
        return suffixes[inner_suffix(path)]
    if path.is_dir():
        if (path / "labels").is_dir() or any((path / name).is_file() for name in YOLO_NAME_FILES[:2]):
            return "yolo"
        if any(path.rglob("*.xml")):
            return "voc"
        if (path / "images").is_dir() and any((path / name).is_file() for name in YOLO_NAME_FILES):
            return "yolo"  # only negatives so far: no labels/, but class names beside images/
    state = "not found" if not path.exists() else "unrecognised"
    raise DataError(f"{path}: {state}; expected a COCO .json, a .csv, a Pascal VOC .xml or folder of .xml files, "
                    "or a YOLO folder with labels/ (or data.yaml)")


def read_annotations(source: str | os.PathLike, fmt: str = "auto", images: str | os.PathLike | None = None,
                     class_names: Sequence[str] | None = None, on_bad_annotation: str = "skip",
                     ) -> tuple[list[ImageAnnotation], list[dict[str, str]]]:
    """Reads a detection dataset; returns (annotations, problems)."""
    if on_bad_annotation not in ("skip", "error"):
        raise ConfigError(f"on_bad_annotation: {on_bad_annotation!r}; expected 'skip' or 'error'")
    if fmt not in (*FORMATS, "auto"):
        raise ConfigError(f"annotation format: {fmt!r}; expected 'auto' or one of {', '.join(FORMATS)}")
    source = Path(source)
    fmt = detect_format(source) if fmt == "auto" else fmt
    if not source.exists():
        raise DataError(f"{source}: not found")
    problems = _Problems(on_bad_annotation)
    image_dir = Path(images) if images is not None else None
    if fmt == "yolo":
        raw = _read_yolo(source, image_dir, class_names, problems)
    else:
        raw = {"voc": _read_voc, "coco": _read_coco, "csv": _read_csv}[fmt](source, image_dir, problems)
    annotations = _finish(raw, class_names, problems)
    if not annotations:
        first = f"; first problem: {problems.items[0]['path']}: {problems.items[0]['reason']}" if problems.items else ""
        raise DataError(f"{source}: no usable annotated images ({fmt} format, {len(problems.items)} problems){first}")
    return annotations, problems.items


def _finish(raw_images: list[_RawImage], class_names: Sequence[str] | None,
            problems: _Problems) -> list[ImageAnnotation]:
    allowed = set(class_names) if class_names is not None else None
    by_path: dict[str, ImageAnnotation] = {}
    for raw in raw_images:
        image_path = next((path for path in raw.candidates if path.is_file()), None)
        if image_path is None:
            looked = ", ".join(str(path) for path in raw.candidates)
            problems.add(raw.source_file, f"image '{raw.image_name}' not found (looked for {looked}); image skipped")
            continue
        path = os.path.abspath(image_path)
        if path in by_path:
            problems.add(raw.source_file, f"image '{raw.image_name}' is annotated twice; this one skipped")
            continue
        probed = _probe_image(image_path, problems)
        if probed is None:
            continue
        width, height, swapped = probed
        if raw.size is not None:
            _check_size(raw, width, height, swapped, problems)
        boxes, labels = [], []
        for box in raw.boxes:
            if allowed is not None and box.label not in allowed:
                problems.add(raw.source_file,
                             f"{box.where}: class '{box.label}' is not in class_names {sorted(allowed)}; box skipped")
                continue
            coords = box.coords
            if raw.normalised:  # YOLO: centre and size as fractions of the real size
                cx, cy, w, h = coords
                coords = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            kept = _clip_box(coords, width, height, f"{box.where} ('{box.label}')", raw.source_file, problems)
            if kept is not None:
                boxes.append(kept)
                labels.append(box.label)
        by_path[path] = ImageAnnotation(path, width, height, np.array(boxes, np.float32).reshape(-1, 4), labels)
    return [by_path[path] for path in sorted(by_path)]


def _probe_image(path: Path, problems: _Problems) -> tuple[int, int, bool] | None:
    """(width, height, orientation_swapped) of the upright image, reading only the file's header."""
    try:
        with Image.open(path) as image:  # Pillow tells the format from the magic bytes, not the name
            width, height = image.size
            real = "JPEG" if image.format == "MPO" else image.format  # MPO: a phone's JPEG, decoded as JPEG
            turned_upright = real == "JPEG" or real not in _TF_FORMATS
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if turned_upright else 1
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        problems.add(path, f"not a readable image ({type(error).__name__}: {error}); image skipped")
        return None
    claimed = Image.registered_extensions().get(path.suffix.lower())
    claimed = "JPEG" if claimed == "MPO" else claimed
    if claimed != real:
        problems.add(path, f"file extension '{path.suffix}' says {claimed or 'no image format'} but the content "
                           f"is {real}; image kept (decoders read the format from the content)")
    swapped = orientation in (5, 6, 7, 8)  # the transposing orientations exchange width and height
    return (height, width, True) if swapped else (width, height, False)


def _check_size(raw: _RawImage, width: int, height: int, swapped: bool, problems: _Problems) -> None:
    annotated_w, annotated_h = raw.size
    real = f"the real size {width}x{height} of '{raw.image_name}'"
    if annotated_w is None or annotated_h is None:
        problems.add(raw.source_file, f"image size (width, height) is missing or not a number; using {real}")
    elif annotated_w <= 0 or annotated_h <= 0:
        problems.add(raw.source_file, f"annotated image size {annotated_w}x{annotated_h} is zero or negative; "
                                      f"using {real}")
    elif (annotated_w, annotated_h) != (width, height):
        rotated = swapped and (annotated_h, annotated_w) == (width, height)
        hint = " (its EXIF orientation turns it upright)" if rotated else ""
        problems.add(raw.source_file, f"annotated image size {annotated_w}x{annotated_h} (width x height) differs "
                                      f"from {real}{hint}; using the real size, boxes not rescaled")


def _clip_box(coords, width: int, height: int, where: str, source_file: Path,
              problems: _Problems) -> list[float] | None:
    """The box clipped to the image, or None (problem listed) when no valid box is left."""
    shown = "(" + ", ".join(f"{value:g}" for value in coords) + ")"
    if not all(math.isfinite(value) for value in coords):
        problems.add(source_file, f"{where}: box {shown} has a NaN or infinite coordinate; expected numbers; "
                                  "box skipped")
        return None
    limits = (width, height, width, height)
    clipped = [min(max(value, 0.0), limit) for value, limit in zip(coords, limits)]
    was_clipped = clipped != list(coords)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        after = f" after clipping to the {width}x{height} image" if was_clipped else ""
        problems.add(source_file, f"{where}: box {shown} (xmin, ymin, xmax, ymax) has zero or negative width or "
                                  f"height{after}; expected xmin < xmax and ymin < ymax; box skipped")
        return None
    if was_clipped:
        problems.add(source_file, f"{where}: box {shown} extends outside the {width}x{height} image; clipped to "
                                  "(" + ", ".join(f"{value:g}" for value in clipped) + ")")
    return clipped


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _size(width, height) -> tuple[int | None, int | None]:
    values = (_number(width), _number(height))
    return tuple(int(value) if value is not None and math.isfinite(value) else None for value in values)


def _read_text(path: Path, problems: _Problems, encoding: str = "utf-8") -> str | None:
    """The file's text; a .gz, .bz2 or .xz file is decompressed as it is read."""
    try:
        data = read_bounded(path)
    except DAMAGE as error:
        if not is_compressed(path):
            raise
        problems.add(path, f"not a readable {path.suffix} file ({error}); file skipped")
        return None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        problems.add(path, f"byte {error.start}: not UTF-8 text; file skipped")
        return None


def _read_voc(source: Path, image_dir: Path | None, problems: _Problems) -> list[_RawImage]:
    raw_images = []
    for xml_file in [source] if source.is_file() else sorted(source.rglob("*.xml")):
        try:
            root = ET.parse(xml_file).getroot()
        except ET.ParseError as error:
            problems.add(xml_file, f"line {error.position[0]}: not well-formed XML ({error}); file skipped")
            continue
        name = (root.findtext("filename") or "").strip()
        if root.tag != "annotation" or not name:
            problems.add(xml_file, f"expected an <annotation> root with a <filename>, found <{root.tag}> and "
                                   f"filename '{name}'; file skipped")
            continue
        parent = xml_file.parent.parent
        folders = [image_dir] if image_dir else [xml_file.parent, parent / "images", parent / "JPEGImages"]
        candidates = [folder / name for folder in folders]
        absolute = Path((root.findtext("path") or "").strip())
        if not image_dir and absolute.is_absolute():
            candidates.append(absolute)  # last resort: an absolute <path>, as write_voc writes
        raw = _RawImage(xml_file, name, candidates, _size(root.findtext("size/width"), root.findtext("size/height")))
        for index, obj in enumerate(root.findall("object"), start=1):
            label = (obj.findtext("name") or "").strip()
            values = [_number(obj.findtext(f"bndbox/{field}")) for field in ("xmin", "ymin", "xmax", "ymax")]
            if not label or None in values:
                problems.add(xml_file, f"object {index}: expected <name> and numeric <bndbox> xmin, ymin, xmax, "
                                       f"ymax; found name '{label}', values {values}; box skipped")
                continue
            raw.boxes.append(_RawBox(label, tuple(values), f"object {index}"))
        raw_images.append(raw)
    return raw_images


def _read_coco(source: Path, image_dir: Path | None, problems: _Problems) -> list[_RawImage]:
    text = _read_text(source, problems)
    try:
        data = json.loads(text) if text is not None else None
    except json.JSONDecodeError as error:
        problems.add(source, f"line {error.lineno}: not valid JSON ({error.msg}); file skipped")
        return []
    except RecursionError:
        problems.add(source, "JSON nested too deeply; file skipped")
        return []
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        if text is not None:
            problems.add(source, "expected a COCO object with an 'images' list; file skipped")
        return []
    folders = [image_dir] if image_dir else [source.parent, source.parent / "images"]
    categories = {c.get("id"): str(c.get("name")) for c in data.get("categories") or []
                  if isinstance(c, dict) and _is_id(c.get("id"))}
    by_id: dict[object, _RawImage] = {}
    duplicated: dict[object, list[str]] = {}
    for index, entry in enumerate(data["images"]):
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _is_id(entry.get("id")):
            problems.add(source, f"images[{index}]: expected an 'id' (a number or string) and a 'file_name'; "
                                 f"entry skipped")
            continue
        if entry["id"] in by_id or entry["id"] in duplicated:
            # Which image its boxes belong to cannot be told: both are left out.
            first = by_id.pop(entry["id"], None)
            duplicated.setdefault(entry["id"], [first.image_name] if first else []).append(name)
            continue
        by_id[entry["id"]] = _RawImage(source, name, [folder / name for folder in folders],
                                       _size(entry.get("width"), entry.get("height")))
    for image_id, names in duplicated.items():
        problems.add(source, f"images: id {image_id!r} is shared by {len(names)} images ({', '.join(names)}); "
                             f"their boxes cannot be told apart, so all of them are skipped")
    for index, box in enumerate(data.get("annotations") or []):
        box = box if isinstance(box, dict) else {}
        where = f"annotations[{index}] (id {box.get('id')})"
        bbox = box.get("bbox")
        values = [_number(value) for value in bbox] if isinstance(bbox, list) else []
        if len(values) != 4 or None in values:
            problems.add(source, f"{where}: bbox {bbox!r} is not [x, y, width, height] numbers; box skipped")
        elif _is_id(box.get("image_id")) and box["image_id"] in duplicated:
            continue  # its image was left out above
        elif not _is_id(box.get("image_id")) or box.get("image_id") not in by_id:
            problems.add(source, f"{where}: image_id {box.get('image_id')!r} is not in 'images'; box skipped")
        elif not _is_id(box.get("category_id")) or box.get("category_id") not in categories:
            problems.add(source, f"{where}: category_id {box.get('category_id')!r} is not in 'categories'; "
                                 "box skipped")
        else:
            x, y, w, h = values
            by_id[box["image_id"]].boxes.append(_RawBox(categories[box["category_id"]], (x, y, x + w, y + h), where))
    return list(by_id.values())


def _is_id(value) -> bool:
    """A COCO id: a number or a string (a list or an object cannot key anything)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _read_csv(source: Path, image_dir: Path | None, problems: _Problems) -> list[_RawImage]:
    text = _read_text(source, problems, encoding="utf-8-sig")  # utf-8-sig: Excel starts with a BOM
    reader = csv.reader(io.StringIO(text or "", newline=""))
    rows = checked_rows(reader, str(source))
    header = [column.strip().lower() for column in next(rows, [])]
    missing = [column for column in CSV_COLUMNS if column not in header]
    if text is None or missing:
        if text is not None:
            problems.add(source, f"line 1: header lacks column(s) {', '.join(missing)}; expected "
                                 f"{','.join(CSV_COLUMNS)}; file skipped")
        return []
    folders = [image_dir] if image_dir else [source.parent, source.parent / "images"]
    by_name: dict[str, _RawImage] = {}
    for row in rows:
        where = f"line {reader.line_num}"
        if len(row) != len(header):
            if any(cell.strip() for cell in row):
                problems.add(source, f"{where}: expected {len(header)} fields, found {len(row)}; line skipped")
            continue
        cells = {column: cell.strip() for column, cell in zip(header, row)}
        name = cells["filename"]
        if not name:
            problems.add(source, f"{where}: filename is empty; line skipped")
            continue
        if name not in by_name:
            by_name[name] = _RawImage(source, name, [folder / name for folder in folders],
                                      _size(cells["width"], cells["height"]))
        label, *box_cells = (cells[column] for column in CSV_COLUMNS[3:])
        values = [_number(cell) for cell in box_cells]
        if not label and not any(box_cells):
            continue  # a row with only the image: a negative
        if not label or None in values:
            problems.add(source, f"{where}: expected a class and numeric xmin, ymin, xmax, ymax; found "
                                 f"{[label, *box_cells]}; box skipped")
            continue
        by_name[name].boxes.append(_RawBox(label, tuple(values), where))
    return list(by_name.values())


def _read_yolo(source: Path, image_dir: Path | None, class_names: Sequence[str] | None,
               problems: _Problems) -> list[_RawImage]:
    root = source.parent if source.is_file() else source
    names = _yolo_names(source if source.is_file() else None, root)
    if names is None:
        if class_names is None:
            raise DataError(f"{root}: no class names; expected a data.yaml with 'names:', classes.txt or obj.names")
        names = dict(enumerate(class_names))  # no names file: the caller's list gives the ids
    image_root, label_root = image_dir or root / "images", root / "labels"
    images = {path.relative_to(image_root).with_suffix(""): path for path in sorted(image_root.rglob("*"))
              if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS} if image_root.is_dir() else {}
    for label_file in sorted(label_root.rglob("*.txt")) if label_root.is_dir() else []:
        if label_file.relative_to(label_root).with_suffix("") not in images:
            problems.add(label_file, f"no image with the same name under {image_root}; label file skipped")
    raw_images = []
    for stem, image_path in images.items():
        label_file = label_root / stem.parent / f"{stem.name}.txt"  # not with_suffix: "a.b" must keep ".b"
        raw = _RawImage(label_file, image_path.name, [image_path], None, normalised=True)
        text = _read_text(label_file, problems) if label_file.is_file() else ""  # no label file: a negative
        for number, line in enumerate((text or "").splitlines(), start=1):
            fields = line.split()
            try:
                class_id, values = int(fields[0]), tuple(float(field) for field in fields[1:])
            except IndexError:
                continue  # blank line
            except ValueError:
                problems.add(label_file, f"line {number}: '{line.strip()}' is not 'class_id cx cy w h' numbers; "
                                         "line skipped")
                continue
            if len(values) != 4:
                problems.add(label_file, f"line {number}: expected 5 fields 'class_id cx cy w h', found "
                                         f"{len(fields)}; line skipped")
            elif class_id not in names:
                problems.add(label_file, f"line {number}: class id {class_id} is out of range; expected one of "
                                         f"0..{max(names, default=-1)}; line skipped")
            else:
                raw.boxes.append(_RawBox(names[class_id], values, f"line {number}"))
        raw_images.append(raw)
    return raw_images


def _yolo_names(yaml_file: Path | None, root: Path) -> dict[int, str] | None:
    """id -> class name from data.yaml, classes.txt or obj.names in the folder or its parent."""
    candidates = [yaml_file] if yaml_file else [folder / name for folder in (root, root.parent)
                                                for name in YOLO_NAME_FILES]
    for path in (path for path in candidates if path.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text (byte {error.start}); save the class names as UTF-8") from None
        if path.suffix in (".txt", ".names"):
            return dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))
        from transferkit.fileio import load_yaml

        try:
            names = (load_yaml(text, str(path), DataError) or {}).get("names")
            if isinstance(names, list):
                return dict(enumerate(str(name) for name in names))
            return {int(key): str(name) for key, name in names.items()}
        except (AttributeError, TypeError, ValueError) as error:
            raise DataError(f"{path}: expected 'names:' as a list or an {{id: name}} mapping ({error})") from None
    return None


def _write_atomic(path: Path, text: str) -> None:
    """Writes through a temp file in the same folder, so readers never see half a file."""
    with atomic_writer(path, "w") as handle:
        handle.write(text)


def _number_text(value) -> str:
    # Shortest text that reads back as the same float32: 12.3, not 12.300000190734863.
    return np.format_float_positional(np.float32(value), trim="-")


def _reference(image_path: str, folder: Path) -> str:
    """The image path relative to `folder` when inside it, else absolute (the readers accept both)."""
    relative = os.path.relpath(image_path, folder.absolute())
    return Path(image_path if relative.startswith("..") else relative).as_posix()


def _class_ids(annotations: Sequence[ImageAnnotation], class_names: Sequence[str]) -> dict[str, int]:
    unknown = sorted(set(class_names_of(annotations)) - set(class_names))
    if unknown:
        raise DataError(f"labels {unknown} are not in class_names {list(class_names)}")
    return {name: index for index, name in enumerate(class_names)}


def _unique_stems(annotations: Sequence[ImageAnnotation], folder: Path) -> None:
    stems = [Path(annotation.path).stem for annotation in annotations]
    if len(set(stems)) != len(stems):  # one label file per image name
        raise DataError(f"{folder}: image names must be unique without their extension to write one file each")


def write_voc(annotations: Sequence[ImageAnnotation], folder: str | os.PathLike) -> None:
    """One Pascal VOC XML per image, named after the image."""
    folder = Path(folder)
    _unique_stems(annotations, folder)
    for annotation in annotations:
        objects = "".join(
            f"  <object>\n    <name>{escape(label)}</name>\n    <difficult>0</difficult>\n    <bndbox>"
            + "".join(f"<{field}>{_number_text(value)}</{field}>" for field, value in zip(CSV_COLUMNS[4:], box))
            + "</bndbox>\n  </object>\n" for box, label in zip(annotation.boxes, annotation.labels))
        _write_atomic(folder / (Path(annotation.path).stem + ".xml"),
                      f"<annotation>\n  <filename>{escape(Path(annotation.path).name)}</filename>\n"
                      f"  <path>{escape(annotation.path)}</path>\n  <size><width>{annotation.width}</width>"
                      f"<height>{annotation.height}</height><depth>3</depth></size>\n{objects}</annotation>\n")


def write_coco(annotations: Sequence[ImageAnnotation], path: str | os.PathLike, class_names: Sequence[str]) -> None:
    """A COCO JSON; category ids start at 1, as in COCO itself."""
    path = Path(path)
    ids = _class_ids(annotations, class_names)
    images, boxes = [], []
    for image_id, annotation in enumerate(annotations, start=1):
        images.append({"id": image_id, "file_name": _reference(annotation.path, path.parent),
                       "width": annotation.width, "height": annotation.height})
        for (x0, y0, x1, y1), label in zip(annotation.boxes.tolist(), annotation.labels):
            boxes.append({"id": len(boxes) + 1, "image_id": image_id, "category_id": ids[label] + 1,
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(class_names)]
    _write_atomic(path, json.dumps({"images": images, "annotations": boxes, "categories": categories}, indent=1))


def write_yolo(annotations: Sequence[ImageAnnotation], folder: str | os.PathLike, class_names: Sequence[str]) -> None:
    """folder/images (copies of the images), folder/labels/<name>.txt and folder/data.yaml."""
    import yaml  # only YOLO needs it

    folder = Path(folder)
    ids = _class_ids(annotations, class_names)
    _unique_stems(annotations, folder)
    for annotation in annotations:
        source, target = Path(annotation.path), folder / "images" / Path(annotation.path).name
        if not (target.exists() and target.samefile(source)):  # YOLO finds labels by image location: copy in
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        lines = []
        for (x0, y0, x1, y1), label in zip(annotation.boxes.tolist(), annotation.labels):
            w, h = annotation.width, annotation.height
            values = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
            lines.append(f"{ids[label]} " + " ".join(f"{value:.6f}" for value in values) + "\n")
        _write_atomic(folder / "labels" / (source.stem + ".txt"), "".join(lines))
    _write_atomic(folder / "data.yaml", yaml.safe_dump({"names": list(class_names)}, allow_unicode=True))


def write_csv(annotations: Sequence[ImageAnnotation], path: str | os.PathLike) -> None:
    """One row per box; an image without boxes gets one row with empty class and box fields."""
    path = Path(path)
    rows = [list(CSV_COLUMNS)]
    for annotation in annotations:
        image = [_reference(annotation.path, path.parent), str(annotation.width), str(annotation.height)]
        rows += [image + [label] + [_number_text(value) for value in box]
                 for box, label in zip(annotation.boxes, annotation.labels)]
        if not annotation.labels:
            rows.append(image + [""] * 5)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    _write_atomic(path, buffer.getvalue())
