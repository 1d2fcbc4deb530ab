"""Request metrics in Prometheus text format, named as TF Serving names them.

TF Serving exports `/tensorflow/serving/request_count` and
`/tensorflow/serving/request_latency` at `/monitoring/prometheus/metrics`
(with `/` written as `:`); `transferkit serve` keeps the same names there on
its REST port, so dashboards work with either server.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

# Latency bucket bounds in microseconds, as TF Serving reports latency.
BUCKETS_US = (500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000, 5000000)
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


class RequestMetrics:
    """Counts requests and their latency by model, API, entry point and status."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple, int] = defaultdict(int)
        self._latency: dict[tuple, list] = {}

    def record(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        micros = seconds * 1e6
        with self._lock:
            self._counts[(("model_name", model), ("status", status))] += 1
            key = (("model_name", model), ("API", api), ("entrypoint", entrypoint), ("status", status))
            entry = self._latency.setdefault(key, [[0] * (len(BUCKETS_US) + 1), 0.0, 0])
            entry[0][bisect.bisect_left(BUCKETS_US, micros)] += 1
            entry[1] += micros
            entry[2] += 1

    def render(self) -> str:
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for key, count in sorted(self._counts.items()):
                lines.append(f":tensorflow:serving:request_count{{{_labels(key)}}} {count}")
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for key, (buckets, total, count) in sorted(self._latency.items()):
                cumulative = 0
                for bound, value in zip((*BUCKETS_US, "+Inf"), buckets):
                    cumulative += value
                    lines.append(f':tensorflow:serving:request_latency_bucket{{{_labels(key)},le="{bound}"}} '
                                 f"{cumulative}")
                lines.append(f":tensorflow:serving:request_latency_sum{{{_labels(key)}}} {total:.1f}")
                lines.append(f":tensorflow:serving:request_latency_count{{{_labels(key)}}} {count}")
        return "\n".join(lines) + "\n"
