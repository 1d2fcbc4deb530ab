"""Reading labelled texts from CSV, TSV, JSON Lines or class folders.

Every input that cannot be used (an empty text, a missing label, a file
that does not decode) is listed with the reason and skipped, or is fatal
with `on_bad_input: error`. Texts decoded with the fallback encoding are
listed too, but kept. Duplicates are dropped and reported: within the
training set, and training texts that also appear in the validation set
(they would inflate validation accuracy).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from transferkit.errors import DataError
from transferkit.paths import data_path

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclasses.dataclass
class TextExample:
    text: str
    label: str
    origin: str  # "file:line" or a file path, for reports


@dataclasses.dataclass
class ReadResult:
    examples: list[TextExample]
    problems: list[dict[str, str]]  # fatal under on_bad_input: error
    notes: list[dict[str, str]]  # reported, never fatal (fallback decoding, duplicates)


def read_examples(source: str, cfg) -> ReadResult:
    """All usable examples of one file or folder, with what was skipped and why."""
    path = data_path(source)
    if path.is_dir():
        result = _read_folder(path, cfg)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            result = _read_table(path, cfg, TABLE_SUFFIXES[suffix])
        elif suffix in JSONL_SUFFIXES:
            result = _read_jsonl(path, cfg)
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r}; expected .csv, .tsv, .jsonl or a folder "
                            f"of class sub-folders with .txt files")
    elif not path.exists():
        raise DataError(f"{path}: not found; expected a CSV, TSV or JSON Lines file, or a folder of class "
                        f"sub-folders with .txt files")
    else:
        raise DataError(f"{path}: not a regular file or folder")
    if cfg.label_names:
        unknown = sorted({e.label for e in result.examples} - set(cfg.label_names))
        if unknown:
            raise DataError(f"{path}: labels {unknown[:5]} are not in data.label_names "
                            f"(keys: {sorted(cfg.label_names)})")
        for example in result.examples:
            example.label = cfg.label_names[example.label]
    if cfg.on_bad_input == "error" and result.problems:
        raise DataError.for_bad_inputs(result.problems, "data.on_bad_input", where=str(path))
    return result


def _decode(raw: bytes, cfg, where: str, notes: list) -> str | None:
    try:
        return raw.decode(cfg.encoding)
    except UnicodeDecodeError as error:
        if cfg.fallback_encoding is None:
            return None
        notes.append({"path": where, "reason": f"not valid {cfg.encoding} ({error.reason} at byte {error.start}); "
                                               f"read as {cfg.fallback_encoding}"})
        return raw.decode(cfg.fallback_encoding, errors="replace")


def _read_table(path: Path, cfg, delimiter: str) -> ReadResult:
    problems, notes = [], []
    text = _decode(path.read_bytes(), cfg, str(path), notes)
    if text is None:
        raise DataError(f"{path}: not valid {cfg.encoding} and data.fallback_encoding is unset")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # reviews and articles exceed the 128 KB default
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    columns = reader.fieldnames or []
    for needed in (cfg.text_column, cfg.label_column, cfg.filter_column):
        if needed is not None and needed not in columns:
            raise DataError(f"{path}: no column {needed!r} (data.text_column / label_column / filter_column); "
                            f"columns are {columns}")
    examples = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if cfg.filter_column is not None and (row.get(cfg.filter_column) or "") != cfg.filter_value:
            continue
        _add(examples, problems, row.get(cfg.text_column), row.get(cfg.label_column), where)
    return ReadResult(examples, problems, notes)


def _read_jsonl(path: Path, cfg) -> ReadResult:
    problems, notes, examples = [], [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            line = _decode(raw, cfg, where, notes)
            try:
                row = json.loads(line) if line is not None else None
            except json.JSONDecodeError as error:
                problems.append({"path": where, "reason": f"not a JSON object: {error.msg}"})
                continue
            if not isinstance(row, dict):
                problems.append({"path": where, "reason": "expected a JSON object per line"})
                continue
            if cfg.filter_column is not None and str(row.get(cfg.filter_column, "")) != cfg.filter_value:
                continue
            label = row.get(cfg.label_column)
            _add(examples, problems, row.get(cfg.text_column), None if label is None else str(label), where)
    return ReadResult(examples, problems, notes)


def _read_folder(root: Path, cfg) -> ReadResult:
    problems, notes, examples = [], [], []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; expected one sub-folder of .txt files per class")
    for class_dir in classes:
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() == ".txt" and f.is_file())
        if not files:
            problems.append({"path": str(class_dir), "reason": "class folder with no .txt files; class skipped"})
        for file in files:
            text = _decode(file.read_bytes(), cfg, str(file), notes)
            if text is None:
                problems.append({"path": str(file), "reason": f"not valid {cfg.encoding} (no fallback encoding)"})
                continue
            _add(examples, problems, text, class_dir.name, str(file))
    return ReadResult(examples, problems, notes)


def _add(examples: list, problems: list, text, label, where: str) -> None:
    if text is None or not str(text).strip():
        problems.append({"path": where, "reason": "empty text"})
    elif label is None or not str(label).strip():
        problems.append({"path": where, "reason": "missing label"})
    else:
        examples.append(TextExample(str(text), str(label).strip(), where))


def normalised(text: str) -> str:
    """The form duplicates are compared in: case and whitespace do not make a text new."""
    return " ".join(text.split()).lower()


def drop_duplicates(train: list[TextExample], val: list[TextExample]) -> tuple[list[TextExample], list[dict]]:
    """Training examples without repeats and without texts that are also in `val`; what was dropped, reported."""
    notes = []
    in_val = {normalised(e.text): e.origin for e in val}
    seen: dict[str, str] = {}
    kept = []
    for example in train:
        key = normalised(example.text)
        if key in in_val:
            notes.append({"path": example.origin, "reason": f"duplicate of validation text {in_val[key]}; dropped"})
        elif key in seen:
            notes.append({"path": example.origin, "reason": f"duplicate of training text {seen[key]}; dropped"})
        else:
            seen[key] = example.origin
            kept.append(example)
    return kept, notes


def stratified_split(examples: Sequence[TextExample], held_out: int | float, seed: int
                     ) -> tuple[list[TextExample], list[TextExample]]:
    """(rest, held_out): per class the same share held out, seeded; `held_out` a count or a fraction."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        by_label[example.label].append(index)
    total = len(examples)
    fraction = held_out / total if isinstance(held_out, int) else float(held_out)
    if isinstance(held_out, int) and held_out >= total:
        raise DataError(f"data.val_count: {held_out} is not less than the {total} examples available")
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        count = int(round(len(indices) * fraction))
        chosen.update(int(i) for i in rng.permutation(indices)[:count])
    rest = [e for i, e in enumerate(examples) if i not in chosen]
    out = [e for i, e in enumerate(examples) if i in chosen]
    return rest, out
