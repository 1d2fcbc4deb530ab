"""Training a run's stages in order: freeze plan, model and optimizer, callbacks, data (or cached features), fit.

transferkit.runner prepares a run (devices, the run folder, data, the model,
a resumed state) and finishes it (best weights, evaluation, metrics.json);
`StageTrainer` trains in between. A resumed run skips the stages it finished
and continues the one it stopped in, with that stage's optimizer state; once
the time limit is reached no further stage starts.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from transferkit.callbacks import (DroppedCounter, EpochRecorder, RunClock, stop_on_non_finite_loss,
                                   time_limit_callback)
from transferkit.config_sections import RunConfig, StageConfig
from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_write_text
from transferkit.multi_worker import prepare_fit
from transferkit.streaming import pipeline_options


def log(config: RunConfig, message: str) -> None:
    """Prints a progress line unless `training.verbose` is 0."""
    if config.training.verbose:
        print(message, flush=True)


class StageTrainer:
    """Trains a run's stages one after another into the folder `out`, keeping the run's `state` up to date.

    `resumed_from` is the checkpoint folder of an interrupted run, whose
    optimizer state the stage it stopped in continues with; None for a fresh
    run. Cached features stay in memory from one stage to the next while the
    part of the backbone they were computed with does not change, one set at a
    time.
    """

    def __init__(self, config: RunConfig, task, data, backbone, full_model, *, strategy, role, out: Path,
                 state: dict[str, Any], resumed_from: Path | None, recorder: EpochRecorder,
                 extra_callbacks: Sequence[Any], time_limit: float | None, clock: RunClock):
        self.config, self.task, self.data = config, task, data
        self.backbone, self.full_model = backbone, full_model
        self.strategy, self.role, self.out = strategy, role, out
        self.state, self.resumed_from, self.recorder = state, resumed_from, recorder
        self.extra_callbacks, self.time_limit, self.clock = extra_callbacks, time_limit, clock
        self.steps = _steps_per_epoch(data)
        self.cached: tuple | None = None  # (split key, train FeatureCache, val FeatureCache or None)
        self.dropped = DroppedCounter(int(data.info.get("num_train") or 0))

    def train_all(self) -> None:
        """Trains every stage the run has not finished, in order, until the time limit is reached."""
        state = self.state
        for index, stage in enumerate(self.config.stages):
            if state.get("time_limit_reached"):
                log(self.config, f"time limit of {self.time_limit:g}s reached: stages from '{stage.name}' on are "
                                 f"not run")
                break
            done = state["stage_epoch"] if state["stage_index"] == index else 0
            if index < state["stage_index"] or (index == state["stage_index"] and done >= stage.epochs):
                continue
            self.train_stage(index, stage, done)

    def train_stage(self, index: int, stage: StageConfig, done: int) -> None:
        """Fits one stage from its epoch `done` (0 unless a resumed run stopped in this stage)."""
        split, use_cache = self._apply_freeze_plan(index, stage)
        model = self._compiled_model(stage, split, use_cache, done)
        self.recorder.cached = use_cache
        callbacks = self._callbacks(index, stage)
        if use_cache:
            train_ds, val_ds = self._cached_datasets(split)
        else:
            train_ds, val_ds = self._input_datasets(stage)
            if self.role is None and self.data.find_dropped is not None and self.data.info.get("num_train"):
                train_ds = self.dropped.counted(train_ds)
                callbacks.append(self.dropped.callback())
        self._fit(model, stage, done, train_ds, val_ds, callbacks)
        # Early stopping ends a stage before its last epoch: mark it complete.
        self.state["stage_index"], self.state["stage_epoch"] = index, stage.epochs
        if not stage.freeze.freezes_whole_backbone:
            self._forget_stale_features(split.key if use_cache else None)

    def release_feature_caches(self) -> None:
        """Frees the cached features; those written to disk go too, unless `training.feature_cache` is disk."""
        self.cached = None
        if self.config.training.feature_cache != "disk":
            shutil.rmtree(self.out / "feature_cache", ignore_errors=True)  # features spilled from memory: not kept

    def _apply_freeze_plan(self, index: int, stage: StageConfig):
        """Freezes what the stage freezes, writes freeze/<NN>-<stage>.txt, and decides on the feature cache.

        Returns (the task's cache split for this freeze plan or None, whether the stage trains on cached features).
        """
        from transferkit.models.freezing import apply_freeze_plan

        summary = apply_freeze_plan(self.backbone, stage.freeze)
        atomic_write_text(self.out / "freeze" / f"{index + 1:02d}-{stage.name}.txt", summary.as_table() + "\n")
        with self.strategy.scope():
            split = self.task.cache_split(self.full_model, self.backbone)  # depends on what this stage froze
        use_cache, reason = use_feature_cache(self.config, stage, self.task, self.data, split)
        log(self.config, f"\n== stage {index + 1}/{len(self.config.stages)} '{stage.name}': {stage.epochs} "
                         f"epoch(s), lr {stage.learning_rate:g}; {reason}\n{summary.as_table()}")
        return split, use_cache

    def _compiled_model(self, stage: StageConfig, split, use_cache: bool, done: int):
        """The model the stage fits, compiled with the stage's optimizer (its saved state when resumed mid-stage)."""
        from transferkit.models.checkpoints import restore_optimizer_state
        from transferkit.models.schedules import build_optimizer

        with self.strategy.scope():
            if use_cache:
                model = split.trainable
            elif stage.freeze.train_batchnorm:
                model = self.task.build_model(self.backbone, self.task.info, backbone_training=True)
            else:
                model = self.full_model
            optimizer = build_optimizer(stage, self.steps, model.trainable_variables)
            self.task.compile(model, optimizer)
        if done:  # only the stage a resumed run stopped in has epochs done
            # model.optimizer: under mixed precision, the loss-scale wrapper the recorder saved.
            with self.strategy.scope():  # the optimizer's slots are created here, as mirrored variables
                restore_optimizer_state(model.optimizer, model.trainable_variables,
                                        self.resumed_from / "optimizer.npz")
        return model

    def _callbacks(self, index: int, stage: StageConfig) -> list:
        import keras

        training = self.config.training
        # First: a non-finite loss stops the run before any later callback saves its weights.
        callbacks = [stop_on_non_finite_loss(index, stage), self.recorder.callback(index, stage)]
        if self.time_limit is not None:
            callbacks.append(time_limit_callback(self.clock, self.time_limit, self.state))
        monitor, mode = self.task.monitor()
        if training.early_stopping_patience and self.data.val is not None:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode,
                                                           patience=training.early_stopping_patience))
        if training.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(self.out / "logs" / stage.name),
                                                         write_graph=False, profile_batch=0))
        callbacks.extend(self.extra_callbacks)
        return callbacks

    def _input_datasets(self, stage: StageConfig):
        """The task's own (training, validation) datasets; unaugmented training data when the stage asks."""
        data = self.data
        train_ds, val_ds = data.train, data.val
        if data.train_augmented and not stage.augment:
            if data.train_unaugmented is None:
                raise TransferkitError(f"stages[{stage.name}].augment: false, but task {self.task.name!r} "
                                       f"provides no unaugmented training data")
            train_ds = data.train_unaugmented
        return train_ds, val_ds

    def _cached_datasets(self, split):
        """(training, validation) datasets of the features `split`'s extractor computes, batched as the task's."""
        if self.cached is None or self.cached[0] != split.key:  # one set of cached features in memory at a time
            self.cached = self._compute_features(split)
        _, train_cache, val_cache = self.cached
        batch_size = self.task.batch_size()
        # Same seed and size as the task's own shuffle: the same batch order.
        options = pipeline_options(self.config.training.data_autotune)
        train_ds = train_cache.dataset(batch_size, shuffle=True, seed=self.config.training.seed).with_options(options)
        val_ds = val_cache.dataset(batch_size).with_options(options) if val_cache is not None else None
        return train_ds, val_ds

    def _compute_features(self, split) -> tuple:
        """(split key, train FeatureCache, val FeatureCache or None): computed, or read from a disk cache."""
        from transferkit.models.feature_cache import FeatureCache

        training, data = self.config.training, self.data
        started = time.perf_counter()
        extractor = split.extractor
        cache_dir = self.out / "feature_cache" / split.key if training.feature_cache == "disk" else None
        # auto: held in memory up to the budget, the rest written to the run folder and read by batch.
        budget = training.feature_cache_memory_mb * 2**20 if training.feature_cache == "auto" else None
        spill_dir = self.out / "feature_cache" / split.key if budget is not None else None
        train_cache = FeatureCache.compute_or_load(extractor, data.train_plain, cache_dir, "train",
                                                   budget, spill_dir, data.info.get("num_train"))
        val_cache = (FeatureCache.compute_or_load(
            extractor, data.val, cache_dir, "val",
            None if budget is None else max(0, budget - train_cache.memory_bytes), spill_dir,
            data.info.get("num_val"))
            if data.val is not None else None)
        label = "" if split.key == "features" else f" ({split.key})"
        spilled = [name for name, c in (("train", train_cache), ("val", val_cache))
                   if c is not None and c.store is not None]
        where = (f", {' and '.join(spilled)} beyond {training.feature_cache_memory_mb} MB read "
                 f"from {spill_dir}" if spilled else "")
        log(self.config, f"feature cache{label}: {len(train_cache)} train features in "
                         f"{time.perf_counter() - started:.1f}s{where}")
        return split.key, train_cache, val_cache

    def _fit(self, model, stage: StageConfig, done: int, train_ds, val_ds, callbacks: list) -> None:
        if self.role is not None:
            prepare_fit(model, self.strategy, train_ds)
        with warnings.catch_warnings():
            if int(train_ds.cardinality()) < 0:
                # Streamed data of unknown length (a disk cache, dropped undecodable files): Keras
                # learns the epoch's length when the first epoch ends and says so misleadingly.
                warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(train_ds, validation_data=val_ds, epochs=stage.epochs, initial_epoch=done,
                      callbacks=callbacks, verbose=_fit_verbosity(self.config.training.verbose),
                      shuffle=False)  # the datasets shuffle themselves

    def _forget_stale_features(self, keep: str | None) -> None:
        """After backbone weights changed: cached outputs that read them are stale. A cut's own cache
        (`keep`) stays valid, since only layers above the cut trained."""
        if self.cached is not None and self.cached[0] != keep:
            self.cached = None
        _remove_stale_disk_caches(self.out, keep)


def use_feature_cache(config: RunConfig, stage: StageConfig, task, data, split) -> tuple[bool, str]:
    """Whether `stage` trains on cached outputs of `split`'s extractor, and why (for the log)."""
    mode = config.training.feature_cache
    if mode == "off":
        return False, "feature cache off (training.feature_cache: off)"
    if split is None:
        if not stage.freeze.freezes_whole_backbone:
            return False, "backbone partly trainable: full forward passes"
        return False, f"task {task.name!r} defines no cacheable part: full forward passes"
    if data.train_augmented and stage.augment:
        return False, ("augmentation is on, so the backbone must see new pixels every epoch: "
                       "feature cache not used (stages[].augment: false allows it)")
    if stage.freeze.train_batchnorm:
        return False, "train_batchnorm on a frozen backbone: full forward passes"
    if stage.freeze.freezes_whole_backbone:
        return True, "backbone frozen: training the head on cached features"
    return True, f"training the trainable top on cached outputs of the frozen part ({split.key})"


def _steps_per_epoch(data) -> int:
    if data.steps_per_epoch:
        return int(data.steps_per_epoch)
    steps = int(data.train.cardinality())
    if steps < 0:  # unknown or infinite: count one pass
        steps = sum(1 for _ in data.train_plain)
    if steps < 1:
        raise TransferkitError("the training data has no batches; check data.train")
    return steps


def _remove_stale_disk_caches(run_dir: Path, keep: str | None) -> None:
    root = run_dir / "feature_cache"
    if root.is_dir():
        for folder in root.iterdir():
            if folder.name != keep:
                shutil.rmtree(folder, ignore_errors=True)


def _fit_verbosity(verbose: int) -> int:
    """Keras' per-batch bar on a terminal; one line per epoch when output goes to a file or a pipe."""
    import sys

    if verbose == 1 and not sys.stdout.isatty():
        return 2
    return verbose
