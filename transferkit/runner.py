"""Runs a config: data, backbone, head, the stages, evaluation, the run folder.

A run directory holds:

    config.yaml        the resolved config
    history.json       one row per epoch: stage, losses, metrics, learning rate, seconds
    freeze/<stage>.txt trainable / frozen parameters per block, per stage
    checkpoints/       resumable state (see transferkit.models.checkpoints)
    best.weights.h5    the best weights on the task's monitor
    model.keras        the final model (the best weights), the task's inputs in
    info.json          what travels with the model (the task's data info, backbone, example inputs)
    metrics.json, problems.json, report/, and the task's artifacts (labels.txt, ...)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from transferkit.callbacks import EpochRecorder, RunClock
from transferkit.config import RunConfig, config_differences, load_saved_config, same_config, write_config
from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_path, atomic_write_text, ensure_room, weights_bytes
from transferkit.ownership import check_output_folder, remove_written, write_marker
from transferkit.multi_worker import create_strategy, output_dir, remove_output_dir, weights_digest
from transferkit.registry import get_task
from transferkit.task import check_class_names
from transferkit.stages import StageTrainer, log
from transferkit.stages import use_feature_cache  # noqa: F401  (importable from here, as before the split)
from transferkit.streaming import pipeline_options


def _setup_devices(config: RunConfig):
    """Mixed precision, and (strategy, worker role): several GPUs mirrored, several machines with TF_CONFIG."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if config.training.mixed_precision and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    wanted = config.training.distribute
    if wanted == "multi_worker" or (wanted == "auto" and os.environ.get("TF_CONFIG")):
        return create_strategy()
    if wanted == "mirrored" or (wanted == "auto" and len(gpus) > 1):
        # Every GPU; without GPUs, every logical CPU device (how the multi-GPU path is tested on CPU).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices]), None
    return tf.distribute.get_strategy(), None


def check_freeze_plans(config: RunConfig) -> None:
    """Checks every stage's freeze plan against the backbone's blocks (built without weights); raises on a bad one."""
    from transferkit.models.freezing import selected_layers

    backbone = get_task(config.task).load_backbone(config.backbone, load_weights=False)
    for stage in config.stages:
        try:
            selected_layers(backbone, stage.freeze)
        except TransferkitError as error:
            raise type(error)(f"stages[{stage.name}].{error}") from None


def prepare_run(config: RunConfig, strategy=None):
    """(task with its data info, the task's datasets, the backbone, the whole model), seeded as a run is."""
    import keras
    import tensorflow as tf


    keras.utils.set_random_seed(config.training.seed)
    task = get_task(config.task)(config)
    check_start_preset(task, config)  # a run of another kind as the preset: refused before the data is read
    data = task.datasets().with_options(pipeline_options(config.training.data_autotune))
    check_class_names(data.info.get("class_names"), f"{config.task} data ({_data_source(config)})")
    task.info = dict(data.info)
    with (strategy or tf.distribute.get_strategy()).scope():
        backbone = task.load_backbone(config.backbone)
        # Reseed: the head's initial weights must not depend on whether loading
        # the backbone drew random numbers (a first-time preset import does).
        keras.utils.set_random_seed(config.training.seed)
        full_model = task.build_model(backbone, task.info)
    return task, data, backbone, full_model


def check_start_preset(task, config: RunConfig) -> None:
    """When `backbone.preset` is a finished run (or was imported from one), the new task must read inputs as
    that run's backbone was trained to (`run_presets.check_preprocessor`); a ConfigError says what differs."""
    from transferkit.errors import ConfigError
    from transferkit.models import presets, run_presets

    preset = config.backbone.preset
    if not preset or config.backbone.config is not None:
        return
    folder = Path(preset).expanduser()
    if not folder.is_dir() and not presets.cached_preset_path(preset).is_dir():
        return  # a KerasHub name or an importer: not a run
    try:
        resolved = presets.resolve_preset(preset)
        if run_presets.run_facts(resolved) is not None:
            run_presets.check_preprocessor(resolved, type(task).preprocessor_class, task.build_preprocessor,
                                           config.task, preset)
    except run_presets.RunPresetError as error:
        raise ConfigError(str(error)) from None


def _data_source(config: RunConfig) -> str:
    section = get_task(config.task).data_section_of(config)
    return str(getattr(section, "train", None) or "data.train")


def train(config: RunConfig, run_dir: str | os.PathLike, resume: bool = True,
          extra_callbacks: Sequence[Any] = (), time_limit: float | None = None) -> Path:
    """Runs every stage of `config` into `run_dir` and returns it.

    An interrupted run in `run_dir` (same config) resumes at its stage and
    epoch, with its freeze plan and optimizer state; `resume=False` starts over.
    `extra_callbacks` are Keras callbacks added to every stage; one with a
    `bind_run(full_model, task, data)` method is given the run's whole model,
    task and TaskData first (a stage on cached features fits only part of the
    model; `task.evaluate(full_model, data, ...)` scores it mid-run).
    `time_limit` (seconds of wall time, resumes included) ends training after
    the batch that crosses it; the run is then finished with the best weights
    so far and `metrics.json` says `"time_limit_reached": true`.
    """
    from transferkit.models.checkpoints import CheckpointStore

    if time_limit is not None and not time_limit > 0:
        raise TransferkitError(f"time_limit: expected a number of seconds > 0, received {time_limit!r}")
    clock = RunClock()
    run_dir = check_output_folder(run_dir)  # before anything is read or written: a user's folder is refused
    latest = _resumable_checkpoint(config, run_dir, resume)
    strategy, role = _setup_devices(config)
    if role is not None and time_limit is not None:
        # Each worker's clock would stop it at a different batch, and the others would wait for it forever.
        raise TransferkitError("time_limit: not available with several workers (training.distribute: multi_worker)")
    task, data, backbone, full_model = prepare_run(config, strategy)
    section = task.data_section()
    # The test split is read now: a missing or unusable data.test stops the run before training, not after.
    test_data = split_data(task, task.info, section.test) if section is not None and section.test else None
    if latest is not None:
        _check_same_data_facts(run_dir, task.info)
    out = _prepare_output_folder(config, run_dir, role, latest is None, task, backbone, data)
    state, clock = _training_state(config, run_dir, out, latest, full_model, clock)
    recorder = EpochRecorder(out, CheckpointStore(out), state, task.monitor(), full_model, clock)
    for callback in extra_callbacks:
        if hasattr(callback, "bind_run"):
            callback.bind_run(full_model, task, data)
    stages = StageTrainer(config, task, data, backbone, full_model, strategy=strategy, role=role, out=out,
                          state=state, resumed_from=latest[0] if latest is not None else None, recorder=recorder,
                          extra_callbacks=extra_callbacks, time_limit=time_limit, clock=clock)
    stages.train_all()
    _record_dropped_inputs(config, data, stages.dropped, out)
    stages.release_feature_caches()
    _save_final_model_and_metrics(out, task, data, full_model, state, clock, test_data)
    _write_run_preset(out, task, backbone, state)
    _mark_complete(recorder.store, full_model, state, clock)
    if role is not None:
        _end_worker(role, out, full_model)
    return run_dir


def _resumable_checkpoint(config: RunConfig, run_dir: Path, resume: bool) -> tuple[Path, dict[str, Any]] | None:
    """The latest checkpoint (folder, state) of an interrupted run of `config` in `run_dir`; None: start afresh.

    Refuses a folder whose run had another config, and a finished run.
    """
    from transferkit.models.checkpoints import CheckpointStore

    store = CheckpointStore(run_dir)
    latest = store.latest() if resume and run_dir.is_dir() else None
    if latest is not None:
        saved_config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
        if saved_config and not same_config(saved_config, config):
            kind = "a finished" if latest[1].get("complete") else "an interrupted"
            raise TransferkitError(
                f"{run_dir}: holds {kind} run with a different config ({'; '.join(config_differences(saved_config, config))}); "
                f"pass --no-resume to start over or choose another --output"
            )
        if latest[1].get("complete"):
            raise TransferkitError(
                f"{run_dir}: holds a finished run; pass --no-resume to train it again or choose another --output"
            )
    return latest


def _prepare_output_folder(config: RunConfig, run_dir: Path, role, fresh: bool, task, backbone, data) -> Path:
    """The folder this process writes, with config.yaml, info.json and the task's artifacts written into it.

    Called only once the config, the data and the backbone have been checked, so
    a bad --set leaves old outputs alone; a fresh start then removes them.
    Workers other than the chief write the same files into a temporary folder of their own.
    """
    out = output_dir(role, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        remove_written(out, RUN_OUTPUTS)
    # The marker first: a run that dies after this point leaves a folder that is known to be ours.
    write_marker(out, [*RUN_OUTPUTS, "config.yaml", *task.saved_files(task.info)])
    write_config(config, out)
    _write_info(out, config, task, backbone, data)
    return out


def _training_state(config: RunConfig, run_dir: Path, out: Path, latest, full_model,
                    clock: RunClock) -> tuple[dict[str, Any], RunClock]:
    """(state, clock) of the run: a fresh state, or the checkpoint's with its weights loaded into `full_model`
    and the clock continuing from the time earlier sessions spent."""
    if latest is None:
        return {"global_epoch": 0, "stage_index": 0, "stage_epoch": 0, "history": [], "best": None}, clock
    folder, state = latest
    full_model.load_weights(folder / "model.weights.h5")
    if out != run_dir and (run_dir / "best.weights.h5").exists():
        # Read before the first step, which the chief cannot pass alone: it has not replaced the file.
        shutil.copyfile(run_dir / "best.weights.h5", out / "best.weights.h5")
    clock = RunClock(before=float(state.get("elapsed", 0.0)) + clock.elapsed())
    log(config, f"resuming {run_dir}: stage {state['stage_index'] + 1}, "
                f"{state['stage_epoch']} epoch(s) done in it")
    return state, clock


def _record_dropped_inputs(config: RunConfig, data, dropped, out: Path) -> None:
    """Lists in problems.json the training inputs tf.data skipped (undecodable files), when an epoch came up short."""
    if dropped.short and data.find_dropped is not None:
        found = data.find_dropped()
        log(config, f"{len(found)} training input(s) did not decode and were left out of every epoch "
                    f"(listed in problems.json)")
        data.problems.extend(found)
        atomic_write_text(out / "problems.json", json.dumps(data.problems, indent=2))


def _save_final_model_and_metrics(out: Path, task, data, full_model, state: dict[str, Any], clock: RunClock,
                                  test_data=None) -> None:
    """model.keras with the best weights, then its evaluation on the validation data in metrics.json and report/."""
    if (out / "best.weights.h5").exists():
        load_model_weights(full_model, out / "best.weights.h5")
    if data.val is not None:
        task.calibrate(full_model, data)
    save_model(full_model, out / "model.keras")
    metrics = task.evaluate(full_model, data, data.info, out / "report") if data.val is not None else {}
    facts = {"best_epoch": state.get("best_epoch"), "time_limit_reached": bool(state.get("time_limit_reached")),
             "elapsed_seconds": round(clock.elapsed(), 3), "score": task.score()[0]}
    baseline = baseline_facts(task, data.info)
    if baseline is not None:
        facts["baseline"] = baseline
    section = task.data_section()
    if section is not None and section.test:
        facts["test"] = evaluate_split(task, full_model, data.info, section.test, out / "test" / "report",
                                       seen=data.input_ids, prepared=test_data)
    write_metrics(out, metrics, data.problems, facts)


def _write_run_preset(out: Path, task, backbone, state: dict[str, Any]) -> None:
    """`out/backbone/`: the fine-tuned backbone as a preset another run can start from (`backbone.preset: RUN`)."""
    from transferkit.models.run_presets import write_run_preset

    preprocessor = task.preprocessor()
    frozen_stage = _frozen_stage_of_best_epoch(task.config, out, state.get("best_epoch"))
    written = write_run_preset(out, backbone, task.name, preprocessor.get_config() if preprocessor else None,
                               type(preprocessor).__name__ if preprocessor else None,
                               unchanged_in_stage=frozen_stage)
    if written is not None and frozen_stage is not None:
        log(task.config, f"backbone/ holds the starting backbone's weights: the best epoch was in stage "
                         f"{frozen_stage!r}, which froze the whole backbone")
    if written is None:
        log(task.config, "no backbone/ preset written (the backbone is not a KerasHub one, or a backbone/ folder "
                         "that transferkit did not write is in the way): this run cannot start another")


def _frozen_stage_of_best_epoch(config: RunConfig, out: Path, best_epoch) -> str | None:
    """The name of the stage the best epoch belongs to when that stage froze the whole backbone, else None."""
    try:
        history = json.loads((out / "history.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(history, list):
        return None
    row = next((r for r in history if isinstance(r, dict) and r.get("global_epoch") == best_epoch), None)
    index = row.get("stage_index") if row else None
    if not isinstance(index, int) or not 0 <= index < len(config.stages):
        return None
    stage = config.stages[index]
    return stage.name if stage.freeze.freezes_whole_backbone else None


def baseline_facts(task, info: dict[str, Any]) -> dict[str, Any] | None:
    """The task's baseline on the run's own split when it is cheap, else how to measure it; None: it has none."""
    from transferkit.task import Task

    if type(task).baseline is Task.baseline:
        return None
    if not task.baseline_is_cheap(info):
        return {"skipped": f"{info.get('num_train')} training examples, too many to fit at the end of every run; "
                           f"`transferkit compare CONFIG --recipes transfer,baseline` measures it"}
    log(task.config, "fitting the baseline for comparison")
    try:
        return task.baseline()
    except Exception as error:  # a baseline is a comparison, never a reason to lose the run
        return {"error": f"{type(error).__name__}: {error}"}


def split_data(task, info: dict[str, Any], split: str):
    """(task for `split`, its TaskData): another split of data read as the run's validation data is."""
    config = task.config_for_evaluation(info, split)
    other = get_task(config.task)(config, info)
    return other, other.datasets().with_options(pipeline_options(config.training.data_autotune))


def evaluate_split(task, model, info: dict[str, Any], split: str, report_dir: Path,
                   seen: dict[str, frozenset[str]] | None = None, prepared=None) -> dict[str, Any]:
    """The metrics of `model` on another split of data (`data.test`), its report under `report_dir`.

    `seen`: the run's training and validation inputs (`TaskData.input_ids`); the result counts the test
    inputs that are among them (`also_in_train`, `also_in_val`), which a test score should not include.
    `prepared`: the split's (task, TaskData) when already read (`train` reads data.test before training,
    so a bad test split stops the run before it starts).
    """
    log(task.config, f"evaluating on the test split: {split}")
    other, data = prepared if prepared is not None else split_data(task, info, split)
    metrics = other.evaluate(model, data, info, report_dir)
    result = {**metrics, "data": str(split), "problems": data.problems}
    tested = data.input_ids.get("val")
    if seen and tested:
        result["also_in_train"] = len(tested & seen.get("train", frozenset()))
        result["also_in_val"] = len(tested & seen.get("val", frozenset()))
    return result


def _mark_complete(store, full_model, state: dict[str, Any], clock: RunClock) -> None:
    """A last checkpoint that says the run is finished (a later `train` refuses to resume it)."""
    state["complete"] = True
    state["elapsed"] = clock.elapsed()
    store.save(full_model, None, state)


def _end_worker(role, out: Path, full_model) -> None:
    # Always printed: the workers' digests must agree, and this is how an operator checks it.
    print(f"{role.describe()}: finished, weights sha256 {weights_digest(full_model)}", flush=True)
    remove_output_dir(role, out)


# What every run writes; a fresh start removes them (and the task's artifacts its marker lists) so nothing
# stale is reused. Nothing else in the folder is touched.
RUN_OUTPUTS = ("checkpoints", "feature_cache", "freeze", "logs", "report", "test", "backbone", "best.weights.h5",
               "model.keras",
               "metrics.json", "history.json", "problems.json", "info.json", "labels.txt", "artifacts.json")


def _check_same_data_facts(run_dir: Path, info: dict[str, Any]) -> None:
    """Refuses to resume when the data now gives the model another shape (a class folder added, ...).

    The checkpoints hold weights for the recorded classes and input size; counts of examples may change.
    """
    path = run_dir / "info.json"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # nothing recorded to compare with: the weights' own load decides
    ignored = {"examples", "task", "backbone", "architecture"}
    changed = [key for key in recorded if key in info and key not in ignored and not key.startswith("num_")
               and not key.endswith("_counts") and recorded[key] != info[key]]
    if changed:
        key = changed[0]
        raise TransferkitError(
            f"{run_dir}: the data changed since the checkpoint ({key} was {_short(recorded[key])}, now "
            f"{_short(info[key])}); restore the data, pass --no-resume to start over, or choose another --output")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _write_info(run_dir: Path, config: RunConfig, task, backbone, data) -> None:
    info = dict(task.info)
    info.update({"task": config.task, "backbone": backbone.source, "architecture": backbone.architecture})
    if task.summary_figures:
        info["summary_figures"] = list(task.summary_figures)
    from transferkit.models.families import preset_facts

    # The module that registers a family backbone's Keras classes, so the run reloads where the preset is absent.
    module = preset_facts(backbone.source).get("importer") if Path(backbone.source).is_dir() else None
    if module:
        info["backbone_module"] = module
    # Real validation inputs, for export checks and TF Serving warmup records.
    info["examples"] = [str(Path(p).resolve()) for p in data.examples[:64]]
    atomic_write_text(run_dir / "info.json", json.dumps(info, indent=2))
    artifacts = task.saved_files(info)
    for name, text in artifacts.items():
        atomic_write_text(run_dir / name, text)
    atomic_write_text(run_dir / "artifacts.json", json.dumps(sorted(artifacts)))
    if data.problems:
        atomic_write_text(run_dir / "problems.json", json.dumps(data.problems, indent=2))


def load_model_weights(model, path: Path) -> None:
    """Loads a `.weights.h5` into `model`'s layers.

    The file also holds the optimizer of the stage that wrote it; the model
    in hand may have another stage's optimizer (or none), and its variables
    do not matter here, so Keras' warning about them is silenced.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Skipping variable loading for optimizer")
        model.load_weights(path)


def save_model(model, path: Path) -> Path:
    """Saves a Keras model through a temporary file and a rename."""
    ensure_room(path, weights_bytes(model))
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)


def load_run(run_dir: str | os.PathLike):
    """The (config, task, model, info) of a finished run directory."""
    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        raise TransferkitError(f"{run_dir}: no model.keras; is this a finished `transferkit train` run directory?")
    config = load_saved_config(run_dir / "config.yaml")
    info = _read_info(run_dir)
    # Keras (and TensorFlow) only now: a folder that is not a run, or a damaged config or info, answers without.
    import keras
    import keras_hub  # noqa: F401  (registers the backbone classes for deserialisation)

    import transferkit.models.backbones  # noqa: F401  (registers Normalization)
    import transferkit.models.schedules  # noqa: F401  (registers WarmupSchedule, in saved optimizers)

    from transferkit.models.families import import_family_module

    import_family_module(info.get("backbone_module"))  # a family backbone's own layers (YAMNet's, YOLOv4-tiny's)
    task = get_task(config.task)(config, info)
    task.register_keras_objects()
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except ValueError as error:
        # safe_mode refuses Lambda layers and other arbitrary code: a model from elsewhere is a program.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TransferkitError(f"{model_path}: cannot be loaded: {first}") from None
    return config, task, model, info


# What training recorded in metrics.json that an evaluation cannot know, kept when the run is re-evaluated.
TRAINING_FACTS = ("best_epoch", "time_limit_reached", "elapsed_seconds", "score", "test")


def evaluation_dir(run_dir: str | os.PathLike, data: str | None) -> Path:
    """Where an evaluation writes: the run folder itself for its own data, else evaluations/<data>-<digest>/."""
    import hashlib

    run_dir = Path(run_dir)
    if data is None:
        return run_dir
    resolved = str(Path(data).resolve())
    name = Path(resolved).name or "data"
    return run_dir / "evaluations" / f"{name}-{hashlib.blake2b(resolved.encode(), digest_size=4).hexdigest()}"


def evaluate_run(run_dir: str | os.PathLike, data: str | None = None) -> dict[str, Any]:
    """Re-evaluates a run on its validation data, or on `data`.

    On its own data it rewrites metrics.json and report/, keeping what training recorded
    (`TRAINING_FACTS`); other data gets its own folder (`evaluation_dir`), so the run's
    record is never replaced by a score on something else.
    """
    config, task, model, info = load_run(run_dir)
    config = task.config_for_evaluation(info, data)
    task = get_task(config.task)(config, info)
    task_data = task.datasets().with_options(pipeline_options(config.training.data_autotune))
    task.info = {**info, **{k: v for k, v in task_data.info.items() if k not in info}}
    out = evaluation_dir(run_dir, data)
    metrics = task.evaluate(model, task_data, task.info, out / "report")
    facts: dict[str, Any] = {}
    if data is None:
        try:
            recorded = json.loads((Path(run_dir) / "metrics.json").read_text())
        except (OSError, ValueError):
            recorded = {}
        facts = {k: recorded[k] for k in TRAINING_FACTS if isinstance(recorded, dict) and k in recorded}
    else:
        facts = {"data": str(Path(data).resolve())}
    return write_metrics(out, metrics, task_data.problems, facts)


def write_metrics(folder: Path, metrics: dict[str, Any], problems: list, facts: dict[str, Any]) -> dict[str, Any]:
    """The one writer of metrics.json: the task's evaluation, the inputs' problems, and the run's facts
    (`TRAINING_FACTS` from training, or the data an evaluation read)."""
    metrics = {**metrics, "problems": problems, **facts}
    atomic_write_text(Path(folder) / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _read_info(run_dir: Path) -> dict[str, Any]:
    """A run's info.json, or a one-line error naming it when it is missing or damaged."""
    from transferkit.fileio import load_json

    path = run_dir / "info.json"
    try:
        info = load_json(path.read_bytes(), str(path), TransferkitError)
    except OSError as error:
        raise TransferkitError(f"{path}: cannot read the run's info: {error.strerror}") from None
    if not isinstance(info, dict):
        raise TransferkitError(f"{path}: expected a JSON object; the run folder is damaged")
    return info


def predict_files(run_dir: str | os.PathLike, paths: Sequence[str], save_dir: str | os.PathLike | None = None,
                  **options: Any):
    """Yields (path, prediction, text) for each input file, with the run's own task; `options` go to the task."""
    _, task, model, info = load_run(run_dir)
    for path in paths:
        if not os.path.isfile(path):
            raise TransferkitError(f"{path}: input file not found (an image not found, or another input)")
    save = Path(save_dir) if save_dir else None
    for path, prediction in task.predict(model, list(paths), info, save_dir=save, **options):
        yield path, prediction, task.describe_prediction(prediction)


def predict_texts(run_dir: str | os.PathLike, texts: Sequence[str], top_k: int = 3):
    """Yields (text, description) for each text, with the run's own task (a text task)."""
    _, task, model, info = load_run(run_dir)
    if not task.takes_texts:
        raise TransferkitError(f"{run_dir}: task {task.name!r} does not take texts; give input files instead")
    for text, prediction in zip(texts, task.predict_texts(model, list(texts), info, top_k=top_k)):
        yield text, task.describe_prediction(prediction)
