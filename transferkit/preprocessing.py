"""The preprocessor contract: a task's raw input -> its model's input, typed and saved with the run.

A preprocessor holds every setting that turns what a user or a client sends
(encoded image bytes, WAV bytes, text) into what the model reads (pixels, a
spectrogram image, token ids). It is a frozen dataclass, so it is validated
once and cannot drift; `get_config` / `from_config` round-trip it through
JSON. The run saves it in `info.json` (`"preprocessor"`) and as
`preprocessor.json` next to the model and in the SavedModel's assets, and the
task's `tf.data` pipeline, `predict`, serving signatures and warmup examples
all build their steps from the same object.

Runs written before preprocessors existed recorded loose keys in `info.json`
(`image_size`, `resize`, ...); `from_info` reads those through each class's
`from_legacy_info`, so old runs keep loading and serving.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, ClassVar, Mapping

INFO_KEY = "preprocessor"
FILE_NAME = "preprocessor.json"


class Preprocessor:
    """Base of the typed preprocessors; subclasses are frozen dataclasses.

    `raw_input` names the serving signature's input ("images", "audio",
    "text"); `preprocess(raw)` maps one raw example (a scalar string tensor)
    to one model input with TensorFlow ops only, so the same function runs in
    `tf.data`, eager `predict` and a SavedModel that stock TF Serving loads.

    Example:

    ```python
    pre = ImagePreprocessor(image_size=(64, 64))           # a subclass
    same = ImagePreprocessor.from_config(json.loads(json.dumps(pre.get_config())))
    assert same == pre
    ```
    """

    raw_input: ClassVar[str] = ""
    # What an app does around an edge export (a LiteRT or ONNX file takes model inputs, not raw
    # files), written into the file's signature.json.
    edge_steps: ClassVar[tuple[str, ...]] = ("prepare the raw input as this preprocessor's settings say",)
    # The fields a new run must share with a run whose backbone it starts from (`backbone.preset: RUN`):
    # those that change what the backbone's input features mean. An image's size may change; a spectrogram's
    # mel bands may not.
    matched_on_transfer: ClassVar[tuple[str, ...]] = ()

    # -- serialisation ---------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists), with the class name for a reader that meets it alone."""
        config = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"class_name": type(self).__name__, **config}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]):
        """The preprocessor of `get_config()`'s output; unknown settings are an error naming them."""
        values = {k: v for k, v in config.items() if k != "class_name"}
        named = config.get("class_name")
        if named is not None and named != cls.__name__:
            raise ValueError(f"{cls.__name__}: the saved settings are of a {named}. Received: class_name={named!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown settings {unknown}; expected some of {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            if isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
                values[name] = tuple(value)
        return cls(**values)

    @classmethod
    def from_legacy_info(cls, info: Mapping[str, Any]):
        """The preprocessor that a run written before preprocessors existed used, from its loose info keys."""
        raise ValueError(f"{cls.__name__}: the run's info.json records no preprocessor")

    @classmethod
    def from_info(cls, info: Mapping[str, Any]):
        """A run's preprocessor: recorded in its info, or rebuilt from an older run's loose keys."""
        if INFO_KEY in info:
            return cls.from_config(info[INFO_KEY])
        return cls.from_legacy_info(info)

    def to_json(self) -> str:
        """The text of `preprocessor.json`."""
        return json.dumps(self.get_config(), indent=2) + "\n"

    # -- the steps -------------------------------------------------------------------

    def preprocess(self, raw):
        """One raw example (a scalar tf.string) -> one model input, with TensorFlow ops."""
        raise NotImplementedError(f"{type(self).__name__} does not preprocess raw inputs")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
