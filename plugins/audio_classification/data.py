"""Reading labelled clips: a folder of class sub-folders of WAV files, or a `path,label` CSV."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from transferkit.errors import DataError
from transferkit.plugins.audio_classification.preprocessor import MAX_CLIP_SECONDS, MAX_RATE, MIN_RATE

AUDIO_SUFFIXES = (".wav", ".wave")


@dataclasses.dataclass(frozen=True)
class Clip:
    path: str
    label: str


def list_clips(source: str | os.PathLike) -> tuple[list[Clip], list[dict[str, str]]]:
    """The labelled clips of a class-folder tree or a `path,label` CSV, and problems with rows or files."""
    source = Path(source)
    if source.is_dir():
        clips = [Clip(str(path), folder.name)
                 for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
                 for path in sorted(folder.rglob("*")) if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()]
        if not clips:
            raise DataError(f"{source}: no .wav files in class sub-folders; expected {source}/<class>/<clip>.wav")
        return clips, []
    if source.suffix.lower() in (".csv", ".tsv") and source.is_file():
        return _clips_from_csv(source)
    raise DataError(f"{source}: not found; expected a folder of class sub-folders of WAV files or a path,label CSV "
                    f"(resolved: {source.resolve()})")


def _clips_from_csv(source: Path) -> tuple[list[Clip], list[dict[str, str]]]:
    clips, problems = [], []
    try:
        with open(source, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter="\t" if source.suffix.lower() == ".tsv" else ","))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{source}: unreadable CSV: {error}") from None
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["path", "label"]:
        raise DataError(f"{source}: expected a header row 'path,label'; found {rows[0] if rows else 'nothing'}")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            problems.append({"path": f"{source}:{number}", "reason": f"expected path,label; found {row}"})
            continue
        path = Path(row[0].strip())
        clips.append(Clip(str(path if path.is_absolute() else source.parent / path), row[1].strip()))
    return clips, problems


def check_rate_and_length(rate: int, samples: int) -> None:
    """A ValueError unless `rate` is in [MIN_RATE, MAX_RATE] Hz and the clip lasts at most MAX_CLIP_SECONDS."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"sample rate {rate} Hz; expected {MIN_RATE} to {MAX_RATE} Hz")
    if samples > MAX_CLIP_SECONDS * rate:
        raise ValueError(f"{samples / rate:.0f} s long, more than the {MAX_CLIP_SECONDS:.0f} s a clip may be")


def read_wav(path: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """A WAV file (or its bytes) -> (mono float32 waveform in [-1, 1], sample rate).

    Integer PCM of 8, 16, 24 or 32 bits and 32/64-bit float, any number of channels (averaged). A truncated
    body, a rate outside [MIN_RATE, MAX_RATE] or a clip longer than MAX_CLIP_SECONDS is a ValueError.
    """
    import warnings

    from scipy.io import wavfile

    source = io.BytesIO(path) if isinstance(path, bytes) else path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", wavfile.WavFileWarning)
        try:
            rate, data = wavfile.read(source, mmap=False)
        except Exception as error:  # scipy's parser raises many types on damaged headers (zero channels, ...)
            raise ValueError(f"not a readable WAV file ({type(error).__name__}: {error})") from None
    for warning in caught:
        # Unknown chunks are skipped, as they should be; a short body is refused, as the serving graph's
        # decoder refuses it, so `predict`, training and the server agree on what a valid clip is.
        if "prematurely" in str(warning.message) or "EOF" in str(warning.message):
            raise ValueError(f"truncated WAV: {warning.message}")
    check_rate_and_length(int(rate), len(data))
    if data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype.kind == "i":
        samples = data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
    elif data.dtype.kind == "f":
        samples = np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    else:
        raise ValueError(f"unsupported sample type {data.dtype}")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


def pcm16_wav(waveform: np.ndarray, rate: int) -> bytes:
    """A mono float waveform as 16-bit PCM WAV bytes: what the serving signature decodes."""
    from scipy.io import wavfile

    buffer = io.BytesIO()
    wavfile.write(buffer, int(rate), (np.clip(waveform, -1.0, 1.0) * 32767.0).astype(np.int16))
    return buffer.getvalue()


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as 16-bit integers (resampling may ring slightly past full scale: clipped)."""
    return np.clip(np.round(waveform * 32767.0), -32768, 32767).astype(np.int16)


@dataclasses.dataclass
class LoadedClips:
    """Clips decoded, resampled and cut to the preprocessor's length, with their labels."""

    waveforms: np.ndarray  # (count, clip_samples) int16: 16-bit samples, half the memory of float32
    labels: np.ndarray  # (count,) int32
    paths: list[str]
    problems: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.labels)


def load_clips(clips: Sequence[Clip], class_names: Sequence[str], preprocessor, on_bad_clip: str = "skip",
               on_progress=None) -> LoadedClips:
    """Decodes every clip once; unreadable, empty or over-long clips and unknown labels are problems."""
    import tensorflow as tf

    index = {name: i for i, name in enumerate(class_names)}
    # One graph for every clip: eager ops would cost milliseconds a clip.
    prepare = tf.function(preprocessor.prepare,
                          input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)])
    waveforms = np.zeros((len(clips), preprocessor.clip_samples), np.int16)
    labels, paths, problems = [], [], []
    for number, clip in enumerate(clips):
        reason = None
        if clip.label not in index:
            reason = f"label {clip.label!r} is not one of the classes {list(class_names)}"
        else:
            try:
                samples, rate = read_wav(clip.path)
                if not len(samples):
                    reason = "the clip holds no samples"
            except Exception as error:  # scipy raises ValueError, OSError and struct errors on bad files
                reason = f"unreadable WAV: {type(error).__name__}: {error}"
        if reason is not None:
            problems.append({"path": clip.path, "reason": reason})
            if on_bad_clip == "error":
                raise DataError.for_bad_inputs(problems, "data.on_bad_clip")
        else:
            waveforms[len(labels)] = to_int16(prepare(samples, np.int32(rate)).numpy())
            labels.append(index[clip.label])
            paths.append(clip.path)
        if on_progress is not None:
            on_progress(number + 1, len(clips))
    return LoadedClips(waveforms[:len(labels)], np.asarray(labels, np.int32), paths, problems)
