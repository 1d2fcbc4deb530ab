"""The Keras callbacks a run's stages train with, and the run's clock they read.

`EpochRecorder` writes history.json, the checkpoints and best.weights.h5 at
every epoch's end; `time_limit_callback` and `stop_on_non_finite_loss` end a
fit; `DroppedCounter` notices training inputs that tf.data skipped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transferkit.config_sections import StageConfig
from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_path, atomic_write_text, ensure_room, weights_bytes


class RunClock:
    """Wall time of a run, continuing from what earlier (interrupted) sessions of it spent."""

    def __init__(self, before: float = 0.0):
        self.start = time.perf_counter() - before

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class EpochRecorder:
    """A Keras callback factory: history rows, checkpoints and the best weights."""

    def __init__(self, run_dir: Path, store, state: dict[str, Any], monitor: tuple[str, str], full_model,
                 clock: RunClock):
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
                from transferkit.streaming import record_finished_caches

                record_finished_caches()  # a disk cache the first pass completed is vouched for at once
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


def time_limit_callback(clock: RunClock, limit: float, state: dict[str, Any]):
    """Stops training after the batch that crosses the run's time limit; the runner then ends the run."""
    import keras

    class TimeLimit(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if clock.elapsed() >= limit:
                state["time_limit_reached"] = True
                self.model.stop_training = True

    return TimeLimit()


def stop_on_non_finite_loss(index: int, stage):
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


class DroppedCounter:
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
