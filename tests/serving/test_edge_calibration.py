"""int8 calibration sets that tasks build from their training examples."""

import numpy as np

from transferkit.plugins.text_classification.edge import packed_token_rows


def _example(tokens, length=8):
    ids = np.zeros((1, length), np.int32)
    mask = np.zeros((1, length), np.int32)
    ids[0, :len(tokens)] = tokens
    mask[0, :len(tokens)] = 1
    return {"token_ids": ids, "padding_mask": mask}


def test_text_calibration_has_no_padded_position_and_keeps_every_real_token_in_order():
    full = _example([2, 11, 12, 13, 14, 15, 16, 3])
    short = [_example([2, 21, 22, 3]), _example([2, 31, 32, 33, 3]), _example([2, 41, 3]), _example([2, 51, 3])]
    rows = packed_token_rows([full, *short])
    assert all(row["padding_mask"].all() and row["token_ids"].shape == (1, 8) for row in rows)
    assert np.array_equal(rows[0]["token_ids"], full["token_ids"])  # a full-length text stays as it is
    packed = np.concatenate([row["token_ids"][0] for row in rows[1:]])
    real = np.concatenate([e["token_ids"][0][:int(e["padding_mask"].sum())] for e in short])
    assert len(rows) == 1 + len(real) // 8 and np.array_equal(packed, real[:len(packed)])
    assert 0 not in packed  # no padding id inside a row
    assert rows[1]["token_ids"].dtype == np.int32


def test_texts_too_short_to_fill_a_row_are_kept_as_they_are():
    short = [_example([2, 5, 3]), _example([2, 6, 3])]
    kept = packed_token_rows(short)
    assert len(kept) == 2 and all(a is b for a, b in zip(kept, short))
    assert packed_token_rows([]) == []
