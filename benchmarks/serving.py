"""Serving latency and throughput against the hardware's ceiling: in-process vs gRPC vs REST, batching on and off.

    python benchmarks/serving.py RUN_DIR INPUT [--concurrency 1,4,16] [--repeat 5]

RUN_DIR is any finished run (image or audio classification, detection, text);
INPUT is one file sent in every request: an image, a WAV clip, or a text file
(its contents are the text). The run is exported once, then, per repeat:

1. the ceiling: in-process `serving_default` throughput at batch sizes
   1-16 with one and two concurrent callers; the best is what this machine
   can do with this model;
2. sequential latency (p50/p99) of the in-process call, gRPC Predict and REST
   predict against `transferkit serve` (no batching), interleaved;
3. throughput and latency at each concurrency, without batching and with it
   (the export's batching_parameters.txt unless flags say otherwise; each
   server in its own process), next to the ceiling;
4. where the server's time goes at the highest concurrency: the server's
   phase timings (`:transferkit:serving:phase_seconds`) per request.

Prints tables and writes JSON (default benchmarks/results/serving_<run>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MODEL = "bench"
PHASES = ("parse", "decode", "check", "queue", "to_tensor", "graph", "from_tensor", "encode", "serialize",
          "handler")


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


def _concurrent(call, concurrency: int, seconds: float) -> dict[str, float]:
    """Runs `call` from `concurrency` threads for `seconds`; throughput and latency."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds

    def worker(i):
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            call(i)
            latencies[i].append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    merged = [x for row in latencies for x in row]
    return {"requests_per_second": len(merged) / elapsed, "requests": len(merged), **_percentiles(merged)}


def _ceiling(function, name: str, payload, seconds: float) -> dict:
    """In-process examples per second at each batch size and caller count; the best is the ceiling."""
    import tensorflow as tf

    cells = {}
    for size in (1, 2, 4, 8, 16):
        batch = tf.constant([payload] * size)
        for _ in range(2):
            function(**{name: batch})
        for callers in (1, 2):
            result = _concurrent(lambda i: function(**{name: batch}), callers, seconds)
            cells[f"b{size}_c{callers}"] = result["requests_per_second"] * size
    best = max(cells, key=cells.get)
    return {"examples_per_second": cells, "ceiling": cells[best], "best": best,
            "sequential_batch1": cells["b1_c1"]}


def _start_server(base: Path, batching: list[str] | None):
    grpc_port, rest_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "transferkit", "serve", "--model-base", str(base), "--port", str(grpc_port),
               "--rest-port", str(rest_port)]
    if batching is not None:
        command += ["--batching", *batching]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("serving"):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}", line.strip()


def _phases(rest_address: str) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(f"{rest_address}/monitoring/prometheus/metrics", timeout=30) as page:
        text = page.read().decode()
    phases: dict[str, dict[str, float]] = {}
    for match in re.finditer(r'phase_seconds_(sum|count)\{phase="(\w+)"\} (\S+)', text):
        phases.setdefault(match.group(2), {})[match.group(1)] = float(match.group(3))
    return phases


def _phase_delta(before, after, requests: int) -> dict[str, float]:
    """Milliseconds per request in each phase between two scrapes."""
    return {phase: (after[phase]["sum"] - before.get(phase, {}).get("sum", 0.0)) * 1000 / max(requests, 1)
            for phase in after}


def _signature_input(saved_model: Path) -> str:
    import tensorflow as tf

    function = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    specs = function.structured_input_signature[1]
    strings = [k for k, v in specs.items() if v.dtype == tf.string]
    if len(specs) != 1 or not strings:
        raise SystemExit(f"serving_default of this run takes {sorted(specs)}; the benchmark sends one string input")
    return strings[0]


def run_once(args, base: Path, name: str, payload, rest_body: dict, batching_flags: list[str]) -> dict:
    import tensorflow as tf

    from transferkit.serving.client import GrpcClient, RestClient

    loaded = tf.saved_model.load(str(base / MODEL / "1")).signatures["serving_default"]
    results: dict = {"ceiling": _ceiling(loaded, name, payload, args.ceiling_seconds)}
    one = tf.constant([payload])

    def grpc_call(client):
        return client.predict(MODEL, {name: [payload]})

    results["throughput"], results["phases_ms_per_request"] = {}, {}
    top = max(args.concurrency)
    for batching in (False, True):
        mode = "batching" if batching else "no_batching"
        process, grpc_address, rest_address, banner = _start_server(base, batching_flags if batching else None)
        results[f"{mode}_server"] = banner
        try:
            if not batching:  # sequential latency against the plain server
                rest = RestClient(rest_address, timeout=60)
                with GrpcClient(grpc_address, timeout=60) as client:
                    samples = _interleaved({"in_process": lambda: loaded(**{name: one}),
                                            "grpc": lambda: grpc_call(client),
                                            "rest": lambda: rest.predict(MODEL, rest_body)}, args.requests)
                results["latency"] = {k: _percentiles(v) for k, v in samples.items()}
            for concurrency in args.concurrency:
                clients = [GrpcClient(grpc_address, timeout=60) for _ in range(concurrency)]
                for client in clients:
                    grpc_call(client)
                before = _phases(rest_address) if concurrency == top else None
                cell = _concurrent(lambda i: grpc_call(clients[i]), concurrency, args.seconds)
                if before is not None:
                    results["phases_ms_per_request"][mode] = _phase_delta(before, _phases(rest_address),
                                                                          cell["requests"])
                results["throughput"][f"{mode}_c{concurrency}"] = cell
                for client in clients:
                    client.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
    latency = results["latency"]
    results["grpc_overhead_p50_ms"] = latency["grpc"]["p50_ms"] - latency["in_process"]["p50_ms"]
    plain = results["throughput"][f"no_batching_c{top}"]["requests_per_second"]
    batched = results["throughput"][f"batching_c{top}"]["requests_per_second"]
    results["batching_speedup_top"] = batched / plain
    results["batching_share_of_ceiling"] = batched / results["ceiling"]["ceiling"]
    return results


def _print_run(results: dict, args, payload_bytes: int) -> None:
    latency, ceiling = results["latency"], results["ceiling"]
    print(f"\nsequential latency, one {payload_bytes}-byte input, {args.requests} requests each")
    print(f"{'path':14}{'p50 ms':>10}{'p99 ms':>10}")
    for path in ("in_process", "grpc", "rest"):
        print(f"{path:14}{latency[path]['p50_ms']:>10.2f}{latency[path]['p99_ms']:>10.2f}")
    print(f"gRPC p50 overhead over in-process: {results['grpc_overhead_p50_ms']:.2f} ms (target <= 1.5 ms)")
    print(f"\nin-process ceiling: {ceiling['ceiling']:.1f} examples/s ({ceiling['best']}: batch size, callers); "
          f"sequential batch 1: {ceiling['sequential_batch1']:.1f}")
    print(f"{'concurrency':12}{'no batching':>13}{'p50/p99 ms':>15}{'batching':>10}{'p50/p99 ms':>15}{'ratio':>7}"
          f"{'of ceiling':>12}")
    for concurrency in args.concurrency:
        plain = results["throughput"][f"no_batching_c{concurrency}"]
        batched = results["throughput"][f"batching_c{concurrency}"]
        print(f"{concurrency:<12}{plain['requests_per_second']:>13.1f}"
              f"{plain['p50_ms']:>8.1f}/{plain['p99_ms']:<6.1f}{batched['requests_per_second']:>10.1f}"
              f"{batched['p50_ms']:>8.1f}/{batched['p99_ms']:<6.1f}"
              f"{batched['requests_per_second'] / plain['requests_per_second']:>7.2f}"
              f"{batched['requests_per_second'] / ceiling['ceiling']:>11.0%}")
    phases = results["phases_ms_per_request"]
    print(f"\nserver time per request at concurrency {max(args.concurrency)} (ms; per-batch phases shared "
          f"by the batch's requests)")
    print(f"{'phase':14}{'no batching':>13}{'batching':>10}")
    for phase in PHASES:
        print(f"{phase:14}{phases.get('no_batching', {}).get(phase, 0.0):>13.3f}"
              f"{phases.get('batching', {}).get(phase, 0.0):>10.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished `transferkit train` run directory")
    parser.add_argument("input", type=Path, help="an image, WAV clip or text file to send")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per path")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput cell")
    parser.add_argument("--ceiling-seconds", type=float, default=2.0, help="duration of each ceiling cell")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs (the export is shared)")
    parser.add_argument("--max-batch-size", type=int, help="batching: over batching_parameters.txt")
    parser.add_argument("--batch-timeout-micros", type=int, help="batching: over batching_parameters.txt")
    parser.add_argument("--num-batch-threads", type=int, help="batching: over batching_parameters.txt")
    parser.add_argument("--json", type=Path, help="default benchmarks/results/serving_<run>.json")
    args = parser.parse_args(argv)
    args.concurrency = sorted({int(c) for c in args.concurrency.split(",")})

    from transferkit.serving import config_files
    from transferkit.serving.export import export_run

    base = Path(tempfile.mkdtemp(prefix="transferkit-bench-"))
    export_run(args.run_dir, base, MODEL)
    name = _signature_input(base / MODEL / "1")
    raw = args.input.read_bytes()
    if name == "texts" or args.input.suffix == ".txt":
        payload = raw.decode("utf-8", errors="replace")
        rest_body = {"instances": [payload]}
    else:
        import base64

        payload = raw
        rest_body = {"instances": [{"b64": base64.b64encode(raw).decode()}]}
    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
             ("max_batch_size", "batch_timeout_micros", "num_batch_threads") if getattr(args, k) is not None]
    options = config_files.read_batching(base)
    print(f"{args.run_dir}: input {name!r}, {len(raw)} bytes; batching {options} {' '.join(flags)}".rstrip())

    runs = []
    for index in range(args.repeat):
        if args.repeat > 1:
            print(f"\n=== run {index + 1} of {args.repeat}")
        runs.append(run_once(args, base, name, payload, rest_body, flags))
        _print_run(runs[-1], args, len(raw))
    summary = {key: [run[key] for run in runs] for key in
               ("grpc_overhead_p50_ms", "batching_speedup_top", "batching_share_of_ceiling")}
    top = max(args.concurrency)
    summary["p99_ms_top"] = {mode: [run["throughput"][f"{mode}_c{top}"]["p99_ms"] for run in runs]
                             for mode in ("no_batching", "batching")}
    if args.repeat > 1:
        print(f"\nover {args.repeat} runs: gRPC overhead p50 "
              f"{', '.join(f'{v:.2f}' for v in summary['grpc_overhead_p50_ms'])} ms; batching at concurrency {top}: "
              f"{', '.join(f'{v:.2f}x' for v in summary['batching_speedup_top'])} over no batching, "
              f"{', '.join(f'{v:.0%}' for v in summary['batching_share_of_ceiling'])} of the ceiling")
    output = args.json or Path(__file__).parent / "results" / f"serving_{args.run_dir.resolve().name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"run_dir": str(args.run_dir), "input": str(args.input), "input_bytes": len(raw),
                                  "batching": str(options), "batching_flags": flags, "runs": runs,
                                  "summary": summary}, indent=2))
    print(f"written {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
