"""`ImageInputSection`: the `data` keys that make an `ImagePreprocessor`, declared once for every image task."""

from __future__ import annotations

import dataclasses
from typing import Literal

from transferkit.config import check
from transferkit.typed import ABSENT
from transferkit.vision.images import MAX_PIXELS


@dataclasses.dataclass(frozen=True)
class ImageInputSection:
    """How images become the model's input: one set of fields, defaults and checks for every image task's
    `data` section, and the run's `ImagePreprocessor` built from them (`preprocessor()`).

    A task's data config inherits it and calls `check_image_input()` from its `__post_init__`. The field
    names are the preprocessor's, so the preprocessor is built by name and nothing is listed twice.

    Example:

    ```python
    @dataclasses.dataclass(frozen=True)
    class DataConfig(ImageInputSection, ImageDataSection):
        train: str = ""

        def __post_init__(self):
            self.check_image_input()
    ```
    """

    image_size: tuple[int, int] = (224, 224)
    resize: Literal["crop", "pad", "stretch"] = "crop"
    # With resize: crop, keep this central fraction of the largest crop: 0.875 is the ImageNet evaluation
    # crop that pretrained backbones are measured with.
    crop_fraction: float = 0.875
    # area: a box filter when shrinking (twice as fast as bilinear on photos, see docs/data.md); bilinear:
    # antialiased bilinear, what runs before this option existed used. Recorded with the run, so serving
    # and predict resize the same way.
    interpolation: Literal["area", "bilinear"] = dataclasses.field(default="area", metadata={ABSENT: "bilinear"})
    # Images whose header declares more pixels are bad inputs, here and in the exported model.
    max_pixels: int = MAX_PIXELS

    def preprocessor(self):
        """The `ImagePreprocessor` of these settings: what the model's input is made with."""
        from transferkit.vision.preprocessor import ImagePreprocessor

        names = [field.name for field in dataclasses.fields(ImagePreprocessor)]
        return ImagePreprocessor(**{name: getattr(self, name) for name in names})

    def check_image_input(self) -> None:
        """Raises ConfigError naming the `data.` key that is out of range."""
        check(len(self.image_size) == 2 and all(8 <= s <= 4096 for s in self.image_size), "data.image_size",
              list(self.image_size), "two integers in [8, 4096], [height, width]")
        check(0.1 <= self.crop_fraction <= 1.0, "data.crop_fraction", self.crop_fraction, "a number in [0.1, 1]")
        check(self.max_pixels >= self.image_size[0] * self.image_size[1], "data.max_pixels", self.max_pixels,
              "an integer >= the pixels of data.image_size")
