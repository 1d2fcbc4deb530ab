"""Compressed inputs (`.gz`, `.bz2`, `.xz`): read as they are, as corpora are often shipped.

Tables and JSON Lines read in one pass open through `open_binary`. Readers
that come back to a text by its byte offset (the text task keeps locations,
not texts) read a plain copy made once under `$TRANSFERKIT_HOME/decompressed`
and reused while the compressed file is unchanged (same size and
modification time); a new copy replaces the source's older ones.

Every decompressed stream is bounded, so a small file cannot expand into
gigabytes (a decompression bomb): at most `max_decompressed_bytes()` (8 GiB,
or `TRANSFERKIT_MAX_DECOMPRESSED_MB`), and at most `MAX_RATIO` times the
compressed bytes read once past the first `RATIO_GRACE_BYTES`. Text corpora
compress 3-10x; a bomb, a thousand times and more.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import shutil
from pathlib import Path
from typing import IO

from transferkit.errors import DataError

OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# What each format raises on a damaged stream.
DAMAGE = (OSError, EOFError, lzma.LZMAError)


def is_compressed(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in OPENERS


def inner_suffix(path: str | os.PathLike) -> str:
    """The suffix under the compression one: `.csv` for `reviews.csv.gz`; the suffix of a plain file."""
    path = Path(path)
    return Path(path.stem).suffix.lower() if is_compressed(path) else path.suffix.lower()


MAX_RATIO = 200
RATIO_GRACE_BYTES = 16 << 20
DEFAULT_MAX_DECOMPRESSED_MB = 8192


def max_decompressed_bytes() -> int:
    """The most bytes one compressed input may expand to: `TRANSFERKIT_MAX_DECOMPRESSED_MB` (default 8192)."""
    text = os.environ.get("TRANSFERKIT_MAX_DECOMPRESSED_MB", str(DEFAULT_MAX_DECOMPRESSED_MB))
    try:
        megabytes = int(text)
    except ValueError:
        megabytes = -1
    if not 1 <= megabytes <= 1 << 24:
        raise DataError(f"TRANSFERKIT_MAX_DECOMPRESSED_MB: expected a whole number of MB in [1, {1 << 24}]. "
                        f"Received: {text!r}")
    return megabytes << 20


class BoundedDecompression(io.RawIOBase):
    """A decompressing reader that raises DataError (naming the file) past the size or ratio limit."""

    def __init__(self, path: Path, opener, limit: int):
        self.path, self.limit, self.produced = path, limit, 0
        self.raw = open(path, "rb")
        self.stream = opener(self.raw, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        self.produced += len(data)
        if self.produced > self.limit:
            raise DataError(f"{self.path}: decompresses to more than {self.limit >> 20} MB; refused (raise "
                            f"TRANSFERKIT_MAX_DECOMPRESSED_MB if it is real data)")
        consumed = max(self.raw.tell(), 1)
        if self.produced > RATIO_GRACE_BYTES and self.produced > MAX_RATIO * consumed:
            raise DataError(f"{self.path}: expands more than {MAX_RATIO} times ({consumed:,} bytes gave "
                            f"{self.produced:,}); refused as a decompression bomb")
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.raw.close()
            super().close()


def open_binary(path: str | os.PathLike, limit: int | None = None) -> IO[bytes]:
    """The file's bytes, decompressed on the fly when its suffix says it is compressed, within `limit` bytes
    (default `max_decompressed_bytes()`) and the ratio limit."""
    path = Path(path)
    opener = OPENERS.get(path.suffix.lower())
    if opener is None:
        return open(path, "rb")
    return io.BufferedReader(BoundedDecompression(path, opener, limit or max_decompressed_bytes()), 1 << 20)


# A table read whole into memory (an image list, detection annotations) is at most this many bytes.
MAX_TABLE_BYTES = 512 << 20


def read_bounded(path: str | os.PathLike, limit: int = MAX_TABLE_BYTES) -> bytes:
    """The whole (decompressed) content of a table read into memory; DataError naming the file past `limit`."""
    path = Path(path)
    with open_binary(path, limit=limit) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path}: more than {limit >> 20} MB; a table read whole is at most that")
    return data


def plain_copy(path: str | os.PathLike) -> Path:
    """A compressed file's decompressed copy (made once, reused while the source is unchanged); a plain file itself."""
    from transferkit import paths
    from transferkit.fileio import atomic_path

    path = Path(path)
    if not is_compressed(path):
        return path
    stat = path.stat()
    source_key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    version = hashlib.sha256(f"{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:8]
    prefix = f"{path.stem.rsplit('.', 1)[0][:80]}-{source_key}-"
    copy = paths.home() / "decompressed" / f"{prefix}{version}{inner_suffix(path)}"
    if copy.is_file():
        return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(copy) as tmp, open_binary(path) as source, open(tmp, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
    except DAMAGE as error:
        raise DataError(f"{path}: cannot be decompressed ({type(error).__name__}: {error}); "
                        f"expected a complete {path.suffix} file") from None
    for older in copy.parent.glob(f"{prefix}*"):  # the copies of this source's earlier versions
        if older != copy and not older.name.startswith("."):
            older.unlink(missing_ok=True)
    return copy


def read_csv_table(path: str | os.PathLike, rows: str):
    """A `csv.DictReader` over a (decompressed) UTF-8 CSV with its header names stripped; a DataError naming
    the file when it is damaged, not UTF-8 text, holds NUL bytes or has no readable header. `rows` says
    what its rows should be ("path,label rows"), for the messages."""
    import csv

    path = Path(path)
    try:
        text = read_bounded(path).decode("utf-8")
    except DAMAGE as error:
        raise DataError(f"{path}: cannot be read ({type(error).__name__}: {error})") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text CSV (byte {error.start}); expected {rows}") from None
    if "\x00" in text:
        raise DataError(f"{path}: contains NUL bytes; expected a text CSV with {rows}")
    reader = csv.DictReader(text.splitlines())
    try:
        reader.fieldnames = [name.strip() for name in (reader.fieldnames or [])]
    except csv.Error as error:
        raise DataError(f"{path}: line 1: not a readable CSV header: {error}") from None
    return reader
