"""A Speech-Commands-like set of spoken words, synthesised offline with espeak-ng; split by voice.

    python benchmarks/spoken_words.py OUT [--words yes,no,...] [--variants N] [--seed 0]

writes OUT/train/<word>/*.wav and OUT/val/<word>/*.wav (22.05 kHz, 16-bit mono, as
espeak-ng speaks them, with white noise at 15-40 dB SNR) and OUT/voices.json. A
voice is an English accent with a voice variant (timbre); validation holds out
whole variants, so every validation clip is spoken by a variant the model never
heard. Each (voice, word) clip draws its own speed and pitch. espeak-ng is
deterministic, so the same arguments give the same set.

Needs the `espeak-ng` program (Debian: `apt-get install espeak-ng`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# espeak-ng's own English voices (the mbrola ones need a separate synthesiser).
ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SystemExit("spoken_words: espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    return path


def variants() -> list[str]:
    """The variant files espeak-ng ships (`!v/NAME`), sorted."""
    listing = subprocess.run([espeak(), "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = []
    for line in listing.splitlines()[1:]:
        fields = line.split()
        for field in fields:
            if field.startswith("!v/"):
                names.append(field[3:])
    return sorted(set(names))


def speak(word: str, accent: str, variant: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    from scipy.io import wavfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
        subprocess.run([espeak(), "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "-w",
                        handle.name, word], check=True, capture_output=True)
        rate, data = wavfile.read(handle.name)
    return data.astype(np.float32) / 32768.0, int(rate)


def build(out: Path, words=WORDS, variant_count: int | None = None, val_share: float = 0.2,
          seed: int = 0) -> dict:
    from scipy.io import wavfile

    rng = np.random.default_rng(seed)
    names = variants()
    if variant_count:
        names = sorted(rng.choice(names, size=min(variant_count, len(names)), replace=False).tolist())
    order = rng.permutation(len(names))
    held = {names[i] for i in order[:max(1, int(round(len(names) * val_share)))]}
    jobs = []
    for accent in ACCENTS:
        for variant in names:
            for word in words:
                jobs.append((word, accent, variant, int(rng.integers(130, 201)), int(rng.integers(30, 71)),
                             float(rng.uniform(15, 40)), int(rng.integers(2**31))))
    out.mkdir(parents=True, exist_ok=True)

    def one(job):
        word, accent, variant, speed, pitch, snr, noise_seed = job
        clip, rate = speak(word, accent, variant, speed, pitch)
        if not len(clip) or not np.any(clip):
            return None
        power = float(np.mean(clip ** 2))
        noise = np.random.default_rng(noise_seed).normal(0, np.sqrt(power / 10 ** (snr / 10)), clip.shape)
        split = "val" if variant in held else "train"
        folder = out / split / word
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{accent}+{variant}_s{speed}_p{pitch}.wav"
        wavfile.write(path, rate, (np.clip(clip + noise, -1, 1) * 32767).astype(np.int16))
        return split

    with ThreadPoolExecutor(max_workers=4) as pool:
        splits = [s for s in pool.map(one, jobs) if s]
    summary = {"words": list(words), "accents": list(ACCENTS), "train_variants": sorted(set(names) - held),
               "val_variants": sorted(held), "train_clips": splits.count("train"), "val_clips": splits.count("val"),
               "seed": seed}
    (out / "voices.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--words", default=",".join(WORDS))
    parser.add_argument("--variants", type=int, default=None, help="a seeded sample of this many variants (all)")
    parser.add_argument("--val-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"spoken_words: {args.out} is not empty; choose a new folder", file=sys.stderr)
        return 2
    summary = build(args.out, tuple(w for w in args.words.split(",") if w), args.variants, args.val_share, args.seed)
    print(f"{summary['train_clips']} training clips ({len(summary['train_variants'])} variants x "
          f"{len(summary['accents'])} accents), {summary['val_clips']} validation clips from "
          f"{len(summary['val_variants'])} unseen variants, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
