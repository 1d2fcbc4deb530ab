"""The documentation site builds with `mkdocs build --strict`: no broken link, anchor, nav entry or API reference."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")


@pytest.mark.timeout(120)
def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    assert 'id="transferkit.api.Run"' in reference and "Run" in reference
    # The benchmark plots are linked from benchmarks/results/, not copied into docs/.
    assert (site / "benchmarks" / "results" / "lr_find" / "lite2_head.png").is_file()
