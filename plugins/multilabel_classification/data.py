"""Listing images with several labels each: a `path,labels` CSV, a CSV of 0/1 label columns, or a folder of
images with a label file per image. Listing checks names and files; decoding is `transferkit.vision`'s."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from transferkit.compressed import inner_suffix, read_csv_table
from transferkit.errors import DataError
from transferkit.fileio import checked_rows
from transferkit.vision.samples import IMAGE_EXTENSIONS

# A label file is a few names; anything larger is not one.
MAX_LABEL_FILE_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    path: str
    labels: tuple[str, ...]  # distinct, in the order given; empty: none of the labels


def list_labelled_images(source: str | os.PathLike, separator: str = ";"
                         ) -> tuple[list[LabelledImage], list[dict[str, str]], list[str] | None]:
    """(images, problems, the label columns of a 0/1 CSV or None) of a CSV or a folder of images."""
    source = Path(source)
    if source.is_dir():
        images, problems = _list_folder(source, separator)
        return images, problems, None
    if source.is_file() and inner_suffix(source) == ".csv":
        return _list_csv(source, separator)
    if not source.exists():
        raise DataError(f"{source}: not found; expected a CSV file (path,labels) or a folder of images "
                        f"with a label file each")
    raise DataError(f"{source}: expected a .csv file or a folder of images with a label file each")


def _split(text: str, separator: str) -> tuple[str, ...]:
    names = []
    for line in text.replace("\r", "\n").split("\n"):
        for part in line.split(separator):
            name = part.strip()
            if name and name not in names:
                names.append(name)
    return tuple(names)


def _list_folder(root: Path, separator: str) -> tuple[list[LabelledImage], list[dict[str, str]]]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{root}: no images found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    images, problems = [], []
    for file in files:
        label_file = file.with_suffix(".txt")
        if not label_file.is_file():
            problems.append({"path": str(file), "reason": f"no label file {label_file.name} beside it"})
            continue
        if label_file.stat().st_size > MAX_LABEL_FILE_BYTES:
            problems.append({"path": str(label_file), "reason": f"{label_file.stat().st_size} bytes; a label file "
                                                                f"holds at most {MAX_LABEL_FILE_BYTES}"})
            continue
        raw = label_file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append({"path": str(label_file), "reason": f"not UTF-8 text (byte {error.start})"})
            continue
        if "\x00" in text:
            problems.append({"path": str(label_file), "reason": "contains NUL bytes; expected label names"})
            continue
        images.append(LabelledImage(str(file), _split(text, separator)))
    if not images:
        raise DataError(f"{root}: no image has a usable label file: " + "; ".join(
            f"{p['path']}: {p['reason']}" for p in problems[:3]))
    return images, problems


def _list_csv(path: Path, separator: str) -> tuple[list[LabelledImage], list[dict[str, str]], list[str] | None]:
    reader = read_csv_table(path, "path,labels rows")
    fields = reader.fieldnames
    if "path" not in fields:
        raise DataError(f"{path}: expected a header with a 'path' column and a 'labels' column (or one 0/1 "
                        f"column per label), received {fields}")
    columns = None
    if "labels" not in fields:
        columns = [f for f in fields if f and f != "path"]
        if fields == ["path", "label"]:
            raise DataError(f"{path}: a path,label CSV has one label per image (task image_classification); "
                            f"multi-label expects a 'labels' column ('{separator}' between labels) or one 0/1 "
                            f"column per label")
        if not columns:
            raise DataError(f"{path}: expected a 'labels' column or one 0/1 column per label besides 'path', "
                            f"received {fields}")
        if len(set(columns)) != len(columns):
            raise DataError(f"{path}: label columns appear twice: {sorted({c for c in columns if columns.count(c) > 1})}")
    images, problems = [], []
    for line, row in enumerate(checked_rows(reader, str(path)), start=2):
        rel = (row.get("path") or "").strip()
        if not rel:
            problems.append({"path": f"{path}:{line}", "reason": "row with an empty path"})
            continue
        if columns is None:
            labels = _split(row.get("labels") or "", separator)
        else:
            values = {c: (row.get(c) or "").strip() for c in columns}
            wrong = {c: v for c, v in values.items() if v not in ("0", "1")}
            if wrong:
                column, value = next(iter(wrong.items()))
                problems.append({"path": f"{path}:{line}", "reason": f"column {column!r} is {value!r}; "
                                                                     f"expected 0 or 1"})
                continue
            labels = tuple(c for c in columns if values[c] == "1")
        file = (path.parent / rel).resolve()
        if not file.is_file():
            problems.append({"path": f"{path}:{line}", "reason": f"file not found: {file}"})
            continue
        images.append(LabelledImage(str(file), labels))
    if not images:
        raise DataError(f"{path}: no usable rows" + (": " + "; ".join(
            f"{p['path']}: {p['reason']}" for p in problems[:3]) if problems else ""))
    return images, problems, columns
