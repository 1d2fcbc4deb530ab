"""No import circles inside the package, deferred (function-local) and TYPE_CHECKING imports included.

A circle hidden in a function still ties its modules together: none can be
understood, tested or moved alone, and whichever imports first at module level
breaks the other. The import graph is read with `ast`, so nothing is imported.
"""

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Circles that are known and tolerated: none. An entry here must say why and when it goes.
KNOWN_CIRCLES: list[frozenset[str]] = []


def _package_folders() -> dict[str, Path]:
    """setup.cfg's package_dir: package name -> its folder (plugins/ installs as transferkit.plugins, ...)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    folders = {}
    for line in parser["options"]["package_dir"].splitlines():
        if "=" in line:
            package, folder = (part.strip() for part in line.split("=", 1))
            folders[package] = ROOT / folder
    return folders


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in _package_folders().items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                # `from pkg import submodule` depends on the submodule, not on the package.
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in modules else source
                if target in modules and target != name:
                    found.add(target)
    return found


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(frozenset(component))
    return circles


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_graph_reads_mapped_folders_and_deferred_imports():
    graph = _import_graph()
    assert "transferkit.models.backbones" in graph and "transferkit.plugins.image_classification.task" in graph
    assert "transferkit.config_sections" in graph["transferkit.models.backbones"]
    # Deferred: Task.load_backbone imports the backbones inside the method.
    assert "transferkit.models.backbones" in graph["transferkit.task"]


def test_circle_finder_finds_a_deferred_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_beyond_the_known_ones():
    unexpected = [sorted(circle) for circle in _circles(_import_graph()) if circle not in KNOWN_CIRCLES]
    assert not unexpected, f"import circles (deferred imports included): {unexpected}"


def _plugin_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["transferkit", "plugins"] else None


def test_no_plugin_imports_another_plugin():
    """Shared code lives in transferkit/ (classification, vision), not in a sibling plugin (issue 33)."""
    crossings = sorted(f"{name} -> {target}" for name, targets in _import_graph().items()
                       for target in targets
                       if _plugin_of(name) and _plugin_of(target) and _plugin_of(name) != _plugin_of(target))
    assert not crossings, f"plugins importing other plugins: {crossings}"


def test_the_plugin_rule_sees_a_crossing():
    assert _plugin_of("transferkit.plugins.audio_classification.task") == "audio_classification"
    assert _plugin_of("transferkit.plugins") is None and _plugin_of("transferkit.runner") is None


def test_classification_and_vision_import_no_plugin():
    """The foundations the plugins build on never reach back into a plugin."""
    reaching = sorted(f"{name} -> {target}" for name, targets in _import_graph().items()
                      if name.startswith(("transferkit.classification", "transferkit.vision"))
                      for target in targets if _plugin_of(target))
    assert not reaching, reaching


# The application layer: commands and reports built on the foundation (the rest of transferkit/, models/,
# serving/). It may use plugins (the demo shows two tasks); the foundation never names one.
# The package's own namespace (`tk.train`, `tk.Run`, ...) is the Python API's facade, so it sits here too.
APPLICATION = frozenset({"transferkit.cli", "transferkit.__main__", "transferkit.demo", "transferkit.compare",
                         "transferkit.compare_report", "transferkit.lr_find", "transferkit.summary",
                         "transferkit", "transferkit.api", "transferkit.presets"})


def _layer_crossings(graph: dict[str, set[str]]) -> list[str]:
    crossings = []
    for name, targets in graph.items():
        if name in APPLICATION or _plugin_of(name) or name == "transferkit.plugins":
            continue
        # `transferkit.plugins` itself (it imports nothing) is where the registry finds an uninstalled tree's plugins.
        crossings += [f"{name} -> {target}" for target in sorted(targets) if target in APPLICATION or _plugin_of(target)]
    return crossings


def test_the_foundation_imports_no_application_module_and_no_plugin():
    graph = _import_graph()
    assert APPLICATION <= set(graph), f"an application module moved: {sorted(APPLICATION - set(graph))}"
    crossings = _layer_crossings(graph)
    assert not crossings, f"foundation modules reaching up a layer: {crossings}"


def test_the_layer_rule_sees_a_crossing():
    assert _layer_crossings({"transferkit.runner": {"transferkit.summary"},
                             "transferkit.edge": {"transferkit.plugins.text_classification.task"},
                             "transferkit.cli": {"transferkit.plugins.image_classification.testing"}}) == [
        "transferkit.runner -> transferkit.summary",
        "transferkit.edge -> transferkit.plugins.text_classification.task"]
