"""Shared fixtures. Kept inside tests/ (see DESIGN.md, the package_dir pitfalls)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Each test gets its own TRANSFERKIT_HOME unless it asks for the shared cache."""
    home = os.environ.get("TRANSFERKIT_TEST_SHARED_HOME")
    if not home:
        home = str(tmp_path_factory.mktemp("transferkit_home"))
    monkeypatch.setenv("TRANSFERKIT_HOME", home)
    yield home
