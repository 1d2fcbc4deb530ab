"""The audio-classification task: spoken words or sounds, on an ImageNet backbone that reads spectrograms."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from transferkit.errors import DataError, TransferkitError
from transferkit.plugins.audio_classification import data as data_lib
from transferkit.plugins.audio_classification.config import AudioClassificationConfig
from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor
from transferkit.registry import register_task
from transferkit.splits import SplitSource, read_splits
from transferkit.task import ParityCheck, TaskData, input_ids
from transferkit.vision.classifier import PixelClassifier

AUDIO_INPUT = "audio"


@register_task("audio_classification")
class AudioClassification(PixelClassifier):
    """Fine-tunes an image backbone on log-mel spectrograms to label clips from class folders of WAV files.

    ImageNet pretraining carries over to spectrograms (Palanisamy et al. 2020,
    ESC-50 and UrbanSound8K; Gong et al. 2021, AST), so the image backbones,
    freeze plans, stages, feature cache and `compare` serve audio unchanged:
    the preprocessor (`AudioPreprocessor`, saved in `info.json`) turns each clip
    into an image, in `tf.data`, in `predict` and inside the SavedModel.

    Example:

    ```python
    from transferkit import load_config
    from transferkit.runner import train

    config = load_config("benchmarks/configs/spoken_words.yaml")   # task: audio_classification
    run_dir = train(config, "runs/spoken_words")
    ```
    """

    config_class = AudioClassificationConfig
    preprocessor_class = AudioPreprocessor

    @classmethod
    def example_config(cls, root):
        from transferkit.plugins.audio_classification.testing import make_clip_folder, tiny_audio_config

        return tiny_audio_config(make_clip_folder(Path(root) / "clips", per_class=6))

    # -- data ----------------------------------------------------------------

    def build_preprocessor(self) -> AudioPreprocessor:
        """The data section's preprocessor; `front_end: auto` takes the one the backbone preset declares
        (YAMNet's log-mel for an AudioSet YAMNet), else the spectrogram image."""
        import dataclasses

        preprocessor = self.task_config.data.preprocessor()
        if preprocessor.front_end != "auto":
            return preprocessor
        from transferkit.models.presets import preset_input

        backbone = self.config.backbone
        declared = preset_input(backbone.preset) if backbone.config is None else {}
        front_end = declared.get("front_end") if declared.get("front_end") in ("spectrogram", "yamnet") else "spectrogram"
        return dataclasses.replace(preprocessor, front_end=front_end)

    def datasets(self) -> TaskData:
        import tensorflow as tf

        cfg = self.task_config.data
        seed = self.config.training.seed
        preprocessor = self.build_preprocessor()
        splits = read_splits(
            SplitSource(cfg.train, cfg.val, cfg.val_split, cfg.train_fraction, seed, cfg.on_bad_clip,
                        "data.on_bad_clip"),
            read=lambda path, names: data_lib.list_clips(path),
            class_names=lambda clips: list(cfg.class_names) if cfg.class_names else sorted({c.label for c in clips}),
            strata=lambda clips, names: [c.label for c in clips])
        train_clips, val_clips, class_names, problems = splits.train, splits.val, splits.class_names, splits.problems
        train = data_lib.load_clips(train_clips, class_names, preprocessor, cfg.on_bad_clip)
        val = data_lib.load_clips(val_clips, class_names, preprocessor, cfg.on_bad_clip)
        problems += train.problems + val.problems
        for split, name in ((train, "training"), (val, "validation")):
            if not len(split):
                raise DataError(f"no usable {name} clips: " + "; ".join(
                    f"{p['path']}: {p['reason']}" for p in problems[:5]))
        num_classes = len(class_names)
        augment = self.task_config.augment
        waveform_augment = _waveform_augmenter(augment, preprocessor, seed)
        spec_augment = _spec_augmenter(augment, preprocessor, seed)

        def batches(loaded, shuffle: bool, augmented: bool = False):
            ds = tf.data.Dataset.from_tensor_slices((loaded.waveforms, loaded.labels))
            if shuffle:
                ds = ds.shuffle(len(loaded), seed=seed, reshuffle_each_iteration=True)
            ds = ds.batch(cfg.batch_size).map(lambda w, y: (tf.cast(w, tf.float32) / 32767.0, y),
                                              num_parallel_calls=tf.data.AUTOTUNE)
            if augmented and waveform_augment is not None:
                ds = ds.map(waveform_augment, num_parallel_calls=tf.data.AUTOTUNE)
            ds = ds.map(lambda w, y: (preprocessor.images(w), tf.one_hot(y, num_classes)),
                        num_parallel_calls=tf.data.AUTOTUNE)
            if augmented and spec_augment is not None:
                ds = ds.map(spec_augment, num_parallel_calls=tf.data.AUTOTUNE)
            return ds

        def indexed(loaded):  # validation batches with each clip's row, for the evaluation
            ds = tf.data.Dataset.from_tensor_slices((loaded.waveforms, loaded.labels, tf.range(len(loaded))))
            return ds.batch(cfg.batch_size).map(
                lambda w, y, rows: (preprocessor.images(tf.cast(w, tf.float32) / 32767.0), tf.one_hot(y, num_classes),
                                    rows), num_parallel_calls=tf.data.AUTOTUNE)

        unaugmented = batches(train, shuffle=True)
        info = {
            "class_names": class_names,
            "image_size": list(preprocessor.image_size),
            "preprocessor": preprocessor.get_config(),
            "num_train": len(train),
            "num_val": len(val),
            "train_class_counts": np.bincount(train.labels, minlength=num_classes).tolist(),
        }
        return TaskData(
            train=(batches(train, True, True) if augment.enabled else unaugmented).prefetch(tf.data.AUTOTUNE),
            val=batches(val, shuffle=False).prefetch(tf.data.AUTOTUNE),
            val_indexed=indexed(val).prefetch(tf.data.AUTOTUNE),
            val_records=list(val.paths),
            train_plain=batches(train, shuffle=False),
            info=info,
            train_augmented=augment.enabled,
            train_unaugmented=unaugmented.prefetch(tf.data.AUTOTUNE),
            problems=problems,
            steps_per_epoch=math.ceil(len(train) / cfg.batch_size),
            examples=list(val.paths),
            input_ids={"train": input_ids(train.paths), "val": input_ids(val.paths)},
        )

    # -- evaluation and prediction -------------------------------------------

    def read_input(self, path: str, info: Mapping[str, Any]) -> np.ndarray:
        """One WAV file -> the model's input image, as training prepared it."""
        import tensorflow as tf

        preprocessor = self.preprocessor(info)
        try:
            samples, rate = data_lib.read_wav(path)
            if not len(samples):
                raise ValueError("the clip holds no samples")
        except Exception as error:
            raise TransferkitError(f"{path}: unreadable WAV: {type(error).__name__}: {error}") from None
        return preprocessor.image(preprocessor.prepare(tf.constant(samples), rate)).numpy()

    # -- serving ---------------------------------------------------------------

    def serving_signatures(self, model, info: dict[str, Any]) -> dict[str, Any]:
        """`serving_default` takes WAV bytes (`audio`, 16-bit PCM); `serving_pixels` the spectrogram images."""
        import tensorflow as tf

        from transferkit.classification.outputs import classification_outputs

        preprocessor = self.preprocessor(info)
        class_names = list(info["class_names"])
        shape = list(preprocessor.model_input_shape)
        k = max(1, min(self.task_config.head.top_k, len(class_names)))

        def outputs(images):
            return classification_outputs(model(images, training=False), class_names, k)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=AUDIO_INPUT)])
        def serve_audio(audio):
            images = tf.map_fn(preprocessor.preprocess, audio, parallel_iterations=16,
                               fn_output_signature=tf.TensorSpec(shape, tf.float32))
            return outputs(images)

        @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name="pixels")])
        def serve_pixels(pixels):
            return outputs(pixels)

        return {"serving_default": serve_audio, "serving_pixels": serve_pixels}

    def serving_examples(self, info, count):
        """Recorded validation clips as 16-bit PCM WAV bytes (what the signature decodes); tones if they are gone."""
        encoded = []
        for path in info.get("examples", []):
            if len(encoded) >= count:
                break
            try:
                encoded.append(data_lib.pcm16_wav(*data_lib.read_wav(path)))
            except Exception:
                continue
        if not encoded and count:
            preprocessor = self.preprocessor(info)
            time = np.arange(preprocessor.clip_samples) / preprocessor.sample_rate
            for pitch in (220.0, 440.0, 880.0, 1760.0)[:count]:
                encoded.append(data_lib.pcm16_wav(0.5 * np.sin(2 * np.pi * pitch * time), preprocessor.sample_rate))
        return [{AUDIO_INPUT: clip} for clip in encoded]

    def check_serving(self, model, signatures, examples, info):
        import tensorflow as tf

        preprocessor = self.preprocessor(info)
        encoded = [example[AUDIO_INPUT] for example in examples]
        # The Keras side reads the clips as training did (scipy, then the preprocessor's ops).
        images = tf.stack([preprocessor.image(preprocessor.prepare(tf.constant(samples), rate))
                           for samples, rate in (data_lib.read_wav(e) for e in encoded)])
        expected = np.asarray(model(images, training=False), dtype=np.float32)
        from_audio = signatures["serving_default"](audio=tf.constant(encoded))
        from_pixels = signatures["serving_pixels"](pixels=images)
        return [
            ParityCheck("serving_default", float(np.abs(from_audio["probabilities"].numpy() - expected).max())),
            ParityCheck("serving_pixels", float(np.abs(from_pixels["probabilities"].numpy() - expected).max())),
        ]


def _waveform_augmenter(augment, preprocessor: AudioPreprocessor, seed: int):
    """A batch map over (waveforms, labels): a random time shift, then white noise at a random SNR."""
    if not (augment.time_shift or augment.noise_snr_db is not None):
        return None
    import tensorflow as tf

    size = preprocessor.clip_samples
    max_shift = int(augment.time_shift * size)
    generator = tf.random.Generator.from_seed(seed)

    def apply(waveforms, labels):
        count = tf.shape(waveforms)[0]
        if max_shift:
            shifts = generator.uniform([count], -max_shift, max_shift + 1, dtype=tf.int32)
            positions = tf.range(size)[None, :] - shifts[:, None]
            inside = tf.logical_and(positions >= 0, positions < size)
            moved = tf.gather(waveforms, tf.clip_by_value(positions, 0, size - 1), batch_dims=1)
            waveforms = tf.where(inside, moved, 0.0)  # the sound moves; what it leaves is silence
        if augment.noise_snr_db is not None:
            low, high = augment.noise_snr_db
            snr = generator.uniform([count, 1], low, high)
            # The signal's power where it sounds: padding and pauses would otherwise make the noise louder.
            peak = tf.reduce_max(tf.abs(waveforms), axis=1, keepdims=True)
            active = tf.cast(tf.abs(waveforms) > 0.01 * peak, tf.float32)
            power = tf.reduce_sum(tf.square(waveforms) * active, axis=1, keepdims=True) / tf.maximum(
                tf.reduce_sum(active, axis=1, keepdims=True), 1.0) + 1e-12
            scale = tf.sqrt(power / tf.pow(10.0, snr / 10.0))
            waveforms = waveforms + scale * generator.normal(tf.shape(waveforms))
        return waveforms, labels

    return apply


def _spec_augmenter(augment, preprocessor: AudioPreprocessor, seed: int):
    """A batch map over (images, labels): SpecAugment's time and frequency masks (Park et al. 2019)."""
    if not (augment.time_masks or augment.freq_masks):
        return None
    import tensorflow as tf

    height, width = preprocessor.model_input_shape[:2]  # frequency up, time across, in both front ends
    generator = tf.random.Generator.from_seed(seed + 1)

    def masks(count, length, number, fraction, axis):
        keep = tf.ones([count, length], tf.bool)
        widest = max(1, int(fraction * length))
        for _ in range(number):
            sizes = generator.uniform([count, 1], 0, widest + 1, dtype=tf.int32)
            starts = generator.uniform([count, 1], 0, length, dtype=tf.int32)
            index = tf.range(length)[None, :]
            keep = tf.logical_and(keep, tf.logical_not(tf.logical_and(index >= starts, index < starts + sizes)))
        shape = [count, length, 1, 1] if axis == 1 else [count, 1, length, 1]
        return tf.reshape(tf.cast(keep, tf.float32), shape)

    def apply(images, labels):
        count = tf.shape(images)[0]
        if augment.freq_masks:
            images = images * masks(count, height, augment.freq_masks, augment.freq_mask_width, 1)
        if augment.time_masks:
            images = images * masks(count, width, augment.time_masks, augment.time_mask_width, 2)
        return images, labels

    return apply
