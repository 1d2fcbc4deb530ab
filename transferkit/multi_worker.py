"""Training on several machines with TensorFlow's MultiWorkerMirroredStrategy.

Every worker runs the same `transferkit train` command with its own
`TF_CONFIG`; each global batch (the configured batch size) is split between
the workers, gradients are all-reduced, and every worker ends with the same
weights. Only the chief writes the run folder; the other workers run the same
code path (saving can involve collective operations, so all workers must
save) into a temporary folder of their own, which they delete at the end.

The run folder must be on a file system that every worker reads (as for
Keras' `BackupAndRestore`): a resumed run's workers all load the chief's last
checkpoint. They read it before the first training step, which no worker can
pass alone, so the chief cannot replace it while another worker still reads.

Keras 3's `fit` does not run under this strategy as shipped
(keras-team/keras#20585): it all-reduces the first data batch to build the
model, which fails for a distributed batch, and it reduces each step's scalar
logs with `reduce("MEAN", axis=0)`, which fails for a scalar.
`prepare_fit` works around both for one model: it builds the model's compiled
state from a local batch itself, and makes the step functions return their
logs as one-element vectors, which the MEAN reduction then averages over the
replicas (the value Keras reports on one machine).
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transferkit.errors import ConfigError

# Set on a model whose fit has been prepared, so that later stages do not wrap its steps twice.
_PREPARED = "_transferkit_multi_worker_steps"


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """Which worker of a multi-worker run this process is."""

    task_type: str
    task_id: int
    num_workers: int
    is_chief: bool

    def describe(self) -> str:
        chief = ", chief" if self.is_chief else ""
        return f"{self.task_type} {self.task_id} of {self.num_workers} workers{chief}"


def read_tf_config() -> dict[str, Any]:
    """The parsed `TF_CONFIG`, checked enough to name what is wrong with it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError("training.distribute: multi_worker needs the TF_CONFIG environment variable, "
                          'e.g. {"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                          '"task": {"type": "worker", "index": 0}}')
    try:
        spec = json.loads(raw)
    except RecursionError:
        raise ConfigError("TF_CONFIG: JSON nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG: not valid JSON ({error.msg} at character {error.pos}). "
                          f"Received: {raw[:200]!r}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not any(isinstance(v, list) and v for v in cluster.values()):
        raise ConfigError(f"TF_CONFIG.cluster: expected a mapping of job names to lists of host:port, "
                          f"e.g. {{\"worker\": [\"host0:12345\", \"host1:12345\"]}}. Received: {cluster!r}")
    # MultiWorkerMirroredStrategy runs workers (and a chief); a parameter-server job belongs to another strategy.
    unsupported = sorted(set(cluster) - {"worker", "chief"})
    if unsupported:
        raise ConfigError(f"TF_CONFIG.cluster: job(s) {unsupported} are not supported; MultiWorkerMirroredStrategy "
                          f"takes 'worker' (and 'chief') jobs only")
    for job, addresses in cluster.items():
        for address in addresses if isinstance(addresses, list) else [addresses]:
            host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"TF_CONFIG.cluster.{job}: expected host:port addresses (a port in 1-65535). "
                                  f"Received: {address!r}")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise ConfigError(f"TF_CONFIG.task: expected {{\"type\": one of {sorted(cluster)}, \"index\": a number}}. "
                          f"Received: {task!r}")
    if not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ConfigError(f"TF_CONFIG.task.index: expected 0 to {len(cluster[task['type']]) - 1} for "
                          f"{len(cluster[task['type']])} {task['type']} address(es). Received: {task['index']}")
    return spec


def create_strategy():
    """A MultiWorkerMirroredStrategy for `TF_CONFIG` (checked first), and this worker's role."""
    import tensorflow as tf

    spec = read_tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cluster = spec["cluster"]
    task_type, task_id = spec["task"]["type"], spec["task"]["index"]
    # TensorFlow's rule: the "chief" task if the cluster has one, else worker 0.
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    workers = sum(len(cluster.get(name, [])) for name in ("chief", "worker"))
    return strategy, WorkerRole(task_type, task_id, workers, is_chief)


def output_dir(role: WorkerRole | None, run_dir: Path) -> Path:
    """Where this worker writes: the run folder for the chief (or a single machine), else a temporary folder."""
    if role is None or role.is_chief:
        return run_dir
    # Under TMPDIR: point it at a disk (not a tmpfs) when spilled features or disk caches are large.
    path = Path(tempfile.mkdtemp(prefix=f"transferkit-{role.task_type}{role.task_id}-"))
    atexit.register(shutil.rmtree, path, True)  # also when the run fails
    return path


def remove_output_dir(role: WorkerRole | None, path: Path) -> None:
    if role is not None and not role.is_chief:
        shutil.rmtree(path, ignore_errors=True)


def prepare_fit(model, strategy, dataset) -> None:
    """Lets `model.fit` run under MultiWorkerMirroredStrategy (see the module docstring); call after compile."""
    import tensorflow as tf

    # The build needs shapes and dtypes only: the dataset's spec, not a batch (iterating it would move
    # its shuffle one epoch ahead).
    with strategy.scope():
        model._symbolic_build(data_batch=dataset.element_spec)
    # The model is built now; the all-reduced build that fails is skipped.
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if getattr(model, _PREPARED, False):
        return
    train_step, test_step = model.train_step, model.test_step

    def as_vectors(logs):
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    model.train_step = lambda data: as_vectors(train_step(data))
    model.test_step = lambda data: as_vectors(test_step(data))
    setattr(model, _PREPARED, True)


def weights_digest(model) -> str:
    """A SHA-256 of the model's weights, bytes in order: equal on every worker of a run."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()
