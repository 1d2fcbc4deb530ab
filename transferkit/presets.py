"""`tk.presets`: what `transferkit presets list` and `presets import` do, from Python.

Example:

```python
import transferkit as tk

[row.name for row in tk.presets.list()]        # importable, cached and named presets
folder = tk.presets.import_("efficientnet-lite0")
```
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path


def list() -> builtins.list:  # noqa: A001  (tk.presets.list(), as the command is named)
    """Every preset transferkit knows: importable from an installed wheel, cached, or named by KerasHub/KerasCV."""
    from transferkit.models.presets import list_presets

    return list_presets()


def import_(name: str, to: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Imports a packaged preset (or a finished run) into the cache, or `to`; returns its folder."""
    from transferkit.models.presets import import_preset

    return import_preset(name, to=to, force=force)
