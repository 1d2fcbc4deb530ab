"""Generated clips for tests and examples of the audio task: tones and chirps, no recordings needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# Each class is a sound with its own spectrogram shape: a low tone, a high tone, a rising chirp.
SOUNDS = ("low", "high", "chirp")


def synthesize(kind: str, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One mono clip of `kind` with a random pitch jitter, onset and noise; float32 in [-1, 1]."""
    time = np.arange(int(seconds * rate)) / rate
    jitter = rng.uniform(0.9, 1.1)
    if kind == "low":
        phase = 2 * np.pi * 300 * jitter * time
    elif kind == "high":
        phase = 2 * np.pi * 2400 * jitter * time
    elif kind == "chirp":
        phase = 2 * np.pi * (400 * time + 0.5 * 3000 * time ** 2 / seconds) * jitter
    else:
        raise ValueError(f"synthesize: kind must be one of {SOUNDS}. Received: kind={kind!r}")
    envelope = np.clip((time - rng.uniform(0, 0.2 * seconds)) * 40, 0, 1) * np.clip(
        (rng.uniform(0.7, 1.0) * seconds - time) * 40, 0, 1)
    clip = 0.6 * envelope * np.sin(phase) + rng.normal(0, 0.01, time.shape)
    return np.clip(clip, -1, 1).astype(np.float32)


def make_clip_folder(root: str | os.PathLike, classes: tuple[str, ...] = SOUNDS, per_class: int = 6,
                     seconds: float = 0.5, seed: int = 0) -> Path:
    """Writes `root/<class>/<class>_NNN.wav`, cycling through the WAV forms the reader must take.

    16-bit PCM mono at 16 kHz, 16-bit stereo at 22.05 kHz, 32-bit float at 8 kHz and 8-bit at 11.025 kHz,
    so every test run also checks resampling and channel mixing.
    """
    from scipy.io import wavfile

    forms = ((16000, np.int16, 1), (22050, np.int16, 2), (8000, np.float32, 1), (11025, np.uint8, 1))
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rate, dtype, channels = forms[i % len(forms)]
            clip = synthesize(name, seconds * rng.uniform(0.8, 1.2), rate, rng)
            if dtype == np.int16:
                data = (clip * 32767).astype(np.int16)
            elif dtype == np.uint8:
                data = (clip * 127 + 128).astype(np.uint8)
            else:
                data = clip
            if channels == 2:
                data = np.stack([data, data], axis=1)
            wavfile.write(folder / f"{name}_{i:03d}.wav", rate, data)
    return root


def tiny_audio_config(train: str | os.PathLike, **sections: Any) -> dict[str, Any]:
    """A plain config mapping for audio classification on the tiny backbone, 32x32 spectrograms of 0.5 s."""
    from transferkit.testing import tiny_vision_config

    config = tiny_vision_config("audio_classification", train, 32, **sections)
    data = config["data"]
    data.setdefault("clip_seconds", 0.5)
    data.setdefault("num_mels", 32)
    return config
