"""Serving latency and throughput: in-process vs gRPC vs REST, batching on and off.

    python benchmarks/serving.py RUN_DIR IMAGE [--requests 200]

Exports RUN_DIR once, then on the same model and the same JPEG:
1. sequential latency (p50/p99) of the in-process `serving_default` call,
   gRPC Predict and REST predict against `transferkit serve`;
2. throughput at concurrency 1, 4 and 16, with and without server-side
   batching (each server in its own process, so client and server do not
   share a Python interpreter).
Prints a table and writes JSON (default benchmarks/results/serving.json).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentiles(samples: list[float]) -> dict[str, float]:
    array = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(array, 50)), "p99_ms": float(np.percentile(array, 99)),
            "mean_ms": float(array.mean())}


def _interleaved(calls: dict, count: int, warmup: int = 10) -> dict[str, list[float]]:
    """Times each call `count` times, round-robin, so machine noise hits all paths alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples = {name: [] for name in calls}
    for _ in range(count):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return samples


def _start_server(base: Path, batching: bool, max_batch: int, timeout_micros: int):
    grpc_port, rest_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "transferkit", "serve", "--model-base", str(base), "--port", str(grpc_port),
               "--rest-port", str(rest_port)]
    if batching:
        command += ["--batching", "--max-batch-size", str(max_batch), "--batch-timeout-micros", str(timeout_micros)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("serving"):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"


def _throughput(address: str, image: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    from transferkit.serving.client import GrpcClient

    clients = [GrpcClient(address, timeout=60) for _ in range(concurrency)]
    for client in clients:
        client.predict_images("bench", [image])
    counts = [0] * concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds

    def worker(i):
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            clients[i].predict_images("bench", [image])
            latencies[i].append(time.perf_counter() - start)
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    merged = [x for row in latencies for x in row]
    return {"requests_per_second": sum(counts) / elapsed, "requests": sum(counts), **_percentiles(merged)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished `transferkit train` run directory")
    parser.add_argument("image", type=Path, help="a JPEG to send")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per path")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout-micros", type=int, default=5000)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "serving.json")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from transferkit.serving.client import GrpcClient, RestClient
    from transferkit.serving.export import export_run

    image = args.image.read_bytes()
    base = Path(tempfile.mkdtemp(prefix="transferkit-bench-"))
    export_run(args.run_dir, base, "bench")
    loaded = tf.saved_model.load(str(base / "bench" / "1")).signatures["serving_default"]
    batch = tf.constant([image])
    results = {"image_bytes": len(image), "run_dir": str(args.run_dir), "latency": {}, "throughput": {}}
    # The ceiling for server-side batching on this machine: how much cheaper an
    # image is in a batch of 16 than alone, in-process.
    per_image = {}
    for size in (1, 16):
        images = tf.constant([image] * size)
        samples = _interleaved({"call": lambda: loaded(images=images)}, 30, warmup=3)["call"]
        per_image[size] = float(np.median(samples)) * 1000 / size
    results["in_process_ms_per_image"] = {f"batch_{k}": v for k, v in per_image.items()}

    for batching in (False, True):
        process, grpc_address, rest_address = _start_server(base, batching, args.max_batch_size,
                                                            args.batch_timeout_micros)
        try:
            if not batching:  # sequential latency against the plain server
                rest = RestClient(rest_address, timeout=60)
                with GrpcClient(grpc_address, timeout=60) as client:
                    samples = _interleaved({"in_process": lambda: loaded(images=batch),
                                            "grpc": lambda: client.predict_images("bench", [image]),
                                            "rest": lambda: rest.predict_images("bench", [image])}, args.requests)
                results["latency"] = {name: _percentiles(values) for name, values in samples.items()}
            for concurrency in (1, 4, 16):
                key = f"{'batching' if batching else 'no_batching'}_c{concurrency}"
                results["throughput"][key] = _throughput(grpc_address, image, concurrency, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=60)

    latency = results["latency"]
    print(f"sequential latency, one {len(image)}-byte JPEG, {args.requests} requests")
    print(f"{'path':14}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("in_process", "grpc", "rest"):
        print(f"{name:14}{latency[name]['p50_ms']:>10.2f}{latency[name]['p99_ms']:>10.2f}")
    overhead = latency["grpc"]["p50_ms"] - latency["in_process"]["p50_ms"]
    print(f"gRPC p50 overhead over in-process: {overhead:.2f} ms (target <= 1.5 ms)")
    print(f"\nthroughput (requests/s), {args.seconds:.0f}s per cell; batching: max {args.max_batch_size}, "
          f"timeout {args.batch_timeout_micros} us")
    print(f"in-process ms per image: batch 1 {per_image[1]:.2f}, batch 16 {per_image[16]:.2f} "
          f"(batching ceiling {per_image[1] / per_image[16]:.2f}x over sequential single requests)")
    print(f"{'concurrency':14}{'no batching':>14}{'batching':>14}{'ratio':>8}")
    for concurrency in (1, 4, 16):
        plain = results["throughput"][f"no_batching_c{concurrency}"]["requests_per_second"]
        batched = results["throughput"][f"batching_c{concurrency}"]["requests_per_second"]
        print(f"{concurrency:<14}{plain:>14.1f}{batched:>14.1f}{batched / plain:>8.2f}")
    results["grpc_overhead_p50_ms"] = overhead
    results["batching_speedup_c16"] = (results["throughput"]["batching_c16"]["requests_per_second"]
                                       / results["throughput"]["no_batching_c16"]["requests_per_second"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
