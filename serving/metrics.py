"""Request metrics in Prometheus text format, named as TF Serving names them.

TF Serving exports `/tensorflow/serving/request_count` and
`/tensorflow/serving/request_latency` at `/monitoring/prometheus/metrics`
(with `/` written as `:`); `transferkit serve` keeps the same names there on
its REST port, so dashboards work with either server. The page is written by
`prometheus_client` (which escapes label values); requests for models that
are not served are counted under one label value, so clients cannot grow
the page without bound.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import Callable, Container

# Latency bucket bounds in microseconds, as TF Serving reports latency.
BUCKETS_US = (500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000, 5000000)
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
UNKNOWN_MODEL = "_unserved"  # not a valid model name, so never a real one
COUNT_NAME = ":tensorflow:serving:request_count"
LATENCY_NAME = ":tensorflow:serving:request_latency"
PHASE_NAME = ":transferkit:serving:phase_seconds"
BATCH_NAME = ":transferkit:serving:batch_size"


class PhaseTimes:
    """Where a server's time goes: seconds and counts per phase of a request, and batch sizes.

    Phases: `parse` (gRPC bytes to PredictRequest), `decode` (to numpy), `check` (against the
    signature), `queue` (waiting for a batch), `to_tensor` (concatenation and conversion), `graph`
    (the SavedModel function), `from_tensor` (outputs to numpy), `encode` (PredictResponse) and
    `serialize`; `handler` is the whole servicer call. `queue` is per request, `to_tensor`,
    `graph` and `from_tensor` per batch. A few hundred nanoseconds a phase, so always on.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._phases: dict[str, list] = defaultdict(lambda: [0, 0.0])
        self._batch_sizes: dict[int, int] = defaultdict(int)

    def add(self, phase: str, seconds: float, count: int = 1) -> None:
        with self._lock:
            entry = self._phases[phase]
            entry[0] += count
            entry[1] += seconds

    def add_batch(self, rows: int) -> None:
        with self._lock:
            self._batch_sizes[rows] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"phases": {k: {"count": v[0], "seconds": v[1]} for k, v in self._phases.items()},
                    "batch_sizes": dict(self._batch_sizes)}

    def reset(self) -> None:
        with self._lock:
            self._phases.clear()
            self._batch_sizes.clear()

    def collect(self):
        from prometheus_client.core import HistogramMetricFamily, SummaryMetricFamily

        snapshot = self.snapshot()
        summary = SummaryMetricFamily(PHASE_NAME, "Seconds spent in each phase of serving.", labels=["phase"])
        for phase, entry in sorted(snapshot["phases"].items()):
            summary.add_metric([phase], entry["count"], entry["seconds"])
        yield summary
        sizes = snapshot["batch_sizes"]
        if sizes:
            histogram = HistogramMetricFamily(BATCH_NAME, "Rows per batch run by server-side batching.")
            bounds = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, *sizes})
            rows = [(str(b), sum(c for s, c in sizes.items() if s <= b)) for b in bounds]
            rows.append(("+Inf", sum(sizes.values())))
            histogram.add_metric([], rows, float(sum(s * c for s, c in sizes.items())))
            yield histogram


PHASES = PhaseTimes()  # process-wide, like prometheus_client's default registry


class RequestMetrics:
    """Counts requests and their latency by model, API, entry point and status.

    `served_models` returns the names the server serves; any other requested
    name is recorded as `UNKNOWN_MODEL`.
    """

    def __init__(self, served_models: Callable[[], Container[str]] | None = None):
        self._served_models = served_models
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str, str, str], list] = {}

    def record(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        if self._served_models is not None and model not in self._served_models():
            model = UNKNOWN_MODEL
        micros = seconds * 1e6
        with self._lock:
            self._counts[(model, status)] += 1
            entry = self._latency.setdefault((model, api, entrypoint, status), [[0] * (len(BUCKETS_US) + 1), 0.0])
            entry[0][bisect.bisect_left(BUCKETS_US, micros)] += 1
            entry[1] += micros

    def collect(self):
        """A prometheus_client collector: the two metric families, from a consistent snapshot."""
        from prometheus_client.core import HistogramMetricFamily, Metric

        with self._lock:
            counts = dict(self._counts)
            latency = {k: (list(v[0]), v[1]) for k, v in self._latency.items()}
        # Untyped keeps TF Serving's exact name: prometheus_client writes every counter as NAME_total.
        count = Metric(COUNT_NAME, "Number of requests (a counter).", "unknown")
        for (model, status), value in sorted(counts.items()):
            count.add_sample(COUNT_NAME, {"model_name": model, "status": status}, value)
        yield count
        histogram = HistogramMetricFamily(LATENCY_NAME, "Request latency in microseconds.",
                                          labels=["model_name", "API", "entrypoint", "status"])
        for key, (buckets, total) in sorted(latency.items()):
            cumulative, rows = 0, []
            for bound, value in zip((*BUCKETS_US, "+Inf"), buckets):
                cumulative += value
                rows.append((str(bound), cumulative))
            histogram.add_metric(list(key), rows, total)
        yield histogram

    def render(self) -> str:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        registry.register(PHASES)
        return generate_latest(registry).decode("utf-8")
