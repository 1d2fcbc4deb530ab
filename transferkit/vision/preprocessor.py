"""`ImagePreprocessor`: encoded image -> model pixels, the one definition of an image task's input."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import numpy as np

from transferkit.errors import ConfigError
from transferkit.vision.images import MAX_PIXELS
from transferkit.preprocessing import Preprocessor


@dataclasses.dataclass(frozen=True)
class ImagePreprocessor(Preprocessor):
    """Decodes an image upright to RGB and resizes it to the model's size, the same way everywhere.

    `resize`: crop (central crop to the target aspect, keeping `crop_fraction`
    of the largest one), pad (fit inside, black borders) or stretch.
    `interpolation`: area (box filter when shrinking) or bilinear
    (antialiased). Images declaring more than `max_pixels` pixels are refused
    before decoding. Pixels come out float32 in 0..255, rounded as the
    training pipeline stores them; the backbone's normalisation is the
    model's first layer, not the preprocessor's.

    Example:

    ```python
    pre = ImagePreprocessor(image_size=(64, 64), resize="crop", crop_fraction=0.875)
    pixels = pre.preprocess(tf.io.read_file("cat.jpg"))     # (64, 64, 3) float32
    array = pre.read_file("cat.jpg")                        # (64, 64, 3) uint8, Pillow decoder
    ```
    """

    raw_input = "images"
    edge_steps = ("decode the image upright (apply EXIF orientation) to RGB",
                  "resize as the preprocessor says (resize, crop_fraction, interpolation)",
                  "feed NHWC pixels 0..255 (quantised with the input's scale and zero point for int8)")

    image_size: tuple[int, int] = (224, 224)
    resize: Literal["crop", "pad", "stretch"] = "crop"
    crop_fraction: float = 1.0
    interpolation: Literal["area", "bilinear"] = "bilinear"
    max_pixels: int = MAX_PIXELS

    def __post_init__(self):
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2 or not all(8 <= s <= 4096 for s in size):
            raise ConfigError(f"ImagePreprocessor: image_size must be two integers in [8, 4096], [height, width]. "
                              f"Received: image_size={list(self.image_size)}")
        object.__setattr__(self, "image_size", size)
        if self.resize not in ("crop", "pad", "stretch"):
            raise ConfigError(f"ImagePreprocessor: resize must be one of 'crop', 'pad', 'stretch'. "
                              f"Received: resize={self.resize!r}")
        if self.interpolation not in ("area", "bilinear"):
            raise ConfigError(f"ImagePreprocessor: interpolation must be 'area' or 'bilinear'. "
                              f"Received: interpolation={self.interpolation!r}")
        if not 0.1 <= float(self.crop_fraction) <= 1.0:
            raise ConfigError(f"ImagePreprocessor: crop_fraction must be in [0.1, 1]. "
                              f"Received: crop_fraction={self.crop_fraction!r}")
        if int(self.max_pixels) < size[0] * size[1]:
            raise ConfigError(f"ImagePreprocessor: max_pixels must be at least the pixels of image_size "
                              f"({size[0] * size[1]}). Received: max_pixels={self.max_pixels!r}")

    @classmethod
    def from_legacy_info(cls, info: Mapping[str, Any]) -> "ImagePreprocessor":
        # Older runs recorded the settings as loose keys; a missing one means what those versions did
        # (no crop_fraction: the whole crop; no interpolation: antialiased bilinear).
        return cls(image_size=tuple(info["image_size"]), resize=info.get("resize", "crop"),
                   crop_fraction=float(info.get("crop_fraction", 1.0)),
                   interpolation=info.get("interpolation", "bilinear"),
                   max_pixels=int(info.get("max_pixels", MAX_PIXELS)))

    @property
    def model_input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, 3)

    # -- TensorFlow steps (tf.data, serving graphs) ----------------------------------

    def decode(self, encoded):
        """Encoded bytes (scalar tf.string) -> upright uint8 (H, W, 3); over `max_pixels` is refused."""
        from transferkit.vision.images import decode_encoded

        return decode_encoded(encoded, self.max_pixels)

    def resize_pixels(self, image):
        """(H, W, 3) pixels of any size -> float32 model pixels."""
        from transferkit.vision.images import resize_image

        return resize_image(image, self.image_size, self.resize, self.crop_fraction, self.interpolation)

    def preprocess(self, raw):
        return self.resize_pixels(self.decode(raw))

    # -- files (the in-memory cache and predict, through Pillow for formats TF lacks) ---

    def read_file(self, path: str) -> np.ndarray:
        """One image file -> uint8 model pixels; raises on an unreadable file or one over `max_pixels`."""
        from transferkit.vision.images import decode_image

        return decode_image(path, self.image_size, self.resize, self.crop_fraction, self.max_pixels,
                            self.interpolation)

    def resize_options(self) -> dict[str, Any]:
        """The resize settings as the streaming functions take them."""
        return dict(image_size=self.image_size, resize=self.resize, crop_fraction=self.crop_fraction,
                    max_pixels=self.max_pixels, interpolation=self.interpolation)
