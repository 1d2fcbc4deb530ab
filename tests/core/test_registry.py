import dataclasses
import subprocess
import sys
import textwrap

import pytest

from transferkit import registry
from transferkit.errors import RegistryError
from transferkit.task import Task


@dataclasses.dataclass(frozen=True)
class _DummyConfig:
    data: dict = dataclasses.field(default_factory=dict)


class _Dummy(Task):
    """A dummy task."""

    config_class = _DummyConfig

    def datasets(self):
        raise NotImplementedError

    def build_model(self, backbone, info, backbone_training=False):
        raise NotImplementedError

    def compile(self, model, optimizer=None):
        model.compile(optimizer=optimizer, loss="mse")

    def serving_signatures(self, model, info):
        raise NotImplementedError

    def serving_examples(self, info, count):
        return []

    def check_serving(self, model, signatures, examples, info):
        return []


def test_builtin_task_is_registered():
    tasks = registry.available_tasks()
    assert "image_classification" in tasks
    assert tasks["image_classification"].source == "built-in"


def test_duplicate_registration_names_existing_owner():
    registry.register_task("dup_task_for_test")(_Dummy)
    try:
        class Other(_Dummy):
            pass

        with pytest.raises(RegistryError) as error:
            registry.register_task("dup_task_for_test")(Other)
        message = str(error.value)
        assert "'dup_task_for_test' is already registered by" in message
        assert "_Dummy" in message
    finally:
        registry.unregister_task("dup_task_for_test")


def test_unknown_task_lists_available_and_close_match():
    with pytest.raises(RegistryError) as error:
        registry.get_task("image_clasification")
    message = str(error.value)
    assert "unknown task 'image_clasification'" in message
    assert "Did you mean 'image_classification'?" in message
    assert "Available tasks: " in message and "image_classification" in message


def test_register_rejects_non_tasks_and_bad_names():
    with pytest.raises(TypeError, match="decorates Task subclasses only"):
        registry.register_task("not_a_task")(object)
    with pytest.raises(ValueError, match="Received: name=''"):
        registry.register_task("")


def _write_distribution(site, dist_name, module, entry_name, source):
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist_name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[transferkit.tasks]\n{entry_name} = {module}\n")


GOOD_PLUGIN = '''
import dataclasses
from transferkit import Task, register_task

@dataclasses.dataclass(frozen=True)
class RegressionConfig:
    target: str = "y"

@register_task("image_regression")
class ImageRegression(Task):
    """Predicts one number per image (third-party example)."""
    config_class = RegressionConfig
    def datasets(self): raise NotImplementedError
    def build_model(self, backbone, info, backbone_training=False): raise NotImplementedError
    def compile(self, model, optimizer=None): model.compile(optimizer=optimizer, loss="mse")
    def serving_signatures(self, model, info): raise NotImplementedError
    def serving_examples(self, info, count): return []
    def check_serving(self, model, signatures, examples, info): return []
'''

BROKEN_PLUGIN = '''
import this_module_does_not_exist_anywhere
'''


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _write_distribution(site, "tk-regression", "tk_regression_plugin", "image_regression", GOOD_PLUGIN)
    _write_distribution(site, "tk-broken", "tk_broken_plugin", "broken", BROKEN_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(registry.DISABLE_AUTOLOAD_ENV, raising=False)
    yield site
    monkeypatch.undo()
    for name in ("tk_regression_plugin", "tk_broken_plugin"):
        sys.modules.pop(name, None)
    registry.reload_plugins()


def test_entry_point_plugins_load_and_broken_one_is_isolated(plugin_site, capsys):
    registry.reload_plugins()
    tasks = registry.available_tasks()
    assert tasks["image_regression"].source == "tk-regression"
    assert tasks["image_classification"].source == "built-in"  # built-ins unaffected
    failures = registry.plugin_failures()
    assert len(failures) == 1
    assert failures[0].distribution == "tk-broken"
    assert "ModuleNotFoundError" in failures[0].error
    assert "this_module_does_not_exist_anywhere" in failures[0].error
    # Reported once, when loading, not on every lookup.
    registry.available_tasks()
    assert capsys.readouterr().err.count("tk-broken") == 1


def test_cli_tasks_shows_plugin_package_and_reports_broken_one(plugin_site):
    import os

    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    result = subprocess.run([sys.executable, "-m", "transferkit", "tasks"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "tk-regression" in lines["image_regression"]
    assert "Predicts one number per image" in lines["image_regression"]
    assert "built-in" in lines["image_classification"]
    assert "'broken = tk_broken_plugin' from package 'tk-broken' failed to load" in result.stderr


def test_autoload_can_be_disabled(plugin_site, monkeypatch):
    monkeypatch.setenv(registry.DISABLE_AUTOLOAD_ENV, "1")
    registry.reload_plugins()
    assert "image_regression" not in registry.available_tasks()
    assert registry.plugin_failures() == []
    assert registry.available_tasks()["multilabel_classification"].source == "built-in"  # own entry points load


def test_built_in_tasks_come_from_the_same_entry_points_as_plugins():
    """No hand-kept list: setup.cfg's transferkit.tasks group names every plugin folder, and
    transferkit.plugins imports none of them."""
    import ast
    import configparser
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    parser = configparser.ConfigParser()
    parser.read(root / "setup.cfg")
    declared = {line.split("=")[0].strip(): line.split("=")[1].strip()
                for line in parser["options.entry_points"]["transferkit.tasks"].splitlines() if "=" in line}
    folders = {p.name for p in (root / "plugins").iterdir() if (p / "__init__.py").exists()}
    assert declared == {name: f"transferkit.plugins.{name}" for name in folders}
    tree = ast.parse((root / "plugins" / "__init__.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    installed = {ep.name for ep in __import__("importlib").metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert set(declared) <= installed, "reinstall (pip install -e .): the installed entry points are stale"


def test_registration_validates_the_plugin_class():
    class Abstract(Task):
        config_class = _DummyConfig

    with pytest.raises(TypeError, match="does not implement"):
        registry.register_task("abstract_task_for_test")(Abstract)

    class NotADataclass(_Dummy):
        config_class = dict

    with pytest.raises(TypeError, match="must be a dataclass"):
        registry.register_task("bad_config_for_test")(NotADataclass)

    @dataclasses.dataclass(frozen=True)
    class Clashing:
        training: dict = dataclasses.field(default_factory=dict)

    class ClashingTask(_Dummy):
        config_class = Clashing

    with pytest.raises(TypeError, match=r"reserves"):
        registry.register_task("clash_for_test")(ClashingTask)
    assert "abstract_task_for_test" not in registry.available_tasks()
