"""Edge export on real data: file size, batch-1 latency on 2 threads, validation accuracy per format.

    python benchmarks/edge_export.py                       # trains hymenoptera (Lite0) first if needed
    python benchmarks/edge_export.py --config benchmarks/configs/hymenoptera.yaml --set backbone.preset=efficientnet-lite2
    python benchmarks/edge_export.py --config benchmarks/configs/bbc.yaml --run runs/bbc_edge/run \
        --formats tflite:float16,tflite:dynamic,tflite:int8,onnx:none --json benchmarks/results/edge_export_bbc.json

For one run it writes the TF Serving SavedModel (`transferkit export`) and the
LiteRT float16 and int8 files and the ONNX file (`transferkit export --format
...`), each scored on the run's validation split by the export itself, then
times one image at a time (after warm-up, the median of `--repeats` calls):
the SavedModel's `serving_pixels` (text: `serving_token_ids`) signature, the
LiteRT interpreter and onnxruntime, each on 2 threads, on the same model
inputs. Prints a table
and writes JSON (default benchmarks/results/edge_export.json). Run it with
nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


def median_ms(call, pixels, repeats: int) -> float:
    for _ in range(5):
        call(pixels)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call(pixels)
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 2)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "configs" / "hymenoptera.yaml")
    parser.add_argument("--set", action="append", default=[], help="config overrides, as for transferkit train")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "edge_bench" / "run",
                        help="the run to export (trained from --config when it has no model.keras)")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--formats", default="tflite:float16,tflite:int8,onnx:none",
                        help="FORMAT:QUANTIZE pairs to export and time (text: tflite:dynamic is the usual)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "edge_export.json")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    from transferkit.config import load_config
    from transferkit.runner import load_run, train
    from transferkit.serving.edge_export import EdgeExportError, EdgeExportOptions, export_edge, runner_for
    from transferkit.serving.export import export_run

    if not (args.run / "model.keras").exists():
        train(load_config(args.config, args.set), args.run, resume=False)
    config, task, model, info = load_run(args.run)
    out = args.run.parent / "exports"
    saved_model = export_run(args.run, out / "serving", "bench", force=True, version=1)
    first = next(iter(task.datasets().val))[0]
    # One example: the pixels, or a text's token ids and padding mask.
    pixels = ({k: np.asarray(v[:1]) for k, v in first.items()} if isinstance(first, dict)
              else np.asarray(first[:1], np.float32))
    signatures = tf.saved_model.load(str(saved_model)).signatures
    # The SavedModel's signature that takes the same model inputs (a detector's is `raw_outputs`: no NMS).
    names = set(pixels) if isinstance(pixels, dict) else {"pixels"}
    serve_name = next(key for key, fn in signatures.items() if set(fn.structured_input_signature[1]) == names)
    serve = signatures[serve_name]

    rows, failures = [], []
    keras_accuracy = None
    for fmt, quantize in (pair.split(":") for pair in args.formats.split(",")):
        path = out / f"model_{quantize}.{fmt}"
        try:
            report = export_edge(args.run, path, EdgeExportOptions(format=fmt, quantize=quantize), force=True)
        except EdgeExportError as error:  # a format this model cannot take: a row that says why
            print(f"{fmt} {quantize}: {error}")
            failures.append({"format": f"{fmt} {quantize}", "error": str(error)})
            continue
        metric = report["metric"]
        keras_accuracy = report["keras"][metric]
        runner = runner_for(path)
        rows.append({"format": f"{fmt} {quantize}", "mb": round(report["bytes"] / 2**20, 2),
                     "ms_per_image": median_ms(runner, pixels, args.repeats), "metric": metric,
                     "accuracy": report["exported"][metric], "drop_points": report["drop_points"],
                     "max_abs_diff": report["max_abs_diff"], "runtime": report["runtime"]})
    feed = ({k: tf.constant(v) for k, v in pixels.items()} if isinstance(pixels, dict)
            else {"pixels": tf.constant(pixels)})
    rows.insert(0, {"format": f"SavedModel {serve_name}", "mb": round(folder_bytes(saved_model) / 2**20, 2),
                    "ms_per_image": median_ms(lambda _: serve(**feed), pixels, args.repeats),
                    "accuracy": keras_accuracy, "drop_points": 0.0, "max_abs_diff": 0.0,
                    "runtime": "tensorflow"})

    size = (f"{pixels['token_ids'].shape[1]} tokens" if isinstance(pixels, dict)
            else f"{pixels.shape[1]}x{pixels.shape[2]} px")
    backbone = Path(str(info.get("backbone", config.backbone.preset))).name
    print(f"\n{config.task} on {backbone}, {info.get('num_val', '?')} validation examples, "
          f"{size}, batch 1, 2 threads")
    metric = rows[-1]["metric"] if len(rows) > 1 else "accuracy"
    print(f"{'format':<26} {'MB':>7} {'ms/example':>10} {metric:>9} {'drop':>6} {'max diff':>9}")
    for row in rows:
        print(f"{row['format']:<26} {row['mb']:>7.2f} {row['ms_per_image']:>10.2f} {row['accuracy']:>9.4f} "
              f"{row['drop_points']:>6.2f} {row['max_abs_diff']:>9.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for failure in failures:
        print(f"{failure['format']:<26} failed: {failure['error'][:150]}")
    args.json.write_text(json.dumps({"task": config.task, "backbone": backbone, "rows": rows,
                                     "failures": failures,
                                     "validation_examples": info.get("num_val"), "threads": 2,
                                     "python": sys.version.split()[0], "tensorflow": tf.__version__}, indent=2))
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
