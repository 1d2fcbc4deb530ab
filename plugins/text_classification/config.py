"""Config sections of the text-classification task."""

from __future__ import annotations

import dataclasses
from typing import Literal

from transferkit.classification.head import HeadConfig
from transferkit.config import DataSection, PATH, check
from transferkit.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataConfig(DataSection):
    """Where the texts are and how they are read.

    `train` (and `val`) is a CSV, TSV or JSON Lines file with a text and a
    label column, or a folder with one sub-folder of `.txt` files per class.
    Without `val`, a seeded, stratified `val_split` of the training data is
    held out. Files are read as `encoding`; a file (or row) that does not
    decode is read as `fallback_encoding` and reported.
    """

    train: str = dataclasses.field(default="", metadata={PATH: True})
    val: str | None = dataclasses.field(default=None, metadata={PATH: True})
    # Evaluated once, after training, and reported apart (metrics.json "test"); never picks the best epoch.
    test: str | None = dataclasses.field(default=None, metadata={PATH: True})
    val_split: float = 0.2
    # Hold out exactly this many texts instead of val_split (stratified, seeded); 0: use val_split.
    val_count: int = 0
    text_column: str = "text"
    label_column: str = "label"
    # Keep only rows whose `filter_column` equals `filter_value` (IMDB's combined CSV: source == imdb).
    filter_column: str | None = None
    filter_value: str | None = None
    encoding: str = "utf-8"
    fallback_encoding: str | None = "latin-1"
    sequence_length: int = 128
    batch_size: int = 32
    class_names: list[str] | None = None
    # Raw label value -> class name, e.g. {"0": negative, "1": positive}.
    label_names: dict[str, str] | None = None
    # Use at most this many training texts (a stratified, seeded subset); 0: all.
    max_train: int = 0
    # Then train on a seeded, stratified share of them (learning curves); validation is unchanged.
    train_fraction: float = 1.0
    on_bad_input: Literal["skip", "error"] = "skip"
    # Texts are read from their files and tokenised in the input pipeline. memory: token ids kept after
    # the first pass; none: tokenised every epoch; auto: memory while they fit in cache_memory_mb.
    cache: Literal["auto", "memory", "none"] = "auto"
    cache_memory_mb: int = 1024

    def __post_init__(self):
        if not self.train:
            raise ConfigError("data.train: required; expected a CSV, TSV or JSON Lines file, or a folder of "
                              "class sub-folders with .txt files")
        check(0.0 < self.val_split < 1.0, "data.val_split", self.val_split, "a number in (0, 1)")
        check(8 <= self.sequence_length <= 8192, "data.sequence_length", self.sequence_length,
              "an integer in [8, 8192]")
        check(self.batch_size >= 1, "data.batch_size", self.batch_size, "an integer >= 1")
        check(self.val_count >= 0, "data.val_count", self.val_count, "an integer >= 0 (0: use val_split)")
        check(self.cache_memory_mb >= 0, "data.cache_memory_mb", self.cache_memory_mb, "an integer >= 0")
        check(self.max_train >= 0, "data.max_train", self.max_train, "an integer >= 0 (0: all)")
        check(0.0 < self.train_fraction <= 1.0, "data.train_fraction", self.train_fraction, "a number in (0, 1]")
        check((self.filter_column is None) == (self.filter_value is None), "data.filter_value",
              self.filter_value, "set together with data.filter_column")
        for field in ("encoding", "fallback_encoding"):
            value = getattr(self, field)
            if value is None:
                continue
            import codecs

            try:
                # rot13, hex, zlib... are codecs too, but not between bytes and text.
                text_codec = getattr(codecs.lookup(value), "_is_text_encoding", True)
            except LookupError:
                text_codec = False
            if not text_codec:
                raise ConfigError(f"data.{field}: expected a Python codec name for text, such as 'utf-8' or "
                                  f"'latin-1', received {value!r}")
        if self.class_names is not None:
            check(len(set(self.class_names)) == len(self.class_names) and len(self.class_names) >= 2,
                  "data.class_names", self.class_names, "at least two distinct names")


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """WordPiece tokenisation, done in the graph (training data and the exported model alike).

    `vocabulary` is a `vocab.txt`; by default the backbone preset's own. The
    defaults match BERT's uncased tokenisation: lower case, accents stripped.
    """

    vocabulary: str | None = dataclasses.field(default=None, metadata={PATH: True})
    lowercase: bool = True
    strip_accents: bool = True


@dataclasses.dataclass(frozen=True)
class TextHeadConfig(HeadConfig):
    """The classifier put on the transformer's token outputs: pooled (mean of the tokens, or [CLS]), then the
    shared classification head."""

    dropout: float = 0.1
    pooling: Literal["mean", "cls"] = "mean"


@dataclasses.dataclass(frozen=True)
class TextClassificationConfig:
    """The task's own top-level sections: `data`, `tokenizer`, `head`."""

    data: DataConfig
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    head: TextHeadConfig = dataclasses.field(default_factory=TextHeadConfig)
