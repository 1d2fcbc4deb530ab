"""A finished run is a preset: its fine-tuned backbone, saved as a KerasHub preset folder inside the run.

At the end of `train`, `write_run_preset` saves `RUN/backbone/`: the backbone's config and weights
(KerasHub's `save_to_preset`), a `transferkit.json` with the input normalisation the weights expect, the
run's task and preprocessor, and for text the vocabulary (`vocab.txt`). `backbone.preset: RUN` (or the
folder itself, or a name it was imported under with `transferkit presets import RUN --name NAME`) then
starts a new run from it. `check_preprocessor` says what a new task must share with the run's inputs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

FOLDER = "backbone"
FACTS_FILE = "transferkit.json"
RUN_MARKER = ".transferkit-run.json"


class RunPresetError(ValueError):
    """A run folder that cannot be used as a preset, with what to do about it."""


def write_run_preset(run_dir: Path, backbone, task_name: str, preprocessor: Mapping[str, Any] | None,
                     preprocessor_class: str | None, unchanged_in_stage: str | None = None) -> Path | None:
    """Writes `run_dir/backbone/` (through a temporary folder, then a rename); None when the backbone is not a
    KerasHub backbone (KerasCV's cannot be saved as a preset). `unchanged_in_stage`: the frozen stage of the
    best epoch, when the saved weights are the starting backbone's."""
    model = backbone.model
    target = Path(run_dir) / FOLDER
    if not hasattr(model, "save_to_preset") or (target.exists() and run_facts(target) is None):
        return None  # not a KerasHub backbone, or a `backbone` that transferkit did not write: left alone
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=run_dir))
    try:
        model.save_to_preset(str(staging))
        facts = {
            "from_run": {"run": str(Path(run_dir).resolve()), "task": task_name, "backbone": backbone.source,
                         "preprocessor_class": preprocessor_class, "preprocessor": dict(preprocessor or {}),
                         "unchanged_in_stage": unchanged_in_stage},
        }
        normalization = _normalization_of(backbone)
        if normalization is not None:  # pixels in; a text backbone takes token ids
            facts["normalization"] = {"scale": normalization.scale, "offset": normalization.offset}
        if preprocessor and preprocessor.get("image_size"):
            facts["image_size"] = list(preprocessor["image_size"])
        tokens = (preprocessor or {}).get("vocabulary")
        if tokens:
            (staging / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
            facts["from_run"]["preprocessor"] = {k: v for k, v in preprocessor.items() if k != "vocabulary"}
        (staging / FACTS_FILE).write_text(json.dumps(facts, indent=2))
        if target.exists():
            shutil.rmtree(target)  # the run's own earlier backbone/ (it has our transferkit.json)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _normalization_of(backbone):
    from transferkit.errors import PresetError

    try:
        return backbone.normalization
    except PresetError:
        return None


def is_run_folder(path: Path) -> bool:
    return (path / RUN_MARKER).is_file() or ((path / "config.yaml").is_file() and (path / "checkpoints").is_dir())


def run_preset_folder(path: str | Path) -> Path:
    """The preset folder of the run at `path`; a RunPresetError saying why when there is none."""
    path = Path(path)
    folder = path / FOLDER
    if (folder / "config.json").is_file() and (folder / FACTS_FILE).is_file():
        return folder
    if not (path / "model.keras").is_file():
        raise RunPresetError(f"{path}: a transferkit run that has not finished (no model.keras); finish it "
                             f"(`transferkit train` resumes it) before starting another run from it")
    raise RunPresetError(f"{path}: a finished run without a saved backbone ({FOLDER}/): made before runs saved "
                         f"one, or on a backbone that cannot be saved as a preset (KerasCV); train it again to "
                         f"use it as a preset")


def run_facts(folder: str | Path) -> dict[str, Any] | None:
    """`from_run` of a preset folder that came from a run (task, preprocessor), else None."""
    from transferkit.models.families import preset_facts

    origin = preset_facts(folder).get("from_run")
    return origin if isinstance(origin, dict) else None


def check_preprocessor(folder: str | Path, preprocessor_class: type | None, build_preprocessor, task_name: str,
                       preset: str) -> None:
    """Raises RunPresetError unless `preprocessor` (the new run's) reads inputs as the run's weights expect:
    the same preprocessor class (checked before `build_preprocessor()` is called), and equal values of the fields it names in `matched_on_transfer`. Nothing
    to check for a preset that did not come from a run."""
    origin = run_facts(folder)
    if origin is None:
        return
    wanted = origin.get("preprocessor_class")
    have = preprocessor_class.__name__ if preprocessor_class is not None else None
    if wanted != have:
        raise RunPresetError(f"backbone.preset: {preset} is a {origin.get('task')} run whose backbone reads "
                             f"{wanted or 'unknown'} inputs; task {task_name} reads {have or 'no preprocessor'} "
                             f"inputs, so its weights would not mean anything there")
    preprocessor = build_preprocessor()  # only now: a text task's reads the preset's vocab.txt
    saved = origin.get("preprocessor") or {}
    differences = []
    for name in getattr(preprocessor, "matched_on_transfer", ()):
        theirs, ours = saved.get(name), getattr(preprocessor, name)
        if name == "vocabulary":  # kept as the preset's vocab.txt
            vocabulary = Path(folder) / "vocab.txt"
            theirs = vocabulary.read_text(encoding="utf-8").splitlines() if vocabulary.is_file() else None
            if theirs is not None and list(theirs) != list(ours):
                differences.append(f"vocabulary: the run's {len(theirs)} tokens differ from this config's "
                                   f"{len(ours)} (leave tokenizer.vocabulary unset to use the run's)")
            continue
        if theirs is not None and _plain(theirs) != _plain(ours):
            differences.append(f"{name}: the run used {theirs!r}, this config has {_plain(ours)!r}")
    if differences:
        raise RunPresetError(f"backbone.preset: {preset} was trained on other input settings; set them as the run "
                             f"did: " + "; ".join(differences))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
