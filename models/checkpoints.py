"""Checkpoints that let a killed run resume exactly where it stopped.

A checkpoint is a folder `checkpoints/epoch-NNNN/` holding the model weights,
the optimizer's variables and `state.json` (stage, epoch, history). It is
written under a temporary name and renamed into place, then
`checkpoints/latest.json` is replaced atomically to point at it, so a kill at
any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from transferkit.fileio import (atomic_write_text, ensure_room, remove_stale_temporaries, temporary_sibling,
                                weights_bytes)


def save_optimizer_state(optimizer: keras.optimizers.Optimizer, path: Path) -> None:
    values = [np.asarray(v) for v in optimizer.variables]
    with open(path, "wb") as handle:
        np.savez(handle, *values)


def restore_optimizer_state(optimizer: keras.optimizers.Optimizer, variables, path: Path) -> None:
    """Builds `optimizer` for `variables` and loads the saved slot values."""
    if not optimizer.built:
        optimizer.build(variables)
    with np.load(path) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise ValueError(
            f"{path}: optimizer state has {len(values)} variables, the rebuilt optimizer has "
            f"{len(optimizer.variables)}; the freeze plan or config changed since the checkpoint"
        )
    for variable, value in zip(optimizer.variables, values):
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError(f"{path}: optimizer variable {variable.path} has shape {variable.shape}, "
                             f"saved {value.shape}")
        variable.assign(value)


class CheckpointStore:
    """Reads and writes a run's resumable checkpoints."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    @property
    def pointer(self) -> Path:
        return self.root / "latest.json"

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        if not self.pointer.exists():
            return None
        name = json.loads(self.pointer.read_text())["checkpoint"]
        folder = self.root / name
        return folder, json.loads((folder / "state.json").read_text())

    def save(self, model: keras.Model, optimizer, state: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.root)  # a killed run's half-written checkpoints
        # A fresh name each time: the folder latest.json points at is never touched.
        name = f"epoch-{state['global_epoch']:04d}-{time.time_ns():x}"
        tmp = temporary_sibling(self.root / name)
        ensure_room(tmp / "model.weights.h5", weights_bytes(model))  # before h5py, which may crash on a failed write
        tmp.mkdir()
        model.save_weights(tmp / "model.weights.h5")
        if optimizer is not None:
            save_optimizer_state(optimizer, tmp / "optimizer.npz")
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        final = self.root / name
        os.replace(tmp, final)
        atomic_write_text(self.pointer, json.dumps({"checkpoint": name}))
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        folders = sorted(p for p in self.root.glob("epoch-*") if p.is_dir())
        for folder in folders[:-self.keep]:
            if folder.name != keep_name:
                shutil.rmtree(folder, ignore_errors=True)
