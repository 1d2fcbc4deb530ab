"""The docs' Kubernetes manifest for several workers (docs/scaling.md): it parses, and its shell command exports a
valid TF_CONFIG. And every docs heading the code sends users to exists."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from transferkit.multi_worker import read_tf_config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SCALING = ROOT / "docs" / "scaling.md"


def _multi_worker_manifest():
    blocks = re.findall(r"```yaml\n(.*?)```", SCALING.read_text(), flags=re.S)
    found = [b for b in blocks if "kind: Job" in b and "TF_CONFIG" in b]
    assert len(found) == 1, "docs/scaling.md: expected one yaml block with the multi-worker Job"
    return list(yaml.safe_load_all(found[0]))


def test_indexed_job_exports_a_tf_config_for_each_index(tmp_path, monkeypatch):
    service, job = _multi_worker_manifest()
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    container = pod["containers"][0]
    port = service["spec"]["ports"][0]["port"]
    assert container["ports"][0]["containerPort"] == port

    # A stand-in `transferkit` that records the environment it was started with.
    probe = tmp_path / "bin" / "transferkit"
    probe.parent.mkdir()
    probe.write_text('#!/bin/sh\nprintf "%s" "$TF_CONFIG" > "$PROBE_OUT"\n')
    probe.chmod(0o755)
    names = [f"{job['metadata']['name']}-{i}.{service['metadata']['name']}:{port}" for i in range(spec["completions"])]
    for index in range(spec["completions"]):
        out = tmp_path / f"tf_config.{index}"
        env = dict(os.environ, PATH=f"{probe.parent}:{os.environ['PATH']}", JOB_COMPLETION_INDEX=str(index),
                   PROBE_OUT=str(out))
        subprocess.run([*container["command"], *container["args"]], env=env, check=True, timeout=30)
        monkeypatch.setenv("TF_CONFIG", out.read_text())
        parsed = read_tf_config()
        assert parsed == {"cluster": {"worker": names}, "task": {"type": "worker", "index": index}}


@pytest.mark.parametrize("index", [0, 1])
def test_docs_tf_config_example_is_valid(monkeypatch, index):
    example = re.search(r"export TF_CONFIG='(\{.*?\})'", SCALING.read_text()).group(1)
    monkeypatch.setenv("TF_CONFIG", example.replace('"index": 0', f'"index": {index}'))
    assert read_tf_config()["task"]["index"] == index
    assert json.loads(example)["cluster"]["worker"] == ["host0:12345", "host1:12345"]


def _headings(path: Path) -> set[str]:
    """The Markdown headings of a file, outside fenced code blocks."""
    headings, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            headings.add(line.lstrip("#").strip())
    return headings


def _code_files():
    yield from (path for folder in ("transferkit", "plugins", "models", "serving")
                for path in (ROOT / folder).glob("**/*.py"))


def test_every_docs_section_named_by_the_code_exists():
    """Errors and help that send the user to `the docs page docs/X.md, section "Y"` (or to `the README section
    "Y"`) name a page and a heading that are there."""
    named = {}
    for path in _code_files():
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        for page, section in re.findall(r'docs page (docs/[\w./-]+\.md), section \\?"([^"\\]+)\\?"', text):
            named.setdefault((page, section), where)
        for section in re.findall(r'README section \\?"([^"\\]+)\\?"', text):
            named.setdefault(("README.md", section), where)
    assert named, "expected the code to name at least one docs section"
    missing = {f"{page}: {section}": where for (page, section), where in named.items()
               if not (ROOT / page).is_file() or section not in _headings(ROOT / page)}
    assert not missing, f"docs sections named by the code but absent: {missing}"
    assert not re.search(r"README's dataset table", "".join(p.read_text() for p in ROOT.glob("transferkit/*.py")))
