"""Export a trained run as a SavedModel that TensorFlow Serving loads.

`export_run(run_dir, model_base, name)` writes `<base>/<name>/<version>/`:
the task's signatures, the labels as an asset, warmup requests from real
validation images in `assets.extra/`; it is written under a temporary name
(TF Serving ignores non-numeric folders), checked (reloaded, compared with
the Keras model, scanned for ops TF Serving cannot run), and only then
renamed into place. The serving configuration next to it is refreshed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from transferkit.errors import TransferkitError
from transferkit.fileio import remove_stale_temporaries, temporary_sibling
from transferkit.progress import progress_bar
from transferkit.serving import config_files
from transferkit.serving.saved_models import list_versions
from transferkit.serving.warmup import write_warmup_file

# fullmatch only: with match, "$" also accepts a trailing newline.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
FORBIDDEN_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")
PARITY_TOLERANCE = 1e-4


class ExportError(TransferkitError):
    """An export was refused or failed its checks; nothing was left in place."""


def _float32_model(config, task, model, info):
    """The model with float32 compute, rebuilt if it was trained in mixed precision."""
    import keras

    if model.dtype_policy.name == "float32":
        return model

    keras.mixed_precision.set_global_policy("float32")
    backbone = task.load_backbone(config.backbone, load_weights=False)
    rebuilt = task.build_model(backbone, info)
    rebuilt.set_weights(model.get_weights())  # the saved model's own weights, float32 compute
    return rebuilt


def forbidden_ops(saved_model_dir: Path) -> list[str]:
    """Op types in the SavedModel that TF Serving cannot run.

    Python callbacks and XLA-only ops, and any op outside core TensorFlow
    except the TF Text ops that TF Serving's bundled TF Text registers.
    """
    from transferkit.serving.saved_models import TF_SERVING_TEXT_OPS, graph_ops, non_core_ops

    ops = graph_ops(saved_model_dir)
    found = {op for op in ops if op in FORBIDDEN_OPS or op.startswith("Xla")}
    found.update(op for op in non_core_ops(ops) if op not in TF_SERVING_TEXT_OPS)
    return sorted(found)


def export_run(run_dir: str | os.PathLike, model_base: str | os.PathLike, name: str, version: int | None = None,
               force: bool = False, warmup_records: int = 32) -> Path:
    """Exports the run's model to `<model_base>/<name>/<version>/` and returns that path."""
    from transferkit.runner import load_run

    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"--name: expected letters, digits, '_', '-' or '.', received {name!r}")
    if version is not None and (not isinstance(version, int) or version < 1):
        raise ExportError(f"--version: expected a positive integer, received {version!r}")
    if not 0 <= warmup_records <= 1000:
        raise ExportError(f"warmup_records: TF Serving reads at most 1000, received {warmup_records}")
    run_dir = Path(run_dir)
    config, task, model, info = load_run(run_dir)
    import tensorflow as tf  # after the argument and run folder checks: those answer without it

    model = _float32_model(config, task, model, info)

    base = Path(model_base).resolve()
    if base.exists() and not base.is_dir():
        raise ExportError(f"--model-base {model_base}: is a file; expected a folder (created if missing)")
    if (base / name).exists() and not (base / name).is_dir():
        raise ExportError(f"{base / name}: is a file; expected the model's folder of versions")
    model_dir = base / name
    versions = list_versions(model_dir)  # complete or not: a new export never reuses a number
    version = version or (versions[-1] + 1 if versions else 1)
    final = model_dir / str(version)
    if final.exists() and force and not (final / "saved_model.pb").is_file():
        raise ExportError(f"{final}: exists and is not a SavedModel (no saved_model.pb); not replaced, even with "
                          f"--force")
    if final.exists() and not force:
        raise ExportError(f"{final}: version {version} of {name!r} already exists; pass --force to replace it "
                          f"or leave --version out to write version {versions[-1] + 1}")
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(model_dir)  # a killed export's half-written SavedModels
    tmp = temporary_sibling(final)
    bar = progress_bar(4, f"export {name}/{version}", unit="step")
    try:
        bar.set_postfix_str("tracing and saving")
        signatures = task.serving_signatures(model, info)
        if "serving_default" not in signatures:
            raise ExportError(f"task {config.task!r}: serving_signatures() has no 'serving_default'; "
                              f"received {sorted(signatures)}")
        module = tf.Module()
        module.model = model
        with tempfile.TemporaryDirectory() as scratch:
            # The task's artifacts (labels.txt, ...) and preprocessor.json travel as SavedModel assets.
            assets = []
            for file_name, text in task.saved_files(info).items():
                asset_file = Path(scratch) / file_name
                asset_file.write_text(text)
                assets.append(tf.saved_model.Asset(str(asset_file)))
            module.assets = assets
            concrete = {key: fn.get_concrete_function() for key, fn in signatures.items()}
            try:
                tf.saved_model.save(module, str(tmp), signatures=concrete)
            except (tf.errors.OutOfRangeError, tf.errors.ResourceExhaustedError, tf.errors.InternalError,
                    tf.errors.UnknownError) as error:  # disk full, file size limit: the writer's own words
                first = " ".join(getattr(error, "message", str(error)).split())[:300]
                raise ExportError(f"{final}: the SavedModel could not be written ({first}); nothing was "
                                  f"half-written, free some space and export again") from None
        bar.update(1)
        bar.set_postfix_str("warmup requests")
        examples = task.serving_examples(info, max(warmup_records, 8))
        try:
            batch_sizes = tuple(config_files.read_batching(base).warmup_sizes()) if warmup_records else ()
        except ValueError as error:
            raise ExportError(f"{error}; fix or delete it (export writes a fresh one)") from None
        write_warmup_file(tmp, name, examples[:warmup_records] if warmup_records else [],
                          batch_sizes[:1000 - warmup_records])
        bar.update(1)
        bar.set_postfix_str("reload and parity check")
        report = verify_export(tmp, model, task, info, examples[:8], expected=set(signatures))
        bar.update(1)
        # Every file's sha256: `transferkit serve` checks them before TensorFlow reads the version.
        (tmp / "assets.extra" / EXPORT_RECORD).write_text(json.dumps(
            {"run_dir": str(run_dir.resolve()), "task": config.task, "version": version, **report,
             "labels": list(info.get("class_names", [])), "preprocessor": info.get("preprocessor"),
             "files": file_digests(tmp)}, indent=2))
        _move_into_place(tmp, final, force)
        bar.update(1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    config_files.write_serving_config(base, name)
    return final


def verify_export(saved_dir: Path, model, task, info: dict[str, Any], examples: list[dict[str, Any]],
                  expected: set[str] = frozenset({"serving_default"})) -> dict[str, Any]:
    """Reloads the SavedModel and has the task compare it with the Keras model; raises on mismatch."""
    import tensorflow as tf

    bad_ops = forbidden_ops(saved_dir)
    if bad_ops:
        raise ExportError(f"{saved_dir}: the graph contains ops TF Serving cannot run: {', '.join(bad_ops)} "
                          f"(allowed beyond core TensorFlow: the TF Text ops TF Serving bundles); export aborted")
    loaded = tf.saved_model.load(str(saved_dir))
    missing = set(expected) - set(loaded.signatures)
    if missing:
        raise ExportError(f"{saved_dir}: signatures missing after reload: {sorted(missing)}")
    try:
        checks = task.check_serving(model, loaded.signatures, examples, info)
    except (TypeError, ValueError) as error:
        raise ExportError(f"{saved_dir}: {error}; export aborted") from None
    for check in checks:
        tolerance = PARITY_TOLERANCE if check.tolerance is None else check.tolerance
        if not check.max_abs_diff < tolerance:  # also catches NaN
            raise ExportError(f"{saved_dir}: {check.name} differs from the Keras model by {check.max_abs_diff:.2e} "
                              f"(tolerance {tolerance:g}); export aborted")
    from transferkit.serving.saved_models import graph_ops, non_core_ops

    return {"max_abs_diff": {c.name: c.max_abs_diff for c in checks}, "checked_examples": len(examples),
            "custom_ops": non_core_ops(graph_ops(saved_dir))}


EXPORT_RECORD = "transferkit_export.json"


def file_digests(saved_dir: Path) -> dict[str, str]:
    """{path inside the SavedModel: sha256} of the model's files: the graph, variables and assets. Not
    `assets.extra/`, which operators edit (TF Serving's warmup requests) and which holds this record."""
    from transferkit.fileio import file_sha256

    return {str(p.relative_to(saved_dir)): file_sha256(p) for p in sorted(saved_dir.rglob("*"))
            if p.is_file() and p.relative_to(saved_dir).parts[0] != "assets.extra"}


def check_file_digests(saved_dir: Path) -> None:
    """Raises ValueError naming the first file of a transferkit export that differs from its recorded sha256
    (damaged, truncated or replaced since export). SavedModels without the record are not checked."""
    record = Path(saved_dir) / "assets.extra" / EXPORT_RECORD
    try:
        files = json.loads(record.read_text()).get("files") if record.stat().st_size < (16 << 20) else None
    except (OSError, ValueError, AttributeError):
        return  # written elsewhere, or before the record held digests: TensorFlow's own checks apply
    if not isinstance(files, dict):
        return
    for name, digest in files.items():
        from transferkit.fileio import file_sha256

        path = Path(saved_dir) / str(name)
        if not path.is_file() or file_sha256(path) != digest:
            raise ValueError(f"{path}: does not match the sha256 recorded at export (damaged, truncated or "
                             f"replaced); export the run again")


def _move_into_place(tmp: Path, final: Path, force: bool) -> None:
    if final.exists():
        if not force:
            raise ExportError(f"{final}: appeared while exporting; not replaced (use --force)")
        if not (final / "saved_model.pb").is_file():
            raise ExportError(f"{final}: is not a SavedModel (no saved_model.pb); not replaced, even with --force")
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
