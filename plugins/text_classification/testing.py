"""Generated sentences and a vocabulary for tests and examples of text classification: no corpus needed."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.testing import TINY_BERT

# A small vocabulary and two kinds of sentences, so that a tiny BERT can learn sentiment in a few steps.
TEXT_WORDS = {
    "positive": ("good", "great", "fine", "lovely", "superb"),
    "negative": ("bad", "awful", "poor", "dull", "weak"),
}
TEXT_FILLER = ("the", "a", "movie", "film", "plot", "is", "was", "and", "acting", "story", "this", "it")


def write_vocabulary(path: str | os.PathLike, size: int = 200) -> Path:
    """A BERT `vocab.txt` of `size` tokens: special tokens, the test words, letters and filler pieces."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "'"]
    tokens += [w for words in TEXT_WORDS.values() for w in words] + list(TEXT_FILLER)
    tokens += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    tokens += ["##ly", "##ed", "##ing", "cafe", "naive"]
    tokens = list(dict.fromkeys(tokens))  # each token once ("a" is a word and a letter)
    filler = 0
    while len(tokens) < size:
        tokens.append(f"[unused{filler}]")
        filler += 1
    path = Path(path)
    path.write_text("\n".join(tokens[:size]) + "\n", encoding="utf-8")
    return path


def make_text_dataset(root: str | os.PathLike, count: int = 48, seed: int = 0) -> Path:
    """`root/train.csv` (text,label) of short positive and negative sentences, and `root/vocab.txt`."""
    import csv

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_vocabulary(root / "vocab.txt")
    rng = np.random.default_rng(seed)
    labels = sorted(TEXT_WORDS)
    with (root / "train.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(count):
            label = labels[i % len(labels)]
            words = list(rng.choice(TEXT_FILLER, 5)) + list(rng.choice(TEXT_WORDS[label], 2))
            rng.shuffle(words)
            writer.writerow([" ".join(words).capitalize() + f" {i}.", label])
    return root / "train.csv"


def tiny_text_config(root: str | os.PathLike, sequence_length: int = 16, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for text classification on a 2-layer, 16-wide BERT built from config."""
    root = Path(root)
    backbone = copy.deepcopy(TINY_BERT)
    backbone["config"]["vocabulary_size"] = 200
    config: dict[str, Any] = {
        "task": "text_classification",
        "backbone": backbone,
        "data": {"train": str(root / "train.csv"), "sequence_length": sequence_length, "batch_size": 8},
        "tokenizer": {"vocabulary": str(root / "vocab.txt")},
        "stages": [
            {"name": "head", "freeze": {"backbone": True}, "epochs": 2, "learning_rate": 0.01},
            {"name": "top", "freeze": {"top_blocks": 1}, "epochs": 1, "learning_rate": 0.001},
        ],
        "training": {"verbose": 0, "tensorboard": False},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config
