"""Runs a config: data, backbone, head, the stages, evaluation, the run folder.

A run directory holds:

    config.yaml        the resolved config
    history.json       one row per epoch: stage, losses, metrics, learning rate, seconds
    freeze/<stage>.txt trainable / frozen parameters per block, per stage
    checkpoints/       resumable state (see transferkit.models.checkpoints)
    best.weights.h5    the best weights on the task's monitor
    model.keras        the final model (the best weights), the task's inputs in
    info.json          what travels with the model (the task's data info, backbone, example inputs)
    metrics.json, problems.json, report/, and the task's artifacts (labels.txt, ...)
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from transferkit.config import (RunConfig, StageConfig, config_differences, load_saved_config, same_config,
                                write_config)
from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_path, atomic_write_text, ensure_room, weights_bytes
from transferkit.multi_worker import create_strategy, output_dir, prepare_fit, remove_output_dir, weights_digest
from transferkit.registry import get_task
from transferkit.streaming import pipeline_options


def _log(config: RunConfig, message: str) -> None:
    if config.training.verbose:
        print(message, flush=True)


def _setup_devices(config: RunConfig):
    """Mixed precision, and (strategy, worker role): several GPUs mirrored, several machines with TF_CONFIG."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if config.training.mixed_precision and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    wanted = config.training.distribute
    if wanted == "multi_worker" or (wanted == "auto" and os.environ.get("TF_CONFIG")):
        return create_strategy()
    if wanted == "mirrored" or (wanted == "auto" and len(gpus) > 1):
        # Every GPU; without GPUs, every logical CPU device (how the multi-GPU path is tested on CPU).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices]), None
    return tf.distribute.get_strategy(), None


class _EpochRecorder:
    """A Keras callback factory: history rows, checkpoints and the best weights."""

    def __init__(self, run_dir: Path, store, state: dict[str, Any], monitor: tuple[str, str], full_model,
                 clock: "_RunClock"):
        self.run_dir = run_dir
        self.store = store
        self.state = state
        self.monitor, self.mode = monitor
        self.full_model = full_model
        self.clock = clock
        self.cached = False  # whether the current stage trains on cached features

    def callback(self, stage_index: int, stage: StageConfig):
        import keras

        recorder = self

        class Recorder(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = dict(logs or {})
                optimizer = self.model.optimizer
                lr = optimizer.learning_rate
                lr_value = float(lr(optimizer.iterations) if callable(lr) else lr)
                recorder.end_epoch(stage_index, stage, epoch, logs, lr_value, time.perf_counter() - self._start,
                                   optimizer)

        return Recorder()

    def end_epoch(self, stage_index, stage, epoch, logs, lr, seconds, optimizer):
        state = self.state
        row = {"stage": stage.name, "stage_index": stage_index, "epoch": epoch + 1,
               "global_epoch": state["global_epoch"] + 1, "learning_rate": lr, "seconds": round(seconds, 3),
               # Wall time since the run started (data, model, caches included), summed over resumes.
               "elapsed": round(self.clock.elapsed(), 3), "feature_cache": self.cached}
        row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
        state["elapsed"] = self.clock.elapsed()
        state["history"].append(row)
        state["global_epoch"] += 1
        state["stage_index"] = stage_index
        state["stage_epoch"] = epoch + 1
        value = logs.get(self.monitor)
        if value is not None:
            best = state.get("best")
            improved = best is None or (value > best if self.mode == "max" else value < best)
            if improved:
                state["best"] = float(value)
                state["best_epoch"] = state["global_epoch"]
                ensure_room(self.run_dir / "best.weights.h5", weights_bytes(self.full_model))
                with atomic_path(self.run_dir / "best.weights.h5", suffix=".weights.h5") as tmp:
                    self.full_model.save_weights(tmp)
        atomic_write_text(self.run_dir / "history.json", json.dumps(state["history"], indent=2))
        self.store.save(self.full_model, optimizer, state)


class _RunClock:
    """Wall time of a run, continuing from what earlier (interrupted) sessions of it spent."""

    def __init__(self, before: float = 0.0):
        self.start = time.perf_counter() - before

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _time_limit_callback(clock: _RunClock, limit: float, state: dict[str, Any]):
    """Stops training after the batch that crosses the run's time limit; the runner then ends the run."""
    import keras

    class TimeLimit(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if clock.elapsed() >= limit:
                state["time_limit_reached"] = True
                self.model.stop_training = True

    return TimeLimit()


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


def check_freeze_plans(config: RunConfig) -> None:
    """Checks every stage's freeze plan against the backbone's blocks (built without weights); raises on a bad one."""
    from transferkit.models.freezing import selected_layers

    backbone = get_task(config.task).load_backbone(config.backbone, load_weights=False)
    for stage in config.stages:
        try:
            selected_layers(backbone, stage.freeze)
        except TransferkitError as error:
            raise type(error)(f"stages[{stage.name}].{error}") from None


def prepare_run(config: RunConfig, strategy=None):
    """(task with its data info, the task's datasets, the backbone, the whole model), seeded as a run is."""
    import keras
    import tensorflow as tf


    keras.utils.set_random_seed(config.training.seed)
    task = get_task(config.task)(config)
    data = task.datasets().with_options(pipeline_options(config.training.data_autotune))
    task.info = dict(data.info)
    with (strategy or tf.distribute.get_strategy()).scope():
        backbone = task.load_backbone(config.backbone)
        # Reseed: the head's initial weights must not depend on whether loading
        # the backbone drew random numbers (a first-time preset import does).
        keras.utils.set_random_seed(config.training.seed)
        full_model = task.build_model(backbone, task.info)
    return task, data, backbone, full_model


def train(config: RunConfig, run_dir: str | os.PathLike, resume: bool = True,
          extra_callbacks: Sequence[Any] = (), time_limit: float | None = None) -> Path:
    """Runs every stage of `config` into `run_dir` and returns it.

    An interrupted run in `run_dir` (same config) resumes at its stage and
    epoch, with its freeze plan and optimizer state; `resume=False` starts over.
    `extra_callbacks` are Keras callbacks added to every stage; one with a
    `bind_run(full_model, task)` method is given the run's whole model and
    task first (a stage on cached features fits only part of the model).
    `time_limit` (seconds of wall time, resumes included) ends training after
    the batch that crosses it; the run is then finished with the best weights
    so far and `metrics.json` says `"time_limit_reached": true`.
    """
    import keras

    from transferkit.models.checkpoints import CheckpointStore, restore_optimizer_state
    from transferkit.models.feature_cache import FeatureCache
    from transferkit.models.freezing import apply_freeze_plan
    from transferkit.models.schedules import build_optimizer

    if time_limit is not None and not time_limit > 0:
        raise TransferkitError(f"time_limit: expected a number of seconds > 0, received {time_limit!r}")
    clock = _RunClock()
    run_dir = Path(run_dir)
    store = CheckpointStore(run_dir)
    latest = store.latest() if resume and run_dir.is_dir() else None
    if latest is not None:
        saved_config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
        if saved_config and not same_config(saved_config, config):
            kind = "a finished" if latest[1].get("complete") else "an interrupted"
            raise TransferkitError(
                f"{run_dir}: holds {kind} run with a different config ({'; '.join(config_differences(saved_config, config))}); "
                f"pass --no-resume to start over or choose another --output"
            )
        if latest[1].get("complete"):
            raise TransferkitError(
                f"{run_dir}: holds a finished run; pass --no-resume to train it again or choose another --output"
            )

    strategy, role = _setup_devices(config)
    if role is not None and time_limit is not None:
        # Each worker's clock would stop it at a different batch, and the others would wait for it forever.
        raise TransferkitError("time_limit: not available with several workers (training.distribute: multi_worker)")
    task, data, backbone, full_model = prepare_run(config, strategy)
    if latest is not None:
        _check_same_data_facts(run_dir, task.info)
    # Only now that the config, the data and the backbone have been checked is
    # anything in the run folder replaced: a bad --set leaves old outputs alone.
    # Workers other than the chief write the same files into a temporary folder of their own.
    out = output_dir(role, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if latest is None:
        _clear_outputs(out)
    write_config(config, out)
    _write_info(out, config, task, backbone, data)

    state: dict[str, Any] = {"global_epoch": 0, "stage_index": 0, "stage_epoch": 0, "history": [], "best": None}
    if latest is not None:
        folder, state = latest
        full_model.load_weights(folder / "model.weights.h5")
        if out != run_dir and (run_dir / "best.weights.h5").exists():
            # Read before the first step, which the chief cannot pass alone: it has not replaced the file.
            shutil.copyfile(run_dir / "best.weights.h5", out / "best.weights.h5")
        clock = _RunClock(before=float(state.get("elapsed", 0.0)) + clock.elapsed())
        _log(config, f"resuming {run_dir}: stage {state['stage_index'] + 1}, "
                     f"{state['stage_epoch']} epoch(s) done in it")
    recorder = _EpochRecorder(out, CheckpointStore(out), state, task.monitor(), full_model, clock)
    for callback in extra_callbacks:
        if hasattr(callback, "bind_run"):
            callback.bind_run(full_model, task)
    steps = _steps_per_epoch(data)
    cached: tuple | None = None  # (split key, train FeatureCache, val FeatureCache or None)
    dropped = _DroppedCounter(int(data.info.get("num_train") or 0))

    for index, stage in enumerate(config.stages):
        if state.get("time_limit_reached"):
            _log(config, f"time limit of {time_limit:g}s reached: stages from '{stage.name}' on are not run")
            break
        done = state["stage_epoch"] if state["stage_index"] == index else 0
        if index < state["stage_index"] or (index == state["stage_index"] and done >= stage.epochs):
            continue
        summary = apply_freeze_plan(backbone, stage.freeze)
        freeze_dir = out / "freeze"
        atomic_write_text(freeze_dir / f"{index + 1:02d}-{stage.name}.txt", summary.as_table() + "\n")
        with strategy.scope():
            split = task.cache_split(full_model, backbone)  # depends on what this stage froze
        use_cache, reason = use_feature_cache(config, stage, task, data, split)
        _log(config, f"\n== stage {index + 1}/{len(config.stages)} '{stage.name}': {stage.epochs} epoch(s), "
                     f"lr {stage.learning_rate:g}; {reason}\n{summary.as_table()}")
        with strategy.scope():
            if use_cache:
                model = split.trainable
            elif stage.freeze.train_batchnorm:
                model = task.build_model(backbone, task.info, backbone_training=True)
            else:
                model = full_model
            optimizer = build_optimizer(stage, steps, model.trainable_variables)
            task.compile(model, optimizer)
        if done:
            folder, _ = latest  # only the stage a resumed run stopped in has epochs done
            # model.optimizer: under mixed precision, the loss-scale wrapper the recorder saved.
            with strategy.scope():  # the optimizer's slots are created here, as mirrored variables
                restore_optimizer_state(model.optimizer, model.trainable_variables, folder / "optimizer.npz")
        recorder.cached = use_cache
        # First: a non-finite loss stops the run before any later callback saves its weights.
        callbacks = [_stop_on_non_finite_loss(index, stage), recorder.callback(index, stage)]
        if time_limit is not None:
            callbacks.append(_time_limit_callback(clock, time_limit, state))
        monitor, mode = task.monitor()
        if config.training.early_stopping_patience and data.val is not None:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode,
                                                           patience=config.training.early_stopping_patience))
        if config.training.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "logs" / stage.name),
                                                         write_graph=False, profile_batch=0))
        callbacks.extend(extra_callbacks)
        batch_size = task.batch_size()
        if use_cache:
            if cached is None or cached[0] != split.key:  # one set of cached features in memory at a time
                started = time.perf_counter()
                extractor = split.extractor
                cache_dir = (out / "feature_cache" / split.key
                             if config.training.feature_cache == "disk" else None)
                # auto: held in memory up to the budget, the rest written to the run folder and read by batch.
                budget = (config.training.feature_cache_memory_mb * 2**20
                          if config.training.feature_cache == "auto" else None)
                spill_dir = out / "feature_cache" / split.key if budget is not None else None
                train_cache = FeatureCache.compute_or_load(extractor, data.train_plain, cache_dir, "train",
                                                           budget, spill_dir, data.info.get("num_train"))
                val_cache = (FeatureCache.compute_or_load(
                    extractor, data.val, cache_dir, "val",
                    None if budget is None else max(0, budget - train_cache.memory_bytes), spill_dir,
                    data.info.get("num_val"))
                    if data.val is not None else None)
                cached = (split.key, train_cache, val_cache)
                label = "" if split.key == "features" else f" ({split.key})"
                spilled = [name for name, c in (("train", train_cache), ("val", val_cache))
                           if c is not None and c.store is not None]
                where = (f", {' and '.join(spilled)} beyond {config.training.feature_cache_memory_mb} MB read "
                         f"from {spill_dir}" if spilled else "")
                _log(config, f"feature cache{label}: {len(train_cache)} train features in "
                             f"{time.perf_counter() - started:.1f}s{where}")
            _, train_cache, val_cache = cached
            # Same seed and size as the task's own shuffle: the same batch order.
            options = pipeline_options(config.training.data_autotune)
            train_ds = train_cache.dataset(batch_size, shuffle=True, seed=config.training.seed).with_options(options)
            val_ds = val_cache.dataset(batch_size).with_options(options) if val_cache is not None else None
        else:
            train_ds, val_ds = data.train, data.val
            if data.train_augmented and not stage.augment:
                if data.train_unaugmented is None:
                    raise TransferkitError(f"stages[{stage.name}].augment: false, but task {task.name!r} "
                                           f"provides no unaugmented training data")
                train_ds = data.train_unaugmented
        if not use_cache and role is None and data.find_dropped is not None and data.info.get("num_train"):
            train_ds = dropped.counted(train_ds)
            callbacks.append(dropped.callback())
        if role is not None:
            prepare_fit(model, strategy, train_ds)
        with warnings.catch_warnings():
            if int(train_ds.cardinality()) < 0:
                # Streamed data of unknown length (a disk cache, dropped undecodable files): Keras
                # learns the epoch's length when the first epoch ends and says so misleadingly.
                warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(train_ds, validation_data=val_ds, epochs=stage.epochs, initial_epoch=done,
                      callbacks=callbacks, verbose=config.training.verbose,
                      shuffle=False)  # the datasets shuffle themselves
        # Early stopping ends a stage before its last epoch: mark it complete.
        state["stage_index"], state["stage_epoch"] = index, stage.epochs
        if not stage.freeze.freezes_whole_backbone:
            # Backbone weights changed: cached outputs that read them are stale. A cut's own cache
            # stays valid (only layers above the cut trained).
            keep = split.key if use_cache else None
            if cached is not None and cached[0] != keep:
                cached = None
            _remove_stale_disk_caches(out, keep)

    if dropped.short and data.find_dropped is not None:
        found = data.find_dropped()
        _log(config, f"{len(found)} training input(s) did not decode and were left out of every epoch "
                     f"(listed in problems.json)")
        data.problems.extend(found)
        atomic_write_text(out / "problems.json", json.dumps(data.problems, indent=2))
    cached = None
    if config.training.feature_cache != "disk":
        shutil.rmtree(out / "feature_cache", ignore_errors=True)  # features spilled from memory: not kept
    if (out / "best.weights.h5").exists():
        load_model_weights(full_model, out / "best.weights.h5")
    save_model(full_model, out / "model.keras")
    metrics = task.evaluate(full_model, data.val, data.info, out / "report") if data.val is not None else {}
    write_metrics(out, metrics, data.problems, {"best_epoch": state.get("best_epoch"),
                                                "time_limit_reached": bool(state.get("time_limit_reached")),
                                                "elapsed_seconds": round(clock.elapsed(), 3)})
    state["complete"] = True
    state["elapsed"] = clock.elapsed()
    recorder.store.save(full_model, None, state)
    if role is not None:
        # Always printed: the workers' digests must agree, and this is how an operator checks it.
        print(f"{role.describe()}: finished, weights sha256 {weights_digest(full_model)}", flush=True)
        remove_output_dir(role, out)
    _log(config, f"\nrun complete: {run_dir}")
    return run_dir


def _remove_stale_disk_caches(run_dir: Path, keep: str | None) -> None:
    import shutil

    root = run_dir / "feature_cache"
    if root.is_dir():
        for folder in root.iterdir():
            if folder.name != keep:
                shutil.rmtree(folder, ignore_errors=True)


# What a run writes; a fresh start removes them so nothing stale is reused.
RUN_OUTPUTS = ("checkpoints", "feature_cache", "freeze", "logs", "report", "best.weights.h5", "model.keras",
               "metrics.json", "history.json", "problems.json", "info.json", "labels.txt", "artifacts.json")


def _clear_outputs(run_dir: Path) -> None:
    # The previous run's task artifacts (labels.txt and the like), as it recorded them.
    listed = run_dir / "artifacts.json"
    extra = json.loads(listed.read_text()) if listed.exists() else []
    for name in (*RUN_OUTPUTS, *[n for n in extra if isinstance(n, str) and "/" not in n and n not in ("..", ".")]):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _steps_per_epoch(data) -> int:
    if data.steps_per_epoch:
        return int(data.steps_per_epoch)
    steps = int(data.train.cardinality())
    if steps < 0:  # unknown or infinite: count one pass
        steps = sum(1 for _ in data.train_plain)
    if steps < 1:
        raise TransferkitError("the training data has no batches; check data.train")
    return steps


class _DroppedCounter:
    """Counts the examples each streamed training epoch yields, to notice inputs tf.data skipped."""

    def __init__(self, expected: int):
        self.expected, self.seen, self.short = expected, 0, False

    def counted(self, dataset):
        import numpy as np
        import tensorflow as tf

        def add(count):
            self.seen += int(count)
            return np.int32(0)

        def count(*batch):
            targets = tf.nest.flatten(batch[1] if len(batch) > 1 else batch[0])[0]
            tick = tf.numpy_function(add, [tf.shape(targets)[0]], tf.int32, stateful=True)
            with tf.control_dependencies([tick]):  # on the data path, so it is never pruned
                return tf.nest.map_structure(tf.identity, batch)

        return dataset.map(count)

    def callback(self):
        import keras

        counter = self

        class Count(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                counter.seen = 0

            def on_epoch_end(self, epoch, logs=None):
                if not self.model.stop_training and 0 < counter.seen < counter.expected:
                    counter.short = True

        return Count()


def _check_same_data_facts(run_dir: Path, info: dict[str, Any]) -> None:
    """Refuses to resume when the data now gives the model another shape (a class folder added, ...).

    The checkpoints hold weights for the recorded classes and input size; counts of examples may change.
    """
    path = run_dir / "info.json"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # nothing recorded to compare with: the weights' own load decides
    ignored = {"examples", "task", "backbone", "architecture"}
    changed = [key for key in recorded if key in info and key not in ignored and not key.startswith("num_")
               and recorded[key] != info[key]]
    if changed:
        key = changed[0]
        raise TransferkitError(
            f"{run_dir}: the data changed since the checkpoint ({key} was {_short(recorded[key])}, now "
            f"{_short(info[key])}); restore the data, pass --no-resume to start over, or choose another --output")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _write_info(run_dir: Path, config: RunConfig, task, backbone, data) -> None:
    info = dict(task.info)
    info.update({"task": config.task, "backbone": backbone.source, "architecture": backbone.architecture})
    # Real validation inputs, for export checks and TF Serving warmup records.
    info["examples"] = [str(Path(p).resolve()) for p in data.examples[:64]]
    atomic_write_text(run_dir / "info.json", json.dumps(info, indent=2))
    artifacts = task.artifacts(info)
    for name, text in artifacts.items():
        atomic_write_text(run_dir / name, text)
    atomic_write_text(run_dir / "artifacts.json", json.dumps(sorted(artifacts)))
    if data.problems:
        atomic_write_text(run_dir / "problems.json", json.dumps(data.problems, indent=2))


def load_model_weights(model, path: Path) -> None:
    """Loads a `.weights.h5` into `model`'s layers.

    The file also holds the optimizer of the stage that wrote it; the model
    in hand may have another stage's optimizer (or none), and its variables
    do not matter here, so Keras' warning about them is silenced.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Skipping variable loading for optimizer")
        model.load_weights(path)


def save_model(model, path: Path) -> Path:
    """Saves a Keras model through a temporary file and a rename."""
    ensure_room(path, weights_bytes(model))
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)


def load_run(run_dir: str | os.PathLike):
    """The (config, task, model, info) of a finished run directory."""
    import keras
    import keras_hub  # noqa: F401  (registers the backbone classes for deserialisation)

    import transferkit.models.backbones  # noqa: F401  (registers Normalization)
    import transferkit.models.schedules  # noqa: F401  (registers WarmupSchedule, in saved optimizers)

    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        raise TransferkitError(f"{run_dir}: no model.keras; is this a finished `transferkit train` run directory?")
    config = load_saved_config(run_dir / "config.yaml")
    info = _read_info(run_dir)
    task = get_task(config.task)(config, info)
    task.register_keras_objects()
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except ValueError as error:
        # safe_mode refuses Lambda layers and other arbitrary code: a model from elsewhere is a program.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TransferkitError(f"{model_path}: cannot be loaded: {first}") from None
    return config, task, model, info


# What training recorded in metrics.json that an evaluation cannot know, kept when the run is re-evaluated.
TRAINING_FACTS = ("best_epoch", "time_limit_reached", "elapsed_seconds")


def evaluation_dir(run_dir: str | os.PathLike, data: str | None) -> Path:
    """Where an evaluation writes: the run folder itself for its own data, else evaluations/<data>-<digest>/."""
    import hashlib

    run_dir = Path(run_dir)
    if data is None:
        return run_dir
    resolved = str(Path(data).resolve())
    name = Path(resolved).name or "data"
    return run_dir / "evaluations" / f"{name}-{hashlib.blake2b(resolved.encode(), digest_size=4).hexdigest()}"


def evaluate_run(run_dir: str | os.PathLike, data: str | None = None) -> dict[str, Any]:
    """Re-evaluates a run on its validation data, or on `data`.

    On its own data it rewrites metrics.json and report/, keeping what training recorded
    (`TRAINING_FACTS`); other data gets its own folder (`evaluation_dir`), so the run's
    record is never replaced by a score on something else.
    """
    config, task, model, info = load_run(run_dir)
    config = task.config_for_evaluation(info, data)
    task = get_task(config.task)(config, info)
    task_data = task.datasets().with_options(pipeline_options(config.training.data_autotune))
    task.info = {**info, **{k: v for k, v in task_data.info.items() if k not in info}}
    out = evaluation_dir(run_dir, data)
    metrics = task.evaluate(model, task_data.val, task.info, out / "report")
    facts: dict[str, Any] = {}
    if data is None:
        try:
            recorded = json.loads((Path(run_dir) / "metrics.json").read_text())
        except (OSError, ValueError):
            recorded = {}
        facts = {k: recorded[k] for k in TRAINING_FACTS if isinstance(recorded, dict) and k in recorded}
    else:
        facts = {"data": str(Path(data).resolve())}
    return write_metrics(out, metrics, task_data.problems, facts)


def write_metrics(folder: Path, metrics: dict[str, Any], problems: list, facts: dict[str, Any]) -> dict[str, Any]:
    """The one writer of metrics.json: the task's evaluation, the inputs' problems, and the run's facts
    (`TRAINING_FACTS` from training, or the data an evaluation read)."""
    metrics = {**metrics, "problems": problems, **facts}
    atomic_write_text(Path(folder) / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _read_info(run_dir: Path) -> dict[str, Any]:
    """A run's info.json, or a one-line error naming it when it is missing or damaged."""
    from transferkit.fileio import load_json

    path = run_dir / "info.json"
    try:
        info = load_json(path.read_bytes(), str(path), TransferkitError)
    except OSError as error:
        raise TransferkitError(f"{path}: cannot read the run's info: {error.strerror}") from None
    if not isinstance(info, dict):
        raise TransferkitError(f"{path}: expected a JSON object; the run folder is damaged")
    return info


def _stop_on_non_finite_loss(index: int, stage):
    """Keras' TerminateOnNaN, raising a one-line error that names the stage instead of ending the fit quietly.

    Raising inside the batch hook ends `fit` at once: no epoch-end checkpoint keeps NaN weights.
    """
    import keras
    import numpy as np

    class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
        def on_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is None:
                return
            values = np.asarray(loss, dtype=np.float64).reshape(-1)  # one value per replica when distributed
            if not np.isfinite(values).all():
                bad = float(values[~np.isfinite(values)][0])
                raise TransferkitError(
                    f"stages[{index}] ({stage.name!r}): the training loss became {bad} at batch {batch}; "
                    f"the run stopped (learning_rate {stage.learning_rate:g} may be too high). Checkpoints "
                    f"before this batch are kept")

    return StopOnNonFiniteLoss()


def predict_files(run_dir: str | os.PathLike, paths: Sequence[str], save_dir: str | os.PathLike | None = None,
                  **options: Any):
    """Yields (path, prediction, text) for each input file, with the run's own task; `options` go to the task."""
    _, task, model, info = load_run(run_dir)
    for path in paths:
        if not os.path.isfile(path):
            raise TransferkitError(f"{path}: input file not found (an image not found, or another input)")
    save = Path(save_dir) if save_dir else None
    for path, prediction in task.predict(model, list(paths), info, save_dir=save, **options):
        yield path, prediction, task.describe_prediction(prediction)


def predict_texts(run_dir: str | os.PathLike, texts: Sequence[str], top_k: int = 3):
    """Yields (text, description) for each text, with the run's own task (a text task)."""
    _, task, model, info = load_run(run_dir)
    if not hasattr(task, "predict_texts"):
        raise TransferkitError(f"{run_dir}: task {task.name!r} does not take texts; give input files instead")
    for text, prediction in zip(texts, task.predict_texts(model, list(texts), info, top_k=top_k)):
        yield text, task.describe_prediction(prediction)
