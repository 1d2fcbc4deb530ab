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
        return generate_latest(registry).decode("utf-8")
