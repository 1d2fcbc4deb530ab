"""The text-classification task."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transferkit import streaming
from transferkit.errors import ConfigError, DataError, TransferkitError
from transferkit.plugins.text_classification import data as data_lib
from transferkit.plugins.text_classification.config import TextClassificationConfig
from transferkit.classification.task import ClassificationTask
from transferkit.registry import register_task
from transferkit.splits import SplitSource, read_splits
from transferkit.plugins.text_classification.preprocessor import TextPreprocessor
from transferkit.task import CacheSplit, ParityCheck, TaskData, input_ids

# How many validation texts travel in info.json for warmup and the export's parity check.
EXAMPLE_TEXTS = 32
EXAMPLE_CHARS = 4000


def _downloaded_preset_folder(name: str) -> Path | None:
    """The local copy of a named KerasHub preset (Keras downloads it where a network exists), or None."""
    try:
        from keras_hub.src.utils.preset_utils import get_file

        return Path(get_file(name, "config.json")).parent
    except Exception:  # offline, or not a KerasHub preset
        return None


@register_task("text_classification")
class TextClassification(ClassificationTask):
    """Fine-tunes a BERT-style text backbone to label texts (sentiment, topic, ...).

    Texts are tokenised in the graph, so the exported SavedModel takes raw
    strings. The backbone runs in inference mode (no dropout) unless a
    stage sets `freeze.train_batchnorm`; that makes a frozen lower part's
    outputs fixed, and the feature cache computes them once: at the pooled
    features while the whole backbone is frozen, at the cut between frozen
    and trainable transformer layers otherwise.

    Example:

    ```python
    from transferkit import load_config
    from transferkit.runner import train

    config = load_config("benchmarks/configs/bbc.yaml")   # task: text_classification
    run_dir = train(config, "runs/bbc")
    ```
    """

    config_class = TextClassificationConfig
    preprocessor_class = TextPreprocessor
    takes_texts = True
    # BERT's pooler reads only the [CLS] token through its own dense layer; the head pools itself.
    unused_backbone_layers = ("pooled_dense",)

    @classmethod
    def default_stages(cls):
        from transferkit.config import FreezeConfig, StageConfig

        return [
            StageConfig(name="head", freeze=FreezeConfig(backbone=True), epochs=4, learning_rate=1e-3),
            StageConfig(name="finetune", freeze=FreezeConfig(top_blocks=2), epochs=2,
                        learning_rate=5e-5, decay="cosine"),
        ]

    @classmethod
    def validate_config(cls, config) -> None:
        """data.sequence_length fits the backbone's position embeddings, checked before anything is written."""
        limit = _backbone_max_length(config.backbone)
        length = config.task_config.data.sequence_length
        if limit is not None and length > limit:
            raise ConfigError(f"data.sequence_length: the backbone takes at most {limit} tokens. Received: {length}")

    @classmethod
    def example_config(cls, root):
        from transferkit.plugins.text_classification.testing import make_text_dataset, tiny_text_config

        make_text_dataset(Path(root), count=32)
        return tiny_text_config(root)

    # -- tokenisation ----------------------------------------------------------

    def vocabulary_path(self) -> Path:
        configured = self.task_config.tokenizer.vocabulary
        if configured:
            return Path(configured)
        preset = self.config.backbone.preset
        if preset:
            from transferkit.models.presets import resolve_preset

            resolved = resolve_preset(preset)
            folder = Path(resolved)
            if not folder.is_dir():
                folder = _downloaded_preset_folder(resolved)
            for name in ("vocab.txt", "assets/tokenizer/vocabulary.txt"):
                if folder is not None and (folder / name).is_file():
                    return folder / name
        raise ConfigError("tokenizer.vocabulary: required when the backbone preset has no vocab.txt "
                          f"(backbone.preset: {preset!r}); expected a BERT vocab.txt path")

    def encoder(self, info=None):
        """The run's TextEncoder (its preprocessor's graph), built once per task."""
        if getattr(self, "_encoder", None) is None:
            self._encoder = self.preprocessor(info).encoder
        return self._encoder

    def build_preprocessor(self) -> TextPreprocessor:
        from transferkit.plugins.text_classification.tokenization import read_vocabulary

        tokenizer = self.task_config.tokenizer
        return TextPreprocessor(vocabulary=tuple(read_vocabulary(self.vocabulary_path())),
                                sequence_length=self.task_config.data.sequence_length,
                                lowercase=tokenizer.lowercase, strip_accents=tokenizer.strip_accents)

    def encode(self, texts: list[str], batch: int = 512) -> dict[str, np.ndarray]:
        """Token ids and masks of `texts`, as arrays."""
        encoder = self.encoder()
        parts = [encoder(texts[i:i + batch]) for i in range(0, len(texts), batch)]
        length = encoder.sequence_length
        if not parts:
            return {k: np.zeros((0, length), np.int32) for k in ("token_ids", "padding_mask")}
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in ("token_ids", "padding_mask")}

    # -- data ----------------------------------------------------------------

    def cache_mode(self, count: int) -> str:
        """`data.cache`, with auto resolved: memory while the token ids of `count` texts fit the budget."""
        cfg = self.task_config.data
        # Token ids and a padding mask, int32 each, per text.
        return streaming.resolve_cache(cfg.cache, count, cfg.sequence_length * 8, cfg.cache_memory_mb,
                                       beyond="none")

    def _examples(self):
        """(training examples, validation examples, class names, problems): the split every run and the
        baseline take; read once per task (the baseline at the end of a run reuses the run's)."""
        if getattr(self, "_split", None) is None:
            self._split = self._read_split()
        return self._split

    def _read_split(self):
        cfg = self.task_config.data

        def read(path, class_names):
            found = data_lib.read_examples(path, cfg)
            return found.examples, found.problems + found.notes

        def without_duplicates(train, val):  # first, so no text lands on both sides of the split
            train, duplicates = data_lib.drop_duplicates(train, val or [])
            return train, val, duplicates

        splits = read_splits(
            SplitSource(cfg.train, cfg.val, cfg.val_count or cfg.val_split, cfg.train_fraction,
                        self.config.training.seed, max_train=cfg.max_train or None,
                        val_field="data.val_count" if cfg.val_count else "data.val_split"),
            read=read, class_names=lambda train: list(cfg.class_names or ()) or sorted({e.label for e in train}),
            strata=lambda examples, names: [e.label for e in examples], before_split=without_duplicates)
        unknown = sorted({e.label for e in splits.train + splits.val} - set(splits.class_names))
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not in data.class_names {splits.class_names}")
        return splits.train, splits.val, splits.class_names, splits.problems

    # Below this many training texts, `train` fits the TF-IDF baseline for its summary (seconds on 2 cores).
    CHEAP_BASELINE_TEXTS = 30_000

    def edge_model(self, model, info):
        """The classifier's edge model, with a transformer's int8 needs: calibration rows of real tokens only,
        and the ops that lose accuracy or speed in int8 kept in float (see `edge.py` of this plugin)."""
        import dataclasses

        from transferkit.plugins.text_classification.edge import TRANSFORMER_INT8_FLOAT_OPS, packed_token_rows

        return dataclasses.replace(super().edge_model(model, info), calibration=packed_token_rows,
                                   int8_float_ops=TRANSFORMER_INT8_FLOAT_OPS)

    def baseline_is_cheap(self, info) -> bool:
        return int(info.get("num_train", 0)) <= self.CHEAP_BASELINE_TEXTS

    def baseline(self):
        """TF-IDF with logistic regression on the run's own training and validation texts."""
        from transferkit.plugins.text_classification.baseline import tfidf_baseline

        train_examples, val_examples, _, _ = self._examples()
        return tfidf_baseline([e.text for e in train_examples], [e.label for e in train_examples],
                              [e.text for e in val_examples], [e.label for e in val_examples],
                              self.config.training.seed)

    def datasets(self) -> TaskData:
        import tensorflow as tf

        cfg = self.task_config.data
        seed = self.config.training.seed
        train_examples, val_examples, class_names, problems = self._examples()
        index = {name: i for i, name in enumerate(class_names)}

        # The tokens travel in info.json (the preprocessor), so a run (its evaluation, its export) never
        # needs the preset again.
        if self.info:
            preprocessor = self.preprocessor()
            vocabulary_source = str(self.info.get("vocabulary", "info.json"))
        else:
            preprocessor = self.build_preprocessor()
            vocabulary_source = str(self.vocabulary_path().resolve())
        info = {
            "class_names": class_names,
            "sequence_length": preprocessor.sequence_length,  # also in the preprocessor; for readers of the file
            "vocabulary": vocabulary_source,
            "num_train": len(train_examples),
            "num_val": len(val_examples),
            "example_texts": [e.text[:EXAMPLE_CHARS] for e in val_examples[:EXAMPLE_TEXTS]],
            "preprocessor": preprocessor.get_config(),
        }
        self.info = info  # the encoder reads the tokenizer settings from it
        info["truncated_fraction"] = self._truncated_fraction(train_examples, seed)
        train_labels = np.asarray([index[e.label] for e in train_examples], np.int32)
        info["train_class_counts"] = np.bincount(train_labels, minlength=len(class_names)).tolist()
        val_labels = np.asarray([index[e.label] for e in val_examples], np.int32)
        num_classes = len(class_names)
        mode = self.cache_mode(len(train_examples) + len(val_examples))

        train_rows = data_lib.TextRows(train_examples, train_labels, self.encoder(), mode)
        val_rows = data_lib.TextRows(val_examples, val_labels, self.encoder(), mode)

        def batches(rows, shuffle: bool):
            ds = rows.batches(cfg.batch_size, shuffle, seed)
            ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)
            return ds.prefetch(tf.data.AUTOTUNE)

        indexed = val_rows.indexed_batches(cfg.batch_size).map(lambda x, y, rows: (x, tf.one_hot(y, num_classes), rows))
        return TaskData(
            train=batches(train_rows, shuffle=True),
            val=batches(val_rows, shuffle=False),
            val_indexed=indexed.prefetch(tf.data.AUTOTUNE),
            # The report reads only the texts it shows, from their files.
            val_records=data_lib.TextColumn(val_examples),
            train_plain=batches(train_rows, shuffle=False),
            info=info,
            problems=problems,
            steps_per_epoch=math.ceil(len(train_labels) / cfg.batch_size),
            input_ids={"train": input_ids(e.key for e in train_examples),
                       "val": input_ids(e.key for e in val_examples)},
        )

    def _truncated_fraction(self, examples, seed: int, sample: int = 4096) -> float:
        """The share of training texts longer than the sequence, from a seeded sample of up to `sample` texts."""
        if len(examples) > sample:
            chosen = np.random.default_rng(seed).choice(len(examples), sample, replace=False)
            examples = [examples[i] for i in np.sort(chosen)]
        masks = self.encode([e.text for e in examples])["padding_mask"]
        return round(float(np.mean(masks[:, -1] == 1)), 4) if len(masks) else 0.0

    # -- model ---------------------------------------------------------------

    def _transformer_layers(self, backbone) -> list:
        return [layer for layer in backbone.model.layers if layer.name.startswith("transformer_layer_")]

    @staticmethod
    def _takes_segments(backbone) -> bool:
        return "segment_ids" in {t.name for t in backbone.model.inputs}

    def _backbone_inputs(self, backbone, token_ids, padding_mask, segments):
        """The backbone's input dict; one-segment classification feeds all-zero segment ids where it takes them."""
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        if self._takes_segments(backbone):
            inputs["segment_ids"] = segments(token_ids)
        return inputs

    def _sequence_encoder(self, backbone):
        """backbone inputs -> token vectors `[B, L, H]` (BERT's pooler is not used)."""
        import keras

        output = backbone.model.output
        if isinstance(output, dict):
            if "sequence_output" not in output:
                raise ConfigError(f"backbone: {backbone.architecture} has no sequence_output; expected a KerasHub "
                                  f"text backbone (BertBackbone, ...)")
            output = output["sequence_output"]
        return keras.Model(backbone.model.inputs, output, name="sequence_encoder")

    def build_model(self, backbone, info, backbone_training: bool = False):
        """token ids + padding mask -> the text backbone (inference mode) -> token pooling -> classifier head."""
        import keras

        from transferkit.models.backbones import InferenceMode
        from transferkit.plugins.text_classification.layers import SegmentIds, TokenPooling

        if "token_ids" not in {t.name for t in backbone.model.inputs}:
            raise ConfigError(f"backbone: {backbone.architecture} does not take token ids; text_classification "
                              f"needs a KerasHub text backbone such as BertBackbone")
        if not set(self.unused_backbone_layers) <= backbone.unused_layers:
            raise ConfigError(f"backbone: load it with {type(self).__name__}.load_backbone, which leaves out the "
                              f"layers this task never uses ({', '.join(self.unused_backbone_layers)})")
        length = self.preprocessor(info).sequence_length
        token_ids = keras.Input((length,), dtype="int32", name="token_ids")
        padding_mask = keras.Input((length,), dtype="int32", name="padding_mask")
        encoder = self._sequence_encoder(backbone)
        if not backbone_training:
            encoder = InferenceMode(encoder, name="encoder_inference")
        tokens = encoder(self._backbone_inputs(backbone, token_ids, padding_mask, SegmentIds(name="segment_ids")))
        pooled = TokenPooling(self.task_config.head.pooling, name="pool")(tokens, padding_mask)
        outputs = self.classifier_head(backbone, info, backbone.feature_dim_of("sequence_output"))(pooled)
        return keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, outputs, name="text_classifier")

    def register_keras_objects(self) -> None:
        import transferkit.plugins.text_classification.layers  # noqa: F401

    def cache_split(self, model, backbone):
        """Pooled features while the whole backbone is frozen; the cut after the last frozen transformer layer otherwise."""
        import keras

        from transferkit.models.backbones import InferenceMode
        from transferkit.plugins.text_classification.layers import AsMask, TokenPooling

        head = model.get_layer("classifier_head")
        inputs = {name: model.get_layer(name).output for name in ("token_ids", "padding_mask")}
        if backbone.is_frozen():
            pooled = model.get_layer("pool").output
            return CacheSplit(extractor=keras.Model(inputs, pooled, name="pooled_extractor"), trainable=head,
                              key="pooled")
        layers = self._transformer_layers(backbone)
        trainable_layers = [layer for layer in layers if layer.trainable_weights]
        if backbone.frozen_prefix() == 0 or not layers or not trainable_layers:
            return None
        first = layers.index(trainable_layers[0])
        if any(not layer.trainable_weights for layer in layers[first:]):
            return None  # a frozen layer above a trainable one: no single cut
        cut_name = layers[first - 1].name if first else "embeddings_dropout"
        below = keras.Model(backbone.model.inputs, backbone.model.get_layer(cut_name).output, name="frozen_encoder")
        segments = model.get_layer("segment_ids") if self._takes_segments(backbone) else None
        hidden = below(self._backbone_inputs(backbone, inputs["token_ids"], inputs["padding_mask"], segments),
                       training=False)
        extractor = keras.Model(inputs, {"hidden": hidden, "padding_mask": inputs["padding_mask"]},
                                name=f"cut_extractor_{first}")
        length, width = hidden.shape[1], hidden.shape[2]
        cached_hidden = keras.Input((length, width), name="hidden")
        cached_mask = keras.Input((length,), name="padding_mask")
        mask = AsMask(name="as_mask")(cached_mask)
        x = cached_hidden
        for layer in layers[first:]:
            x = InferenceMode(layer, name=f"{layer.name}_inference")(x, padding_mask=mask)
        pooled = TokenPooling(self.task_config.head.pooling, name="pool")(x, mask)  # no weights: a new one is the same
        trainable = keras.Model({"hidden": cached_hidden, "padding_mask": cached_mask}, head(pooled),
                                name=f"cut_trainable_{first}")
        return CacheSplit(extractor=extractor, trainable=trainable, key=f"cut-{first}")

    # -- evaluation and prediction -------------------------------------------

    def evaluation(self, info, records):
        from transferkit.classification.evaluation import ClassificationEvaluation
        from transferkit.plugins.text_classification.report import write_worst_texts

        class_names = list(info["class_names"])
        return ClassificationEvaluation(
            class_names, self.task_config.head.top_k, records, keep_images=False, worst_count=20,
            write_worst=lambda folder, worst, texts: write_worst_texts(folder / "worst_classified.md", worst,
                                                                       texts, class_names))

    def predict_texts(self, model, texts: list[str], info, top_k: int = 3) -> list[list[tuple[str, float]]]:
        """The `top_k` best (label, score) pairs of each text."""
        results = []
        for start in range(0, len(texts), 64):
            inputs = self.encoder(info)(texts[start:start + 64])
            results += self.ranked(np.asarray(model(inputs, training=False)), list(info["class_names"]), top_k)
        return results

    def predict(self, model, paths, info, save_dir=None, top_k: int = 3, **options):
        """Yields (path, [(label, score), ...]) for each text file (the whole file is one text)."""
        for path in paths:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise TransferkitError(f"{path}: unreadable text file: {type(error).__name__}: {error}") from None
            yield path, self.predict_texts(model, [text], info, top_k)[0]


    def artifacts(self, info) -> dict[str, str]:
        return {**super().artifacts(info), "vocab.txt": "\n".join(self.encoder(info).vocabulary) + "\n"}

    # -- serving ---------------------------------------------------------------

    def serving_signatures(self, model, info):
        from transferkit.plugins.text_classification.serving import text_signatures

        return text_signatures(model, self.encoder(info), info, top_k=self.task_config.head.top_k)

    def serving_examples(self, info, count):
        texts = list(info.get("example_texts", []))[:count] or ["an example text"]
        return [{"text": text.encode("utf-8")} for text in texts]

    def check_serving(self, model, signatures, examples, info):
        import tensorflow as tf

        texts = [example["text"] for example in examples]
        inputs = self.encoder(info)(tf.constant(texts))
        expected = np.asarray(model(inputs, training=False), dtype=np.float32)
        served = signatures["serving_default"](text=tf.constant(texts))
        if served["probabilities"].dtype != tf.float32:
            raise TypeError(f"output 'probabilities' is {served['probabilities'].dtype.name}, expected float32")
        from_ids = signatures["serving_token_ids"](**inputs)
        return [
            ParityCheck("serving_default", float(np.abs(served["probabilities"].numpy() - expected).max())),
            ParityCheck("serving_token_ids", float(np.abs(from_ids["probabilities"].numpy() - expected).max())),
        ]


def _backbone_max_length(backbone) -> int | None:
    """The longest sequence a backbone config or local preset folder declares, or None when it is not known
    without loading it (a named preset, resolved only online)."""
    import json
    import os

    if backbone.config is not None:
        value = backbone.config.get("max_sequence_length")
        return int(value) if isinstance(value, int) else None
    from transferkit.models.presets import resolve_preset

    try:
        folder = resolve_preset(backbone.preset)
    except TransferkitError:
        return None  # the load reports it, with its own message
    if not os.path.isdir(folder):
        return None
    try:
        spec = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for value in (spec.get("max_position_embeddings"), (spec.get("config") or {}).get("max_sequence_length")):
        if isinstance(value, int):
            return value
    return None
