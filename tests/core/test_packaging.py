"""The package_dir mapping: every sub-package listed, in the wheel, no bare imports."""

import ast
import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"transferkit": "transferkit", "transferkit.plugins": "plugins",
          "transferkit.models": "models", "transferkit.serving": "serving"}
BARE = ("plugins", "models", "serving")


def _package_folders() -> set[str]:
    found = set()
    for package, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            parts = [] if str(rel) == "." else list(rel.parts)
            found.add(".".join([package, *parts]))
    return found


def _declared_packages() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return {line.strip() for line in parser["options"]["packages"].splitlines() if line.strip()}


def test_setup_cfg_lists_every_sub_package():
    assert _declared_packages() == _package_folders()


@pytest.mark.timeout(600)
def test_built_wheel_contains_every_sub_package(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("transferkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in _package_folders():
        assert package.replace(".", "/") + "/__init__.py" in names, package
    assert not any(name.split("/")[0] in BARE for name in names), "bare top-level package in wheel"


def _python_files():
    for folder in ("transferkit", "plugins", "models", "serving", "tests", "benchmarks"):
        yield from (ROOT / folder).rglob("*.py")


def test_no_bare_imports_of_mapped_folders():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in BARE:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {name}")
    assert not offenders, "import through transferkit.<name> instead:\n" + "\n".join(offenders)
