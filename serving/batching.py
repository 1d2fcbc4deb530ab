"""Server-side batching: concurrent requests to one signature run as one batch.

`BatchingOptions` are TF Serving's `BatchingParameters` and are read from
(and written to) the same `batching_parameters.txt` text proto that
`tensorflow_model_server --batching_parameters_file` reads.

`BatchScheduler` follows TF Serving's shared batch scheduler: a batch is
run as soon as it is full, or once its first request has waited
`batch_timeout_micros` and a batch thread is free; `num_batch_threads`
batches run at once. Unlike TF Serving, a batch also starts at once when no
other batch is running: a lone request then pays no timeout, and under load
batches still fill while the cores are busy. Batches are formed in Python, around the signature's
concrete function, rather than with TensorFlow's `BatchFunction` op: the op
added more than its timeout to a lone request and formed no large batches
under load (`benchmarks/serving.py`; docs/serving.md, "Server-side batching").
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

import numpy as np

from transferkit.serving.metrics import PHASES

BATCHING_PARAMETERS_FILE = "batching_parameters.txt"


def _default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# Every field's range. The upper bounds keep a parameters file from asking for what no 2-core or GPU server
# can give (a billion-row batch is allocated at warmup; ten thousand threads exhaust the process), and far
# above what TF Serving's own guide suggests tuning to (batches in the hundreds, threads = cores).
LIMITS = {
    "max_batch_size": (1, 4096),
    "batch_timeout_micros": (0, 60_000_000),  # a minute
    "num_batch_threads": (1, 256),
    "max_enqueued_batches": (1, 1_000_000),
}
MAX_ALLOWED_SIZES = 64
MAX_PARAMETERS_BYTES = 64 << 10


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """How concurrent requests are batched (TF Serving's `BatchingParameters`).

    Example:

    ```python
    options = BatchingOptions(max_batch_size=8, batch_timeout_micros=5000, allowed_batch_sizes=(2, 4, 8))
    options.padded_size(3)  # 4: a batch of 3 requests runs as 4 rows
    BatchingOptions.read("models/batching_parameters.txt")
    ```

    Args:
        max_batch_size: the most rows in one batch.
        batch_timeout_micros: the longest the first request of a batch waits for more to join.
        num_batch_threads: batches that run at once (default: the CPUs this process may use).
        max_enqueued_batches: queued rows beyond `max_enqueued_batches * max_batch_size` are refused
            (UNAVAILABLE), so a backlog cannot grow without bound.
        allowed_batch_sizes: if set, each batch is padded up to the next of these sizes (increasing, the
            last equal to `max_batch_size`), so only these shapes ever run.
        pad_variable_length_inputs: requests whose inputs differ in a non-batch dimension are padded to
            the batch's largest (with the input's first value) instead of running in separate batches.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    num_batch_threads: int = dataclasses.field(default_factory=_default_threads)
    max_enqueued_batches: int = 100
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        object.__setattr__(self, "allowed_batch_sizes", tuple(int(s) for s in self.allowed_batch_sizes))
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"BatchingOptions: {name} must be an integer in [{low}, {high}]. "
                                 f"Received: {name}={value!r}")
        sizes = self.allowed_batch_sizes
        if len(sizes) > MAX_ALLOWED_SIZES:
            raise ValueError(f"BatchingOptions: allowed_batch_sizes holds at most {MAX_ALLOWED_SIZES} sizes. "
                             f"Received: {len(sizes)}")
        if sizes:
            if any(s < 1 for s in sizes) or any(b <= a for a, b in zip(sizes, sizes[1:])):
                raise ValueError(f"BatchingOptions: allowed_batch_sizes must be increasing integers >= 1. "
                                 f"Received: allowed_batch_sizes={list(sizes)}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"BatchingOptions: the last allowed_batch_sizes entry must equal max_batch_size "
                                 f"({self.max_batch_size}). Received: allowed_batch_sizes={list(sizes)}")

    def padded_size(self, rows: int) -> int:
        """The rows a batch of `rows` runs as: the next allowed size, or `rows` itself."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows

    def warmup_sizes(self) -> list[int]:
        """The batch sizes to run once before serving: the allowed sizes; else every size up to 16 (any
        can form) and powers of two beyond, then the maximum. Set allowed_batch_sizes to bound this."""
        if self.allowed_batch_sizes:
            return list(self.allowed_batch_sizes)
        sizes = list(range(1, min(self.max_batch_size, 16) + 1))
        while sizes[-1] * 2 < self.max_batch_size:
            sizes.append(sizes[-1] * 2)
        return sizes if sizes[-1] == self.max_batch_size else sizes + [self.max_batch_size]

    # -- batching_parameters.txt ------------------------------------------------

    def to_text_proto(self) -> str:
        lines = [f"max_batch_size {{ value: {self.max_batch_size} }}",
                 f"batch_timeout_micros {{ value: {self.batch_timeout_micros} }}",
                 f"max_enqueued_batches {{ value: {self.max_enqueued_batches} }}",
                 f"num_batch_threads {{ value: {self.num_batch_threads} }}"]
        lines += [f"allowed_batch_sizes: {size}" for size in self.allowed_batch_sizes]
        if self.pad_variable_length_inputs:
            lines.append("pad_variable_length_inputs: true")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text_proto(cls, text: str, source: str = "batching parameters") -> "BatchingOptions":
        """Parses TF Serving's BatchingParameters text format; unset fields keep these defaults."""
        from google.protobuf import text_format

        message = _batching_parameters_class()()
        try:
            text_format.Parse(text, message)
        except text_format.ParseError as error:
            raise ValueError(f"{source}: not a TF Serving BatchingParameters text proto ({error}); expected "
                             f"fields such as `max_batch_size {{ value: 8 }}`") from None
        values = {name: getattr(message, name).value for name in
                  ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
                  if message.HasField(name)}
        try:
            return cls(**values, allowed_batch_sizes=tuple(message.allowed_batch_sizes),
                       pad_variable_length_inputs=message.pad_variable_length_inputs)
        except ValueError as error:
            raise ValueError(f"{source}: {str(error).removeprefix('BatchingOptions: ')}") from None

    @classmethod
    def read(cls, path: str | Path) -> "BatchingOptions":
        path = Path(path)
        try:
            if path.stat().st_size > MAX_PARAMETERS_BYTES:
                raise ValueError(f"{path}: {path.stat().st_size} bytes; a batching parameters file is at most "
                                 f"{MAX_PARAMETERS_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: cannot read batching parameters ({getattr(error, 'strerror', None) or error})"
                             ) from None
        return cls.from_text_proto(text, str(path))


_MESSAGE_CLASS = None


def _batching_parameters_class():
    """TF Serving's BatchingParameters message, built from its field list (its _pb2 is not on PyPI)."""
    global _MESSAGE_CLASS
    if _MESSAGE_CLASS is not None:
        return _MESSAGE_CLASS
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(name="transferkit/batching_parameters.proto",
                                              package="tensorflow.serving", syntax="proto3",
                                              dependency=["google/protobuf/wrappers.proto"])
    message = file.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name, wrapper in ((1, "max_batch_size", "Int64Value"), (2, "batch_timeout_micros", "Int64Value"),
                                  (3, "max_enqueued_batches", "Int64Value"), (4, "num_batch_threads", "Int64Value"),
                                  (5, "thread_pool_name", "StringValue")):
        message.field.add(name=name, number=number, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED, type=field.TYPE_INT64)
    message.field.add(name="pad_variable_length_inputs", number=7, label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL)
    pool.Add(file)
    _MESSAGE_CLASS = message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
    return _MESSAGE_CLASS


class QueueFullError(RuntimeError):
    """More rows are waiting than `max_enqueued_batches * max_batch_size`."""


class _Pending:
    __slots__ = ("inputs", "rows", "trailing", "arrived", "future")

    def __init__(self, inputs: dict[str, np.ndarray]):
        self.inputs = inputs
        self.rows = len(next(iter(inputs.values())))
        self.trailing = {k: v.shape[1:] for k, v in inputs.items()}
        self.arrived = time.monotonic()
        self.future: Future = Future()


class BatchScheduler:
    """Queues calls to one function and runs them in batches on its own threads.

    Example:

    ```python
    scheduler = BatchScheduler(lambda inputs: {"y": inputs["x"] * 2}, BatchingOptions(max_batch_size=8))
    scheduler.run({"x": np.ones((1, 3))})  # joins whatever batch forms within the timeout
    scheduler.close()
    ```

    `function` takes and returns `{name: array}` with the batch as the first
    dimension. A batch that raises `isolate` errors (a bad image in one
    request) is re-run one request at a time, so only the bad request fails.
    """

    def __init__(self, function: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                 options: BatchingOptions, isolate: tuple[type[BaseException], ...] = (), name: str = "batch"):
        self.function = function
        self.options = options
        self.isolate = isolate
        self._queue: list[_Pending] = []
        self._queued_rows = 0
        self._condition = threading.Condition()
        self._closed = False
        self._running = 0  # batches executing now
        self.stats = {"batches": 0, "rows": 0, "padded_rows": 0}
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs `inputs` in a batch with other callers' and returns its own rows of the outputs."""
        pending = _Pending(inputs)
        if pending.rows > self.options.max_batch_size:
            return self.function(inputs)  # larger than any batch: runs alone, as it came
        limit = self.options.max_enqueued_batches * self.options.max_batch_size
        with self._condition:
            closed = self._closed
            if not closed:
                if self._queued_rows + pending.rows > limit:
                    raise QueueFullError(f"the batching queue is full ({self._queued_rows} rows waiting, at most "
                                         f"{limit}: max_enqueued_batches x max_batch_size)")
                self._queue.append(pending)
                self._queued_rows += pending.rows
                self._condition.notify_all()
        if closed:  # a request that reached a version as it was replaced: still answered
            return self.function(inputs)
        return pending.future.result()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    # -- batch threads -------------------------------------------------------------

    def _fits(self, first: _Pending, other: _Pending) -> bool:
        return self.options.pad_variable_length_inputs or other.trailing == first.trailing

    def _ready_rows(self) -> int:
        first = self._queue[0]
        return sum(p.rows for p in self._queue if self._fits(first, p))

    def _take(self) -> list[_Pending]:
        first, batch, rows, rest = self._queue[0], [], 0, []
        for pending in self._queue:
            if self._fits(first, pending) and rows + pending.rows <= self.options.max_batch_size:
                batch.append(pending)
                rows += pending.rows
            else:
                rest.append(pending)
        self._queue = rest
        self._queued_rows -= rows
        return batch

    def _loop(self) -> None:
        timeout = self.options.batch_timeout_micros / 1e6
        while True:
            with self._condition:
                while not self._queue and not self._closed:
                    self._condition.wait()
                if not self._queue:
                    return
                # Run when the batch is full, when its first request has waited the timeout, or when no
                # other batch is running: waiting then would only leave the cores idle.
                while (not self._closed and self._queue and self._running
                       and self._ready_rows() < self.options.max_batch_size):
                    left = self._queue[0].arrived + timeout - time.monotonic()
                    if left <= 0:
                        break
                    self._condition.wait(left)
                if not self._queue:
                    continue
                batch = self._take()
                self._running += 1
            try:
                self._execute(batch)
            finally:
                with self._condition:
                    self._running -= 1
                    self._condition.notify_all()

    def _execute(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        for pending in batch:
            PHASES.add("queue", started - pending.arrived)
        try:
            inputs, rows = self._concatenate(batch)
            outputs = self.function(inputs)
            self._split(batch, outputs, rows)
        except self.isolate as error:
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            for pending in batch:  # one bad request must not fail the others
                try:
                    pending.future.set_result(self.function(pending.inputs))
                except BaseException as alone:
                    pending.future.set_exception(alone)
        except BaseException as error:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)

    def _concatenate(self, batch: list[_Pending]) -> tuple[dict[str, np.ndarray], int]:
        rows = sum(p.rows for p in batch)
        padded = self.options.padded_size(rows)
        PHASES.add_batch(padded)
        with self._condition:
            self.stats["batches"] += 1
            self.stats["rows"] += rows
            self.stats["padded_rows"] += padded - rows
        inputs = {}
        for key in batch[0].inputs:
            parts = [p.inputs[key] for p in batch]
            if self.options.pad_variable_length_inputs:
                parts = _pad_trailing(parts)
            if padded > rows:  # repeat a real row: zeros may not be a valid input (an empty image)
                parts.append(np.repeat(parts[0][:1], padded - rows, axis=0))
            inputs[key] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return inputs, rows

    @staticmethod
    def _split(batch: list[_Pending], outputs: dict[str, np.ndarray], rows: int) -> None:
        for key, value in outputs.items():
            if np.ndim(value) == 0 or len(value) < rows:
                raise ValueError(f"output {key!r} has shape {list(np.shape(value))}: batching needs every output "
                                 f"to have the batch as its first dimension")
        start = 0
        for pending in batch:
            end = start + pending.rows
            pending.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end


def _pad_trailing(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Pads every array to the largest size of each non-batch dimension, with its first value."""
    target = np.max([p.shape for p in parts], axis=0)[1:]
    padded = []
    for part in parts:
        widths = [(0, 0)] + [(0, int(t) - s) for t, s in zip(target, part.shape[1:])]
        if any(w for _, w in widths):
            fill = part.reshape(-1)[0] if part.size else 0
            part = np.pad(part, widths, constant_values=fill) if part.dtype != object else \
                _pad_object(part, widths, fill)
        padded.append(part)
    return padded


def _pad_object(part: np.ndarray, widths, fill) -> np.ndarray:
    out = np.full([s + w for s, (_, w) in zip(part.shape, widths)], fill, dtype=object)
    out[tuple(slice(0, s) for s in part.shape)] = part
    return out
