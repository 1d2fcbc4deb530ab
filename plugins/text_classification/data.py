"""Reading labelled texts from CSV, TSV, JSON Lines or class folders.

Every input that cannot be used (an empty text, a missing label, a file
that does not decode) is listed with the reason and skipped, or is fatal
with `on_bad_input: error`. Texts decoded with the fallback encoding are
listed too, but kept. Duplicates are dropped and reported: within the
training set, and training texts that also appear in the validation set
(they would inflate validation accuracy).

The reading pass keeps where each text is (file, byte offset and length),
not the text: `text_dataset` reads the texts back by row and tokenises them
in the input pipeline, so no step holds the dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from transferkit.compressed import inner_suffix, plain_copy
from transferkit.errors import DataError
from transferkit.paths import data_path

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclasses.dataclass(frozen=True)
class TextSource:
    """One file of texts, and how one text is read back from its bytes.

    `kind` is "table" (a CSV/TSV row; `field` is the text column's index),
    "jsonl" (a JSON Lines line; `field` is the text key) or "file" (the whole
    file is the text). Table and JSON Lines lines are decoded one by one,
    each falling back to `fallback_encoding` on its own; a whole file as one.
    `size` and `mtime_ns` are the file's when it was read: texts are read
    back only from the same file.
    """

    path: str
    kind: Literal["table", "jsonl", "file"]
    encoding: str
    fallback_encoding: str | None
    size: int
    mtime_ns: int
    delimiter: str = ","
    field: int | str = 0

    def parse(self, raw: bytes) -> str:
        """The text in `raw`, the bytes of one row, line or file as the reading pass found them."""
        if self.kind == "file":
            return _decode_as_read(raw, self)
        if self.kind == "jsonl":
            return str(json.loads(_decode_as_read(raw, self))[self.field])
        # The lines the reading pass gave csv.reader, each decoded as it was then.
        lines = [_decode_as_read(line, self) for line in split_lines(raw)]
        return next(csv.reader(lines, delimiter=self.delimiter))[self.field]

    def read(self, offset: int, length: int, origin: str) -> str:
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if (stat.st_size, stat.st_mtime_ns) != (self.size, self.mtime_ns):
                    raise DataError(f"{origin}: the file changed after it was read (size {self.size} -> "
                                    f"{stat.st_size}); its texts are no longer where they were. Start the run again")
                handle.seek(offset)
                return self.parse(handle.read(length))
        except DataError:
            raise
        except Exception as error:  # a text the reading pass parsed must parse again; say which
            raise DataError(f"{origin}: cannot read the text back: {type(error).__name__}: {error}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class FileSpan:
    """Where a text is: bytes `[offset, offset + length)` of a source, from line `line` (0: the whole file)."""

    source: TextSource
    offset: int
    length: int
    line: int

    def read(self) -> str:
        return self.source.read(self.offset, self.length, self.origin)

    @property
    def origin(self) -> str:
        return f"{self.source.path}:{self.line}" if self.line else self.source.path


@dataclasses.dataclass(frozen=True, slots=True)
class InlineText:
    """A text held in memory (examples built in code rather than read from a file)."""

    text: str
    origin: str

    def read(self) -> str:
        return self.text


@dataclasses.dataclass(slots=True)
class TextExample:
    """One labelled text. The reading pass keeps where it is, not the text: `text` reads it back.

    `key` is a digest of the normalised text, so duplicates are found without holding the texts.
    """

    label: str
    where: FileSpan | InlineText
    key: bytes

    @classmethod
    def of(cls, text: str, label: str, origin: str) -> "TextExample":
        return cls(label, InlineText(text, origin), text_key(text))

    @property
    def text(self) -> str:
        return self.where.read()

    @property
    def origin(self) -> str:
        return self.where.origin


@dataclasses.dataclass
class ReadResult:
    examples: list[TextExample]
    problems: list[dict[str, str]]  # fatal under on_bad_input: error
    notes: list[dict[str, str]]  # reported, never fatal (fallback decoding, duplicates)


class TextColumn(Sequence[str]):
    """The texts of `examples`, read from their files when indexed (reports read only the few they show)."""

    def __init__(self, examples: Sequence[TextExample]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [example.text for example in self.examples[index]]
        return self.examples[index].text


def read_examples(source: str, cfg) -> ReadResult:
    """Every usable example of one file or folder (as locations, not texts), with what was skipped and why."""
    path = data_path(source)
    if path.is_dir():
        result = _read_folder(path, cfg)
    elif path.is_file():
        suffix = inner_suffix(path)
        if suffix not in TABLE_SUFFIXES and suffix not in JSONL_SUFFIXES:
            raise DataError(f"{path}: unsupported file type {''.join(path.suffixes[-2:]) or 'without a suffix'!r}; "
                            f"expected .csv, .tsv, .jsonl (optionally .gz, .bz2 or .xz) or a folder of class "
                            f"sub-folders with .txt files")
        # Texts are read back by byte offset, so a compressed file is read from its decompressed copy.
        plain = plain_copy(path)
        result = (_read_table(plain, cfg, TABLE_SUFFIXES[suffix]) if suffix in TABLE_SUFFIXES
                  else _read_jsonl(plain, cfg))
        if plain != path:
            _name_the_users_file(result, plain, path)
            result.notes.insert(0, {"path": str(path), "reason": f"compressed; read from its decompressed copy "
                                                                  f"{plain} (line numbers are of the decompressed text)"})
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


def _name_the_users_file(result: ReadResult, plain: Path, path: Path) -> None:
    """Problems and notes found in the decompressed copy name the user's compressed file, at the same line."""
    copy = str(plain)
    for record in (*result.problems, *result.notes):
        where = str(record.get("path", ""))
        if where == copy or where.startswith(copy + ":"):
            record["path"] = str(path) + where[len(copy):]


def _decode_as_read(raw: bytes, source: TextSource) -> str:
    """Decodes as the reading pass did: `encoding`, else `fallback_encoding` (which it reported)."""
    try:
        return raw.decode(source.encoding)
    except UnicodeDecodeError:
        if source.fallback_encoding is None:
            raise
        return raw.decode(source.fallback_encoding, errors="replace")


def _decode(raw: bytes, cfg, where: str, notes: list, fallbacks: "_Fallbacks | None" = None) -> str | None:
    """`raw` in `data.encoding`, else in `data.fallback_encoding`: noted once per text, or counted by `fallbacks`."""
    try:
        return raw.decode(cfg.encoding)
    except UnicodeDecodeError as error:
        if cfg.fallback_encoding is None:
            return None
        if fallbacks is not None:
            fallbacks.add(where)
        else:
            notes.append({"path": where, "reason": f"not valid {cfg.encoding} ({error.reason} at byte "
                                                   f"{error.start}); read as {cfg.fallback_encoding}"})
        return raw.decode(cfg.fallback_encoding, errors="replace")


class _Fallbacks:
    """The lines of one file read with the fallback encoding: all counted, the first few named, one note."""

    SHOWN = 5

    def __init__(self, path: Path, cfg):
        self.path, self.cfg = path, cfg
        self.count = 0
        self.first: list[str] = []

    def add(self, where: str) -> None:
        self.count += 1
        if len(self.first) < self.SHOWN:
            self.first.append(where.rsplit(":", 1)[-1])

    def note(self) -> list[dict[str, str]]:
        if not self.count:
            return []
        more = ", ..." if self.count > len(self.first) else ""
        return [{"path": str(self.path),
                 "reason": f"{self.count:,} line{'s' if self.count != 1 else ''} not valid {self.cfg.encoding}, "
                           f"read as {self.cfg.fallback_encoding} (lines {', '.join(self.first)}{more})"}]


_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def split_lines(raw: bytes) -> list[bytes]:
    """`raw`'s lines with their ends, split after each \\n, \\r\\n or lone \\r (as text mode reads them)."""
    return _LINE.findall(raw)


class _Lines:
    """A binary file's lines, decoded, with the byte offset and number of the next line (for csv.reader)."""

    def __init__(self, handle, cfg, path: Path, notes: list):
        self.handle, self.cfg, self.path, self.notes = handle, cfg, path, notes
        self.offset = 0
        self.number = 0
        self.fallbacks = _Fallbacks(path, cfg)
        self.pending: list[bytes] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if not self.pending:
            # readline splits at \n only; a lone \r (old Mac files) ends a line too.
            self.pending = split_lines(self.handle.readline())[::-1]
        if not self.pending:
            raise StopIteration
        raw = self.pending.pop()
        self.number += 1
        self.offset += len(raw)
        if self.number == 1 and raw.startswith(UTF8_BOM):  # the header of an Excel "CSV UTF-8" file
            raw = raw[len(UTF8_BOM):]
        line = _decode(raw, self.cfg, f"{self.path}:{self.number}", self.notes, self.fallbacks)
        if line is None:
            raise DataError(f"{self.path}:{self.number}: not valid {self.cfg.encoding} and "
                            f"data.fallback_encoding is unset")
        return line


def _source(path: Path, cfg, kind: str, **fields) -> TextSource:
    stat = path.stat()
    return TextSource(str(path), kind, cfg.encoding, cfg.fallback_encoding, stat.st_size, stat.st_mtime_ns, **fields)


UTF8_BOM = b"\xef\xbb\xbf"


def _check_line_encoding(path: Path, cfg) -> None:
    """Tables and JSON Lines are split into lines as bytes: the encoding must write a newline as b"\\n"."""
    for field in ("encoding", "fallback_encoding"):
        name = getattr(cfg, field)
        if name is not None and "\n".encode(name) != b"\n":
            raise DataError(f"{path}: data.{field} {name!r} does not write a newline as one byte, which CSV, TSV "
                            f"and JSON Lines files are read by; convert the file to UTF-8")


def _read_table(path: Path, cfg, delimiter: str) -> ReadResult:
    problems, notes, examples = [], [], []
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # reviews and articles exceed the 128 KB default
    _check_line_encoding(path, cfg)
    with path.open("rb") as handle:
        lines = _Lines(handle, cfg, path, notes)
        reader = csv.reader(lines, delimiter=delimiter)
        kind = "TSV" if delimiter == "\t" else "CSV"

        def next_row():
            try:
                return next(reader, None)
            except csv.Error as error:
                raise DataError(f"{path}:{lines.number}: not a readable {kind} row: {error}") from None

        columns = next_row() or []
        for needed in (cfg.text_column, cfg.label_column, cfg.filter_column):
            if needed is not None and needed not in columns:
                raise DataError(f"{path}: no column {needed!r} (data.text_column / label_column / filter_column); "
                                f"columns are {columns}")

        def column(name):  # the last of repeated names, as csv.DictReader reads them
            return len(columns) - 1 - columns[::-1].index(name)

        text_index, label_index = column(cfg.text_column), column(cfg.label_column)
        filter_index = column(cfg.filter_column) if cfg.filter_column is not None else None
        source = _source(path, cfg, "table", delimiter=delimiter, field=text_index)

        def field(row, index):
            return row[index] if index < len(row) else None

        while True:
            start, first_line = lines.offset, lines.number + 1
            row = next_row()
            if row is None:
                break
            if not row:  # a blank line, as csv.DictReader skips them
                continue
            if filter_index is not None and (field(row, filter_index) or "") != cfg.filter_value:
                continue
            span = FileSpan(source, start, lines.offset - start, first_line)
            _add(examples, problems, field(row, text_index), field(row, label_index), span)
    return ReadResult(examples, problems, notes + lines.fallbacks.note())


def _read_jsonl(path: Path, cfg) -> ReadResult:
    problems, notes, examples = [], [], []
    _check_line_encoding(path, cfg)
    source = _source(path, cfg, "jsonl", field=cfg.text_column)
    fallbacks = _Fallbacks(path, cfg)
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if number == 1 and raw.startswith(UTF8_BOM):  # a byte-order mark is not part of the first object
                raw, start = raw[len(UTF8_BOM):], start + len(UTF8_BOM)
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            line = _decode(raw, cfg, where, notes, fallbacks)
            try:
                row = json.loads(line) if line is not None else None
            except json.JSONDecodeError as error:
                problems.append({"path": where, "reason": f"not a JSON object: {error.msg}"})
                continue
            except RecursionError:
                problems.append({"path": where, "reason": "JSON nested too deeply"})
                continue
            if not isinstance(row, dict):
                problems.append({"path": where, "reason": "expected a JSON object per line"})
                continue
            if cfg.filter_column is not None and str(row.get(cfg.filter_column, "")) != cfg.filter_value:
                continue
            text, label = row.get(cfg.text_column), row.get(cfg.label_column)
            if text is not None and (isinstance(text, bool) or not isinstance(text, (str, int, float))):
                problems.append({"path": where, "reason": f"{cfg.text_column!r} is a {_json_kind(text)}; "
                                                          f"expected a string (or a number)"})
                continue
            if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
                problems.append({"path": where, "reason": f"{cfg.label_column!r} is a {_json_kind(label)}; "
                                                          f"expected a string or an integer"})
                continue
            _add(examples, problems, text, None if label is None else str(label),
                 FileSpan(source, start, len(raw), number))
    return ReadResult(examples, problems, notes + fallbacks.note())


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
            raw = file.read_bytes()
            text = _decode(raw, cfg, str(file), notes)
            if text is None:
                problems.append({"path": str(file), "reason": f"not valid {cfg.encoding} (no fallback encoding)"})
                continue
            _add(examples, problems, text, class_dir.name, FileSpan(_source(file, cfg, "file"), 0, len(raw), 0))
    return ReadResult(examples, problems, notes)


def _json_kind(value) -> str:
    return {dict: "JSON object", list: "JSON array", bool: "boolean", float: "number"}.get(type(value), "value")


def _add(examples: list, problems: list, text, label, span: FileSpan) -> None:
    if text is None or not str(text).strip():
        problems.append({"path": span.origin, "reason": "empty text"})
    elif label is None or not str(label).strip():
        problems.append({"path": span.origin, "reason": "missing label"})
    else:
        examples.append(TextExample(str(label).strip(), span, text_key(str(text))))


def text_key(text: str) -> bytes:
    """A 16-byte digest of the normalised text: equal for texts that differ only in case and spacing."""
    return hashlib.blake2b(normalised(text).encode("utf-8"), digest_size=16).digest()


def normalised(text: str) -> str:
    """The form duplicates are compared in: case and whitespace do not make a text new."""
    return " ".join(text.split()).lower()


def drop_duplicates(train: list[TextExample], val: list[TextExample]) -> tuple[list[TextExample], list[dict]]:
    """Training examples without repeats and without texts that are also in `val`; what was dropped, reported."""
    notes = []
    in_val = {e.key: e for e in val}
    seen: dict[bytes, TextExample] = {}
    kept = []
    for example in train:
        if example.key in in_val:
            notes.append({"path": example.origin,
                          "reason": f"duplicate of validation text {in_val[example.key].origin}; dropped"})
        elif example.key in seen:
            notes.append({"path": example.origin,
                          "reason": f"duplicate of training text {seen[example.key].origin}; dropped"})
        else:
            seen[example.key] = example
            kept.append(example)
    return kept, notes


# Texts tokenised per map call when the token ids are cached: larger calls amortise the tokenizer's overhead.
ENCODE_CHUNK = 256


class TextRows:
    """One split's texts as a tf.data source, read back from their files and tokenised in the graph.

    cache: "none" holds only the row indices, and each batch is read and
    tokenised when it is needed; "memory" keeps the token ids after the first
    pass, once for every pipeline that `batches` builds from this object.
    Either way the shuffle has the same seed and buffer over the same rows,
    so both give the same batches.

    Example:

    ```python
    rows = TextRows(examples, labels, encoder, cache="none")
    train = rows.batches(32, shuffle=True, seed=0)   # ({"token_ids", "padding_mask"}, labels)
    ```
    """

    def __init__(self, examples: Sequence[TextExample], labels: np.ndarray, encoder, cache: str):
        import tensorflow as tf

        if cache not in ("none", "memory"):
            raise ValueError(f"cache: expected none or memory. Received: cache={cache!r}")
        self.examples, self.encoder, self.cache = examples, encoder, cache
        self.labels = tf.constant(np.asarray(labels, np.int32))
        self.count = len(examples)
        rows = tf.data.Dataset.range(self.count)
        if cache == "memory":
            rows = rows.batch(ENCODE_CHUNK).map(self._tokenised, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
            # Known again after unbatch: Keras then runs epochs over it exactly as over the index stream.
            rows = rows.apply(tf.data.experimental.assert_cardinality(self.count)).cache()
        self.rows = rows

    def _read(self, indices) -> np.ndarray:
        return np.asarray([self.examples[i].text.encode("utf-8") for i in indices], dtype=object)

    def _tokenised(self, indices):
        import tensorflow as tf

        texts = tf.numpy_function(self._read, [indices], tf.string, stateful=False)
        texts.set_shape([None])
        return self.encoder(texts), tf.gather(self.labels, indices)

    def indexed_batches(self, batch_size: int):
        """Batches of ({"token_ids", "padding_mask"}, labels, rows) in row order, tokenised from the texts."""
        import tensorflow as tf

        def with_rows(indices):
            inputs, labels = self._tokenised(indices)
            return inputs, labels, indices

        return tf.data.Dataset.range(self.count).batch(batch_size).map(with_rows,
                                                                        num_parallel_calls=tf.data.AUTOTUNE)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0):
        """Batches of ({"token_ids", "padding_mask"}, labels), reshuffled each epoch if `shuffle`."""
        import tensorflow as tf

        rows = self.rows
        if shuffle:
            rows = rows.shuffle(self.count, seed=seed, reshuffle_each_iteration=True)
        if self.cache == "memory":
            return rows.batch(batch_size)
        return rows.batch(batch_size).map(self._tokenised, num_parallel_calls=tf.data.AUTOTUNE)
