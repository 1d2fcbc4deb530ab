"""WordPiece tokenisation and BERT packing, in TensorFlow ops that stock TF Serving runs.

The same `TextEncoder` turns texts into model inputs for training,
evaluation, `predict` and inside the exported SavedModel, so all four see
identical token ids. Packing (`[CLS] ids[:L-2] [SEP]`, then padding) uses
core ragged ops only: KerasHub's packer emits `TFText>RoundRobinTrim`,
which the TF Text bundled with TF Serving cannot load
(tensorflow/serving#2267). What remains from TF Text is `NormalizeUTF8`,
`RegexSplitWithOffsets` and `FastWordpieceTokenizeWithOffsets`, all in the
TF Text that TF Serving bundles.
"""

from __future__ import annotations

from pathlib import Path

from transferkit.errors import ConfigError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def read_vocabulary(path: str | Path) -> list[str]:
    """Tokens of a BERT `vocab.txt`, one per line; checks the special tokens are there."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tokenizer.vocabulary: {path} not found; expected a BERT vocab.txt (one token per line)")
    tokens = path.read_text(encoding="utf-8").splitlines()
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ConfigError(f"tokenizer.vocabulary: {path} lacks the special tokens {missing}; "
                          f"expected a BERT vocab.txt with {list(SPECIAL_TOKENS)}")
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"tokenizer.vocabulary: {path} repeats tokens; expected each token once")
    return tokens


class TextEncoder:
    """Texts (tf.string `[N]`) -> `{"token_ids", "padding_mask"}`, int32 `[N, sequence_length]`.

    Example:

    ```python
    encoder = TextEncoder(read_vocabulary("vocab.txt"), sequence_length=128)
    inputs = encoder(tf.constant(["A fine film.", "Dull."]))
    inputs["token_ids"].shape  # (2, 128)
    ```
    """

    def __init__(self, vocabulary: list[str], sequence_length: int, lowercase: bool = True,
                 strip_accents: bool = True):
        import keras_hub

        if sequence_length < 3:
            raise ValueError(f"TextEncoder: sequence_length must be >= 3 ([CLS], a token, [SEP]); "
                             f"received sequence_length={sequence_length}")
        self.vocabulary = list(vocabulary)
        self.sequence_length = int(sequence_length)
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        # Normalisation is ours (`normalize`): KerasHub's lowercase applies NFKC case folding, which
        # BERT's own tokenizer does not ("½" would become "1⁄2", "´s" would split a word).
        self.tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=self.vocabulary, lowercase=False, strip_accents=False, oov_token="[UNK]", dtype="int32")
        self.cls_id = self.vocabulary.index("[CLS]")
        self.sep_id = self.vocabulary.index("[SEP]")
        self.pad_id = self.vocabulary.index("[PAD]")
        self._graph = None
        self._pieces_graph = None

    def normalize(self, texts):
        """BERT's text normalisation: control characters dropped, accents stripped, lower case."""
        import tensorflow as tf
        import tensorflow_text as tf_text

        texts = tf.strings.regex_replace(texts, r"[\t\n\r]", " ")
        texts = tf.strings.regex_replace(texts, r"[\p{C}\x{FFFD}]", "")
        if self.strip_accents:
            texts = tf_text.normalize_utf8(texts, "NFD")
            texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        if self.lowercase:
            texts = tf.strings.lower(texts, encoding="utf-8")
        return texts

    def __call__(self, texts):
        import tensorflow as tf

        if self._graph is None:
            # Always traced: called eagerly, KerasHub tokenizers return Python lists.
            self._graph = tf.function(self._encode, input_signature=[tf.TensorSpec([None], tf.string)])
        return self._graph(tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1]))

    def _encode(self, texts):
        import tensorflow as tf

        ids = self.tokenizer(self.normalize(texts))
        if not isinstance(ids, tf.RaggedTensor):  # a batch whose texts all have the same length
            ids = tf.RaggedTensor.from_tensor(ids)
        ids = tf.cast(ids[:, : self.sequence_length - 2], tf.int32)
        rows = ids.nrows()
        cls = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tf.constant(self.cls_id, tf.int32)))
        sep = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tf.constant(self.sep_id, tf.int32)))
        packed = tf.concat([cls, ids, sep], axis=1)
        token_ids = packed.to_tensor(default_value=self.pad_id, shape=[None, self.sequence_length])
        padding_mask = tf.sequence_mask(packed.row_lengths(), self.sequence_length, dtype=tf.int32)
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def tokens(self, text: str) -> list[str]:
        """The WordPiece tokens of one text, without packing (for reports and tests)."""
        import numpy as np
        import tensorflow as tf

        if self._pieces_graph is None:  # traced once, like __call__
            self._pieces_graph = tf.function(lambda t: self.tokenizer(self.normalize(t)).flat_values,
                                             input_signature=[tf.TensorSpec([None], tf.string)])
        return [self.vocabulary[i] for i in np.asarray(self._pieces_graph(tf.constant([text])))]
