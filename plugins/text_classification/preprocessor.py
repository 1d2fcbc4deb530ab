"""`TextPreprocessor`: raw text -> token ids and padding mask, the one definition of the text task's input."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

from transferkit.errors import ConfigError
from transferkit.preprocessing import Preprocessor


@dataclasses.dataclass(frozen=True)
class TextPreprocessor(Preprocessor):
    """BERT's normalisation and WordPiece tokenisation, packed as `[CLS] tokens [SEP]` and padded.

    The vocabulary's tokens are part of the settings, so a run (its
    evaluation, its export, a server) never needs the preset again. The
    TensorFlow graph is `encoder` (a `TextEncoder`), built once per
    preprocessor.

    Example:

    ```python
    pre = TextPreprocessor(vocabulary=tuple(read_vocabulary("vocab.txt")), sequence_length=128)
    inputs = pre.encoder(tf.constant(["A fine film.", "Dull."]))   # token_ids, padding_mask: (2, 128)
    ```
    """

    raw_input = "text"
    edge_steps = ("normalise the text as the preprocessor says (lowercase; strip_accents: NFD, drop marks)",
                  "split it into WordPiece tokens with the preprocessor's vocabulary (an id is a list position)",
                  "feed token_ids = [CLS] tokens [SEP], cut and padded with [PAD] to sequence_length, and "
                  "padding_mask = 1 for real tokens, 0 for padding (int32, shape [N, sequence_length])")

    matched_on_transfer = ("vocabulary", "lowercase", "strip_accents")

    vocabulary: tuple[str, ...] = ()
    sequence_length: int = 128
    lowercase: bool = True
    strip_accents: bool = True

    def __post_init__(self):
        object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in self.vocabulary]
        if missing:
            raise ConfigError(f"TextPreprocessor: the vocabulary ({len(self.vocabulary)} tokens) lacks the special "
                              f"tokens {missing}; expected a BERT WordPiece vocab.txt")
        if not 3 <= int(self.sequence_length) <= 8192:
            raise ConfigError(f"TextPreprocessor: sequence_length must be in [3, 8192]. "
                              f"Received: sequence_length={self.sequence_length!r}")

    def __repr__(self) -> str:  # the vocabulary would fill a terminal
        return (f"TextPreprocessor(vocabulary=<{len(self.vocabulary)} tokens>, sequence_length={self.sequence_length}, "
                f"lowercase={self.lowercase}, strip_accents={self.strip_accents})")

    @classmethod
    def from_legacy_info(cls, info: Mapping[str, Any]) -> "TextPreprocessor":
        # Runs written before preprocessors recorded the tokenizer as loose keys of info.json.
        return cls(vocabulary=tuple(info["vocabulary_tokens"]), sequence_length=int(info["sequence_length"]),
                   lowercase=bool(info.get("lowercase", True)), strip_accents=bool(info.get("strip_accents", True)))

    @functools.cached_property
    def encoder(self):
        """The `TextEncoder` graph: tf.string `[N]` -> `{"token_ids", "padding_mask"}` int32 `[N, length]`."""
        from transferkit.plugins.text_classification.tokenization import TextEncoder

        return TextEncoder(list(self.vocabulary), self.sequence_length, lowercase=self.lowercase,
                           strip_accents=self.strip_accents)

    def preprocess(self, raw):
        import tensorflow as tf

        encoded = self.encoder(tf.reshape(raw, [1]))
        return {key: value[0] for key, value in encoded.items()}
