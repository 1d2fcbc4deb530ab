"""Where transferkit keeps files of its own (imported presets, caches)."""

import os
from pathlib import Path


def home() -> Path:
    """`TRANSFERKIT_HOME`, else `$XDG_CACHE_HOME/transferkit`, else ~/.cache/transferkit."""
    explicit = os.environ.get("TRANSFERKIT_HOME")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "transferkit"


def presets_dir() -> Path:
    return home() / "presets"
