"""Load test of `transferkit serve`: concurrent gRPC and REST clients, a hot reload, SIGTERM.

    python benchmarks/load_test.py [RUN_DIR] [--seconds 180] [--clients 16]

Exports RUN_DIR (by default a tiny image classifier trained here in seconds)
as version 1, starts `transferkit serve` in its own process, and runs
`--clients` threads (half gRPC, half REST) sending one real image per
request for `--seconds`. A third of the way in, version 2 is copied in
slowly (every file but the variables data first, the data 3 s later): the
server must pick it up once complete without failing a request. At the end
the server gets SIGTERM while the clients are still sending. Prints requests,
errors (expected 0 before SIGTERM), p50/p99 latency, the server's RSS at the
start and the end and its exit status; writes benchmarks/results/load_test.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _tiny_run(work: Path) -> Path:
    from transferkit.config import build_run_config
    from transferkit.plugins.image_classification.testing import make_image_folder, tiny_config
    from transferkit.runner import train

    images = make_image_folder(work / "images", per_class=6, size=32)
    return train(build_run_config(tiny_config(images, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 1}])), work / "run")


def _copy_slowly(source: Path, target: Path, pause: float) -> None:
    """Everything but the variables data, then (after `pause`) the data: a slow network copy."""
    tmp_data = []
    for path in sorted(source.rglob("*")):
        if path.is_dir():
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith("variables.data"):
            tmp_data.append((path, destination))
        else:
            shutil.copy2(path, destination)
    time.sleep(pause)
    for path, destination in tmp_data:
        shutil.copy2(path, destination)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "load_test.json"))
    args = parser.parse_args(argv)

    from transferkit.serving.client import GrpcClient, RestClient
    from transferkit.serving.export import export_run

    work = Path(tempfile.mkdtemp(prefix="transferkit-load-"))
    run_dir = Path(args.run_dir) if args.run_dir else _tiny_run(work)
    base = work / "models"
    version_1 = export_run(run_dir, base, "m", version=1)
    info = json.loads((run_dir / "info.json").read_text())
    image = Path(info["examples"][0]).read_bytes()
    grpc_port, rest_port = _free_port(), _free_port()
    server = subprocess.Popen([sys.executable, "-m", "transferkit", "serve", "--model-base", str(base),
                               "--port", str(grpc_port), "--rest-port", str(rest_port), "--poll-seconds", "0.5"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    for line in server.stdout:  # TensorFlow may log first
        log.append(line)
        if line.startswith("serving"):
            break
    else:
        raise SystemExit("server did not start:\n" + "".join(log))
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()  # drain its log
    rss_start = _rss_mb(server.pid)

    stop_at = time.monotonic() + args.seconds
    sigterm_sent = threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    errors_before, errors_after, versions = [], 0, set()

    def client_loop(index: int) -> None:
        nonlocal errors_after
        use_grpc = index % 2 == 0
        client = (GrpcClient(f"127.0.0.1:{grpc_port}", timeout=30, retries=0) if use_grpc
                  else RestClient(f"http://127.0.0.1:{rest_port}", timeout=30, retries=0))
        while time.monotonic() < stop_at + 5:
            started = time.perf_counter()
            try:
                result = client.predict_images("m", [image])
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if use_grpc:
                        versions.add(int(result["model_version"]))
            except Exception as error:  # counted, by whether the server was told to stop
                with lock:
                    if sigterm_sent.is_set():
                        errors_after += 1
                    else:
                        errors_before.append(f"{type(error).__name__}: {error}")
                if sigterm_sent.is_set():
                    return
        if use_grpc:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(args.seconds / 3)
    _copy_slowly(version_1, base / "m" / "2", pause=3.0)
    time.sleep(max(0.0, stop_at - time.monotonic()))
    rss_end = _rss_mb(server.pid)
    sigterm_sent.set()
    server.send_signal(signal.SIGTERM)
    try:
        exit_status = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        exit_status = "killed after 60 s"
    for thread in threads:
        thread.join(timeout=35)

    times = np.asarray(latencies) * 1000
    result = {
        "clients": args.clients, "seconds": args.seconds, "requests": int(times.size),
        "errors_before_sigterm": len(errors_before), "first_errors": errors_before[:5],
        "errors_after_sigterm": errors_after,
        "p50_ms": round(float(np.percentile(times, 50)), 2) if times.size else None,
        "p99_ms": round(float(np.percentile(times, 99)), 2) if times.size else None,
        "versions_answered": sorted(versions), "server_rss_mb_start": round(rss_start, 1),
        "server_rss_mb_end": round(rss_end, 1), "server_exit_status": exit_status,
    }
    print(json.dumps(result, indent=2))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not errors_before and 2 in versions else 1


if __name__ == "__main__":
    sys.exit(main())
