"""The on-disk layout TF Serving reads: `<base>/<name>/<version>/saved_model.pb`.

One place for listing a model's numeric versions and reading a SavedModel's
protocol buffer, shared by export and the server.
"""

from __future__ import annotations

from pathlib import Path


def list_versions(model_dir: str | Path, complete_only: bool = False) -> list[int]:
    """Numeric version folders of a model, ascending; with `complete_only`, those holding a saved_model.pb.

    Other names (the exporter's `.tmp-*` folders, notes) are ignored, as TF Serving ignores them.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and p.name.isdigit() and (not complete_only or (p / "saved_model.pb").exists()))


def read_saved_model(version_dir: str | Path):
    """The `SavedModel` protocol buffer of a version folder."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(version_dir) / "saved_model.pb").read_bytes())
    return proto


def signature_names(version_dir: str | Path) -> list[str]:
    """The serving signatures of a SavedModel, read from its protocol buffer (no graph is loaded)."""
    names = set()
    for meta_graph in read_saved_model(version_dir).meta_graphs:
        names.update(k for k in meta_graph.signature_def if not k.startswith("__"))
    return sorted(names)
