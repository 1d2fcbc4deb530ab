"""Compressed inputs (`.gz`, `.bz2`, `.xz`): read as they are, as corpora are often shipped.

Tables and JSON Lines read in one pass open through `open_binary`. Readers
that come back to a text by its byte offset (the text task keeps locations,
not texts) read a plain copy made once under `$TRANSFERKIT_HOME/decompressed`
and reused while the compressed file is unchanged (same size and
modification time).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
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


def open_binary(path: str | os.PathLike) -> IO[bytes]:
    """The file's bytes, decompressed on the fly when its suffix says it is compressed."""
    path = Path(path)
    opener = OPENERS.get(path.suffix.lower())
    return opener(path, "rb") if opener else open(path, "rb")


def plain_copy(path: str | os.PathLike) -> Path:
    """A compressed file's decompressed copy (made once, reused while the source is unchanged); a plain file itself."""
    from transferkit import paths
    from transferkit.fileio import atomic_path

    path = Path(path)
    if not is_compressed(path):
        return path
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    copy = paths.home() / "decompressed" / f"{path.stem.rsplit('.', 1)[0]}-{key}{inner_suffix(path)}"
    if copy.is_file():
        return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(copy) as tmp, open_binary(path) as source, open(tmp, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
    except DAMAGE as error:
        raise DataError(f"{path}: cannot be decompressed ({type(error).__name__}: {error}); "
                        f"expected a complete {path.suffix} file") from None
    return copy
