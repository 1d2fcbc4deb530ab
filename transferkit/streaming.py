"""tf.data input settings every task shares: usable CPUs, autotuning, the cache choice, disk cache folders.

Task-independent: the image pipelines (`transferkit.vision.streaming`) and
the text pipeline build on these, and the runner sets every pipeline's
options with `pipeline_options`. A disk cache here is a `tf.data` file
cache in a folder named by its task's key; `disk_cache_prefix` picks a
finished cache to reuse, rebuilds a damaged one and clears what killed
writers left behind.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from transferkit.fileio import atomic_write_text, process_alive

if TYPE_CHECKING:
    import tensorflow as tf

# Shuffle buffers after a cache (and for packs): the cached order is already a seeded permutation of
# the files, so a small buffer only reorders locally each epoch, and it fills fast on the first pass.
SHUFFLE_BUFFER = 256
SUMS_SUFFIX = ".sums.json"  # sizes and modification times of a finished disk cache
logger = logging.getLogger(__name__)


FEW_CPUS = 4


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (`docker --cpus`)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the mask decides
    return cpus


def pipeline_options(autotune: bool | None) -> "tf.data.Options":
    """`tf.data.Options` for a run's pipelines: `training.data_autotune`, by default off on `FEW_CPUS` or fewer.

    The autotuner models the pipeline on a thread of its own. On 2 cores that
    thread takes a core from the model's ops: frozen-stage Lite0 epochs took
    2.2 to 3.0 s with it and a steady 2.2 s without, while decode throughput
    was the same either way. Without it, AUTOTUNE map parallelism is the
    number of CPUs and AUTOTUNE prefetch buffers still grow when they run dry.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = autotune if autotune is not None else usable_cpus() > FEW_CPUS
    return options


def resolve_cache(cache: str, count: int, example_bytes: int, memory_mb: float, beyond: str = "disk") -> str:
    """`data.cache` with auto resolved: memory while `count` examples of `example_bytes` fit in `memory_mb`.

    Beyond that, `beyond`: images are cached on disk (decoding costs more than reading), while
    tokenising a text costs less than reading it back, so texts are streamed (`none`).
    """
    if cache != "auto":
        return cache
    return "memory" if count * example_bytes / 2**20 <= memory_mb else beyond


def _cache_files(prefix: Path) -> list[Path]:
    return sorted(p for p in prefix.parent.glob(prefix.name + "*")
                  if not p.name.endswith((".lockfile", SUMS_SUFFIX)) and p.is_file())


def _current_sums(prefix: Path) -> dict[str, list[int]]:
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in _cache_files(prefix)}


def _cache_intact(prefix: Path) -> bool:
    """Whether a finished tf.data file cache is as its writer left it.

    A finished cache is never rewritten, so the process that wrote it records each file's size and
    modification time (`PREFIX.sums.json`) as soon as the cache is complete, and later runs compare: a
    truncated, deleted or rewritten cache is rebuilt instead of failing every run with DataLossError. A
    cache without sums (its writer died first, or an older version wrote it) is rebuilt too: it cannot be
    vouched for. No file is read.
    """
    sums_path = prefix.parent / (prefix.name + SUMS_SUFFIX)
    if not any(".data-" in f.name for f in _cache_files(prefix)):
        return False
    try:
        recorded = json.loads(sums_path.read_text())
    except (OSError, ValueError):
        return False
    return recorded == _current_sums(prefix)


# Caches this process is writing, recorded once complete (after an epoch, at the next lookup, at exit).
_WRITING: set[Path] = set()


def record_finished_caches() -> None:
    """Writes the sums of every cache this process started and tf.data has since finished (its `.index`)."""
    for prefix in sorted(_WRITING):
        if (prefix.parent / (prefix.name + ".index")).is_file():
            atomic_write_text(prefix.parent / (prefix.name + SUMS_SUFFIX), json.dumps(_current_sums(prefix)))
            _WRITING.discard(prefix)


def disk_cache_prefix(folder: Path) -> Path:
    """The tf.data file cache to use in `folder`: a finished one, else a new one for this process.

    TensorFlow names a finished cache `PREFIX.index` (+ data files) and writes
    it only when a pass over the data completes; an iterator that stops early
    leaves nothing. Each writer gets its own prefix, so a process killed while
    writing (its lock file and temporary state stay behind) never blocks the
    next run; those leftovers are removed once their process is gone.
    """
    record_finished_caches()
    folder.mkdir(parents=True, exist_ok=True)
    for index in sorted(folder.glob("data-*.index")):
        prefix = index.with_suffix("")
        if _cache_intact(prefix):
            return prefix
        for damaged in folder.glob(prefix.name + "*"):
            damaged.unlink(missing_ok=True)
        logger.warning("%s: the disk cache was damaged (files changed, missing or truncated); it is removed "
                       "and written again during this run", prefix)
    for lock in folder.glob("data-*_0.lockfile"):
        pid = int(lock.name.split("-")[1])
        if not process_alive(pid):
            for leftover in folder.glob(lock.name.split("_0.lockfile")[0] + "*"):
                leftover.unlink(missing_ok=True)
    prefix = folder / f"data-{os.getpid()}-{time.time_ns():x}"
    if not _WRITING:
        atexit.register(record_finished_caches)
    _WRITING.add(prefix)
    return prefix
