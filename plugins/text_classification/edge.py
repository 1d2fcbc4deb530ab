"""What a transformer's int8 edge export needs: the ops kept in float and calibration rows without padding."""

from __future__ import annotations

import numpy as np

# The op types a transformer's int8 file keeps in float (but for the op that makes its output): its dense
# layers, embedding lookups, reshapes and transposes stay int8.
# On BBC's MiniLM (200 or 400 calibration texts, 2 threads, x86): whole-graph int8 lost 2.35 points and ran
# 92 ms per text against 17 ms: LiteRT's int8 kernels for a matmul of two activations (55 ms of it),
# softmax, GELU and the layer-norm statistics are slow here. With those in float it still lost 0.71 points
# (1.88 with 400 texts) to the residual adds and the layer norms' scale and shift; with ADD and MUL in float
# too it loses none, at the same speed.
TRANSFORMER_INT8_FLOAT_OPS = ("BATCH_MATMUL", "SOFTMAX", "GELU", "MEAN", "SQUARED_DIFFERENCE", "RSQRT", "ADD", "MUL")


def packed_token_rows(examples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Calibration rows for a text model with no padded position: the full-length examples as they
    are, and the real tokens of the shorter ones end to end, cut to full rows.

    A padded position's activations are far outside the real tokens' (on MiniLM, calibrating with
    padded texts cost 8-10 points of accuracy with the whole graph in int8, against 2-3 without); at inference those
    positions are masked out of attention and not pooled, so int8 ranges come from real tokens only.
    """
    if not examples:
        return examples
    full = [e for e in examples if e["padding_mask"].all()]
    short = [e for e in examples if not e["padding_mask"].all()]
    if not short:
        return full
    length, dtype = examples[0]["token_ids"].shape[1], examples[0]["token_ids"].dtype
    tokens = np.concatenate([e["token_ids"][0][e["padding_mask"][0].astype(bool)] for e in short])
    rows = len(tokens) // length
    ids = tokens[:rows * length].reshape(rows, length).astype(dtype)
    mask = np.ones_like(ids, dtype=examples[0]["padding_mask"].dtype)
    packed = [{"token_ids": ids[i:i + 1], "padding_mask": mask[i:i + 1]} for i in range(rows)]
    return (full + packed) or examples  # texts too short to fill one row: as they are
