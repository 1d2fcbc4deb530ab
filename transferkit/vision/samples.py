"""Labelled image files: a folder with one sub-folder per class, or a `path,label` CSV (compressed or not).

Listing checks only names and existence; decoding is the tasks' (`transferkit.vision.images`). Image
classification, `transferkit data pack` and any task that reads class-labelled images share it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from transferkit.compressed import inner_suffix, read_csv_table
from transferkit.errors import DataError
from transferkit.fileio import checked_rows

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclasses.dataclass
class Sample:
    path: str
    label: str


def list_samples(source: str | os.PathLike) -> tuple[list[Sample], list[dict[str, str]]]:
    """Samples of an image folder (class sub-folders) or a `path,label` CSV."""
    source = Path(source)
    if source.is_dir():
        return _list_folder(source)
    if source.is_file() and inner_suffix(source) == ".csv":  # also .csv.gz, .csv.bz2, .csv.xz
        return _list_csv(source)
    if not source.exists():
        raise DataError(f"{source}: not found; expected an image folder with one sub-folder per class, or a CSV file")
    raise DataError(f"{source}: expected an image folder or a .csv file")


def _list_folder(root: Path) -> tuple[list[Sample], list[dict[str, str]]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; expected one sub-folder of images per class")
    samples, problems = [], []
    real_root = root.resolve()
    seen: dict[Path, str] = {}
    for class_dir in class_dirs:
        if class_dir.is_symlink():
            target = class_dir.resolve()
            # A link to the root, above it or into it would re-list images as a new class.
            if real_root.is_relative_to(target) or target.is_relative_to(real_root):
                problems.append({"path": str(class_dir), "reason": f"symbolic link to {target}, inside or above "
                                                                   f"the dataset root; skipped"})
                continue
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            problems.append({"path": str(class_dir), "reason": "empty class folder (no images); class skipped"})
            continue
        for file in files:
            real = file.resolve()
            if real in seen:
                problems.append({"path": str(file), "reason": f"same file as {seen[real]}; counted once"})
                continue
            seen[real] = str(file)
            samples.append(Sample(str(file), class_dir.name))
    if not samples:
        raise DataError(f"{root}: no images found in any class folder (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return samples, problems


def _list_csv(path: Path) -> tuple[list[Sample], list[dict[str, str]]]:
    samples, problems = [], []
    reader = read_csv_table(path, "path,label rows")
    fields = reader.fieldnames
    if "path" not in fields or "label" not in fields:
        raise DataError(f"{path}: expected a header with columns 'path' and 'label', received {fields}")
    for line, row in enumerate(checked_rows(reader, str(path)), start=2):
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not rel or not label:
            problems.append({"path": f"{path}:{line}", "reason": "row with an empty path or label"})
            continue
        file = (path.parent / rel).resolve()
        if not file.is_file():
            problems.append({"path": f"{path}:{line}", "reason": f"file not found: {file}"})
            continue
        samples.append(Sample(str(file), label))
    if not samples:
        raise DataError(f"{path}: no usable rows")
    return samples, problems
