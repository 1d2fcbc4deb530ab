"""The floor of Python gRPC: transferkit's server against bare grpcio servers on the same SavedModel.

    .venv/bin/python benchmarks/grpc_floor.py RUN_DIR INPUT [--requests 300]

Exports the run, then times one Predict at a time (concurrency 1) against:

- `transferkit`: `transferkit serve` (checks, metrics, batching off);
- `bare-sync`: a grpcio sync server whose Predict handler only converts the
  request, calls `serving_default` and fills the response;
- `bare-aio`: the same on `grpc.aio`, the graph in a worker thread;
- `bare-aio-inline`: `grpc.aio` with the graph run on the event loop (one
  request at a time: a floor, not a server);

interleaved with the in-process call so that machine noise hits all alike,
and prints each one's p50 over in-process. The servers run in their own
processes, the client in this one, as in `benchmarks/serving.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = "bench"
BARE = ("bare-sync", "bare-aio", "bare-aio-inline")


def serve_bare(mode: str, port: int, saved_model: str) -> None:
    import grpc
    from tensorflow_serving.apis import predict_pb2

    from transferkit.logs import import_tensorflow

    tf = import_tensorflow()
    function = tf.saved_model.load(saved_model).signatures["serving_default"]

    def predict(request):
        inputs = {k: tf.constant(list(v.string_val)) for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        for key, value in function(**inputs).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response

    codec = dict(request_deserializer=predict_pb2.PredictRequest.FromString,
                 response_serializer=predict_pb2.PredictResponse.SerializeToString)

    def handlers(function):
        return (grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService", {"Predict": grpc.unary_unary_rpc_method_handler(function, **codec)}),)

    if mode == "bare-sync":
        server = grpc.server(futures.ThreadPoolExecutor(8))
        server.add_generic_rpc_handlers(handlers(lambda request, context: predict(request)))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        print("ready", flush=True)
        server.wait_for_termination()
        return
    pool = futures.ThreadPoolExecutor(8)

    async def predict_async(request, context):
        if mode == "bare-aio-inline":
            return predict(request)
        return await asyncio.get_running_loop().run_in_executor(pool, predict, request)

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(handlers(predict_async))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(command: list[str]) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.strip() or not (line.startswith("ready") or line.startswith("serving")):
        process.kill()
        raise SystemExit(f"server did not start: {' '.join(command)}: {line!r}")
    return process


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("input", type=Path, nargs="?", help="an image or WAV clip to send")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "grpc_floor.json")
    parser.add_argument("--serve", nargs=3, metavar=("MODE", "PORT", "SAVED_MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_bare(args.serve[0], int(args.serve[1]), args.serve[2])
        return 0
    if args.run_dir is None or args.input is None:
        parser.error("RUN_DIR and INPUT are required")

    from transferkit.logs import import_tensorflow

    tf = import_tensorflow()
    from transferkit.serving.client import GrpcClient
    from transferkit.serving.export import export_run

    base = Path(tempfile.mkdtemp(prefix="transferkit-floor-"))
    export_run(args.run_dir, base, MODEL)
    saved_model = str(base / MODEL / "1")
    function = tf.saved_model.load(saved_model).signatures["serving_default"]
    (name,) = function.structured_input_signature[1]
    payload = args.input.read_bytes()
    one = tf.constant([payload])

    processes, clients = [], {}
    try:
        for mode in ("transferkit", *BARE):
            port = _free_port()
            command = ([sys.executable, "-m", "transferkit", "serve", "--model-base", str(base), "--port", str(port),
                        "--rest-port", str(_free_port())] if mode == "transferkit"
                       else [sys.executable, __file__, "--serve", mode, str(port), saved_model])
            processes.append(_start(command))
            clients[mode] = GrpcClient(f"127.0.0.1:{port}", timeout=60, retries=0)
        calls = {"in-process": lambda: function(**{name: one})}
        for mode, client in clients.items():
            calls[mode] = (lambda c: lambda: c.predict(MODEL, {name: [payload]}))(client)
        for call in calls.values():
            for _ in range(15):
                call()
        samples = {key: [] for key in calls}
        for _ in range(args.requests):
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                samples[key].append(time.perf_counter() - start)
    finally:
        for process in processes:
            process.terminate()
    p50 = {key: float(np.percentile(values, 50)) * 1000 for key, values in samples.items()}
    print(f"{args.input.name}, {len(payload)} bytes, {args.requests} requests each, one at a time")
    print(f"{'path':<18}{'p50 ms':>9}{'over in-process':>17}")
    for key, value in p50.items():
        print(f"{key:<18}{value:>9.2f}{value - p50['in-process']:>17.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"p50_ms": p50, "over_in_process_ms": {k: v - p50["in-process"] for k, v in p50.items()},
                                     "requests": args.requests, "payload_bytes": len(payload)}, indent=2) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
