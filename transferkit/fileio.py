"""Writing files so that a reader never sees half of one.

Every file the project writes goes to a temporary sibling first and is then
renamed into place (`os.replace` is atomic on one file system): an
interrupted run leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary sibling path; renames it onto `path` if the block succeeds.

    For writers that want a file name (`model.save(tmp)`, `np.save(tmp)`).
    `suffix` keeps an extension that the writer checks (".keras", ".h5").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """An open handle on a temporary sibling, renamed onto `path` when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer: mode must be 'w' or 'wb'. Received: mode={mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes text to a temporary sibling, then renames it into place."""
    with atomic_writer(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_writer(path, "wb") as handle:
        handle.write(data)
    return Path(path)
