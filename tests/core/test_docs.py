"""The README's Kubernetes manifest for several workers: it parses, and its shell command exports a valid TF_CONFIG."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from transferkit.multi_worker import read_tf_config

README = Path(__file__).resolve().parents[2] / "README.md"


def _multi_worker_manifest():
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if "kind: Job" in b and "TF_CONFIG" in b]
    assert len(found) == 1, "README: expected one yaml block with the multi-worker Job"
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
def test_readme_tf_config_example_is_valid(monkeypatch, index):
    example = re.search(r"export TF_CONFIG='(\{.*?\})'", README.read_text()).group(1)
    monkeypatch.setenv("TF_CONFIG", example.replace('"index": 0', f'"index": {index}'))
    assert read_tf_config()["task"]["index"] == index
    assert json.loads(example)["cluster"]["worker"] == ["host0:12345", "host1:12345"]


def test_every_readme_section_named_by_the_code_exists():
    """Errors and help that send the user to `the README section "X"` name a heading that is there."""
    headings = {line.lstrip("#").strip() for line in README.read_text().splitlines() if line.startswith("#")}
    root = README.parent
    named = {}
    for path in [*root.glob("transferkit/**/*.py"), *root.glob("plugins/**/*.py"), *root.glob("models/**/*.py"),
                 *root.glob("serving/**/*.py")]:
        for section in re.findall(r'README section \\?"([^"\\]+)\\?"', path.read_text(encoding="utf-8")):
            named.setdefault(section, str(path.relative_to(root)))
    assert named, "expected the code to name at least one README section"
    missing = {section: where for section, where in named.items() if section not in headings}
    assert not missing, f"README sections named by the code but absent: {missing}"
    assert not re.search(r"README's dataset table", "".join(p.read_text() for p in root.glob("transferkit/*.py")))
