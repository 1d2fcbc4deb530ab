"""Writing files so that a reader never sees half of one.

Every file the project writes goes to a temporary sibling first and is then
renamed into place (`os.replace` is atomic on one file system): an
interrupted run leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Callable, Iterator


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as error:  # say the user's path, not the hidden temporary one
        from transferkit.errors import TransferkitError

        raise TransferkitError(f"{path}: cannot be written ({error.strerror or error})") from None
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


# Temporary folders (a checkpoint or a SavedModel being written) carry their
# writer's pid, so that a later run can tell a dead writer's leftovers from a
# live writer's work in progress.
TEMP_PREFIX = ".tmp-"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A unique hidden name next to `path` for writing it, marked with this process's pid."""
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (a writer that may still finish its file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temporaries(folder: str | os.PathLike, of: str | None = None) -> list[Path]:
    """Removes the `temporary_sibling`s in `folder` whose writer is gone; returns what it removed.

    `of`: only the temporaries of that name (in a folder the project does not own, such as a pack's parent).
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for candidate in folder.glob(f"{TEMP_PREFIX}*"):
        if of is not None and not candidate.name.endswith(f"-{of}"):
            continue
        pid_text = candidate.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or process_alive(int(pid_text)):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 4 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def unique_names(paths, suffix: str) -> list[str]:
    """One output file name per input path, `stem + suffix`, numbered where stems repeat.

    `a/x.png` and `b/x.png` become `x.png` and `x-2.png`, so no output overwrites another.
    """
    names, used = [], set()
    for path in paths:
        stem = Path(path).stem or "output"
        name, number = f"{stem}{suffix}", 1
        while name in used:
            number += 1
            name = f"{stem}-{number}{suffix}"
        used.add(name)
        names.append(name)
    return names


# -- bounded readers of YAML and JSON --------------------------------------------------------------------------


class _AliasFound(Exception):
    """An alias (`*name`) in a YAML document; carries the line and the anchor's name."""


_NO_ALIAS_LOADER = None


def _no_alias_loader():
    """yaml.SafeLoader refusing aliases, built once (PyYAML is imported only by what reads YAML)."""
    global _NO_ALIAS_LOADER
    if _NO_ALIAS_LOADER is None:
        import yaml

        class NoAliasLoader(yaml.SafeLoader):
            def compose_node(self, parent, index):
                if self.check_event(yaml.events.AliasEvent):
                    event = self.peek_event()
                    raise _AliasFound(event.start_mark.line + 1, event.anchor)
                return super().compose_node(parent, index)

        _NO_ALIAS_LOADER = NoAliasLoader
    return _NO_ALIAS_LOADER


def load_yaml(text: str, source: str, error: type[Exception] | None = None):
    """YAML text -> plain data with the safe loader, refusing aliases (`*name`).

    An alias repeats a node, so a few nested aliases expand to billions of nodes (a "billion
    laughs" bomb): no config or data file of ours needs them. Raises `error` (ConfigError by
    default) naming `source`, the line and what was found.
    """
    import yaml

    from transferkit.errors import ConfigError

    error = error or ConfigError
    try:
        return yaml.load(text, Loader=_no_alias_loader())  # noqa: S506  (a SafeLoader subclass)
    except _AliasFound as found:
        line, anchor = found.args
        raise error(f"{source}: line {line}: YAML aliases (*{anchor}) are not accepted; write the value out") from None
    except yaml.YAMLError as problem:
        raise error(f"{source}: not valid YAML: {' '.join(str(problem).split())}") from None
    except RecursionError:
        raise error(f"{source}: YAML nested too deeply") from None


def load_json(text: str | bytes, source: str, error: type[Exception] | None = None):
    """JSON text -> plain data; malformed or absurdly nested JSON raises `error` (DataError by default)."""
    import json

    from transferkit.errors import DataError

    error = error or DataError
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"{source}: not valid JSON: {problem}") from None
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply") from None
    except UnicodeDecodeError as problem:
        raise error(f"{source}: JSON is not UTF-8 (byte {problem.start})") from None


def checked_rows(reader, source: str):
    """Rows of a `csv` reader; a row the module refuses (a field over its size limit, a NUL byte)
    becomes a DataError naming the file and line instead of a `_csv.Error` traceback."""
    import csv

    from transferkit.errors import DataError

    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError(f"{source}: line {reader.line_num}: not a readable CSV row: {error}") from None
        yield row


def ensure_room(path: str | os.PathLike, nbytes: int) -> None:
    """Raises TransferkitError unless `nbytes` more fit next to `path` (free space and the file size limit).

    HDF5 files (Keras weights) are written by h5py, which can crash the process when a write fails
    half-way: a file that cannot fit is refused before it is started, with the numbers.
    """
    import resource

    from transferkit.errors import TransferkitError

    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:  # the disk it will be on: nothing is created
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if nbytes > free:
        raise TransferkitError(f"{path}: needs about {nbytes / 2**20:.1f} MB, {folder} has "
                               f"{free / 2**20:.1f} MB free; free some space (nothing was half-written)")
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        raise TransferkitError(f"{path}: needs about {nbytes / 2**20:.1f} MB, more than this process may write "
                               f"to one file ({limit / 2**20:.1f} MB, ulimit -f); nothing was half-written")


def weights_bytes(*models) -> int:
    """A generous estimate of the bytes of a Keras weights file for `models` (their variables and optimizers)."""
    total = 0
    for model in models:
        variables = list(model.weights)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            variables += list(getattr(optimizer, "variables", []))
        for variable in variables:
            shape = tuple(int(d) for d in variable.shape)
            count = 1
            for d in shape:
                count *= d
            total += count * 4 + 512  # float32 data and HDF5 object headers
    return int(total * 1.1) + (1 << 20)


@contextlib.contextmanager
def staged_folder(dest: str | os.PathLike, recheck: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yields an empty hidden sibling of `dest` to fill; when the block ends cleanly, `recheck(dest)`
    runs (the destination may have changed meanwhile) and the filled folder replaces `dest`.

    An earlier `dest` is moved aside first and put back if the swap fails; an error inside the block
    leaves `dest` as it was and removes the staging folder.

    Example:

    ```python
    with staged_folder("presets/my-net") as staging:
        model.save_to_preset(str(staging))
    ```
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would make the preset private
    retired = None
    try:
        yield staging
        if recheck is not None:
            recheck(dest)
        if dest.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, retired / dest.name)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None and not dest.exists():
            os.replace(retired / dest.name, dest)  # put the earlier folder back
        raise
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
