"""What transferkit may replace or delete: only folders and files that carry its own marker.

A run folder holds `.transferkit-run.json`, written when the run starts, listing
the names the run wrote. A fresh start in that folder removes those names and
nothing else. A folder without the marker is taken only when it is new or empty;
a non-empty folder that is not ours is a one-line error before anything is
written or read. Runs written before the marker existed are recognised by their
`config.yaml`, `info.json` (a JSON object naming a task) and `checkpoints/`; demo
folders by holding only the demo's folders, with such a run in `run/`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_write_text

RUN_MARKER = ".transferkit-run.json"
DEMO_MARKER = ".transferkit-demo.json"
MARKERS = {"run": RUN_MARKER, "demo": DEMO_MARKER}  # the marker file of each kind of folder
_MARKER_BYTES = 1 << 20  # a marker is a short list of names; a larger file is not ours


def _read_marker(path: Path, kind: str) -> dict | None:
    """The marker's JSON object when it is a well-formed marker of `kind`; None otherwise."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _MARKER_BYTES:
            return None
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("kind") != kind:
        return None
    return marker


def _is_legacy_run(folder: Path) -> bool:
    """A run written before the marker: config.yaml, checkpoints/ and an info.json object with a task."""
    if not ((folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir()):
        return False
    info = _read_info(folder / "info.json")
    return info is not None and isinstance(info.get("task"), str)


def _is_legacy_demo(folder: Path) -> bool:
    """A demo folder written before the marker: only the demo's own folders, its `run/` a transferkit run."""
    run = folder / "run"
    return ({p.name for p in folder.iterdir()} <= {"data", "run", "models", "detection"}
            and ((run / RUN_MARKER).is_file() or _is_legacy_run(run)))


def _read_info(path: Path) -> dict | None:
    try:
        if path.stat().st_size > 64 * _MARKER_BYTES:
            return None
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_empty_folder(folder: Path) -> bool:
    return next(iter(folder.iterdir()), None) is None


def check_output_folder(folder: str | os.PathLike, kind: str = "run") -> Path:
    """Raises unless `folder` is new, empty, or a folder transferkit wrote as a `kind` ("run" or "demo")."""
    folder = Path(folder)
    marker = MARKERS[kind]
    if folder.is_symlink() and not folder.exists():
        raise TransferkitError(f"--output {folder}: is a broken symbolic link; expected a folder")
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise TransferkitError(f"--output {folder}: is a file; expected a new or empty folder, or a transferkit "
                               f"{kind} folder")
    if _read_marker(folder / marker, kind) is not None or _is_empty_folder(folder):
        return folder
    if kind == "run" and _is_legacy_run(folder):
        return folder
    if kind == "demo" and _is_legacy_demo(folder):
        return folder
    raise TransferkitError(
        f"--output {folder}: is a non-empty folder that transferkit did not write (no {marker}); nothing in it "
        f"was changed. Choose a new or empty --output folder")


def _safe_names(names: Iterable) -> list[str]:
    """Plain names inside the folder: no separators, no '.' or '..', no hidden temporaries of others."""
    return [n for n in names if isinstance(n, str) and n and "/" not in n and "\\" not in n
            and n not in (".", "..") and "\x00" not in n]


def written_names(folder: Path, kind: str = "run") -> list[str]:
    """The names a previous `kind` recorded in its marker (or, for a legacy run, its artifacts.json files)."""
    marker = _read_marker(folder / MARKERS[kind], kind)
    if marker is not None:
        return _safe_names(marker.get("written", []))
    legacy = folder / "artifacts.json"
    if kind == "run" and _is_legacy_run(folder) and legacy.is_file() and legacy.stat().st_size <= _MARKER_BYTES:
        try:
            listed = json.loads(legacy.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            listed = []
        # Only files: a legacy run's task artifacts were files (labels.txt, vocabulary.txt).
        return [n for n in _safe_names(listed if isinstance(listed, list) else []) if (folder / n).is_file()]
    return []


def remove_written(folder: Path, standard: Iterable[str], kind: str = "run") -> None:
    """Removes `standard` names (what every `kind` writes) and those its marker lists, in a folder it owns."""
    check_output_folder(folder, kind)  # never remove anything from a folder that is not ours
    for name in dict.fromkeys([*_safe_names(standard), *written_names(folder, kind)]):
        path = folder / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def write_marker(folder: Path, written: Iterable[str], kind: str = "run") -> None:
    from transferkit.version import __version__

    marker = {"kind": kind, "transferkit": __version__, "written": sorted(set(_safe_names(written)))}
    atomic_write_text(folder / MARKERS[kind], json.dumps(marker, indent=2) + "\n")
