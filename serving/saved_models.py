"""The on-disk layout TF Serving reads: `<base>/<name>/<version>/saved_model.pb`.

One place for listing a model's numeric versions and reading a SavedModel's
protocol buffer, shared by export and the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


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


# TF Text ops that the TF Text bundled with TF Serving (2.12.1 in TF Serving 2.x up to at
# least 2.18, tensorflow/serving#4057) registers. Newer ops, such as the `TFText>RoundRobinTrim`
# that KerasHub's packers emit, are missing there (tensorflow/serving#2267).
TF_SERVING_TEXT_OPS = frozenset({
    "CaseFoldUTF8", "NormalizeUTF8", "NormalizeUTF8WithOffsets", "RegexSplitWithOffsets",
    "WordpieceTokenizeWithOffsets", "FastWordpieceTokenizeWithOffsets", "FastBertNormalize",
})


def graph_ops(version_dir: str | Path) -> set[str]:
    """Every op type in a SavedModel's graphs and function library."""
    ops: set[str] = set()
    for meta_graph in read_saved_model(version_dir).meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def non_core_ops(ops: Iterable[str]) -> list[str]:
    """Those of `ops` that core TensorFlow does not register (TF Text and other custom op libraries)."""
    import tensorflow as tf

    return sorted(op for op in set(ops) if not hasattr(tf.raw_ops, op))


def load_op_libraries(version_dir: str | Path) -> None:
    """Imports the custom op libraries a SavedModel needs before it is loaded (TF Text, today)."""
    custom = non_core_ops(graph_ops(version_dir))
    if custom:
        try:
            import tensorflow_text  # noqa: F401  (registers its ops with TensorFlow)
        except ImportError as error:
            raise RuntimeError(f"{version_dir}: the model uses TF Text ops ({', '.join(custom)}); "
                               f"install tensorflow-text: {error}") from None
