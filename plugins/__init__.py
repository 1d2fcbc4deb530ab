"""Built-in task plugins, registered by the explicit imports below."""

from transferkit.plugins import image_classification  # noqa: F401  (registers "image_classification")
from transferkit.plugins import object_detection  # noqa: F401  (registers "object_detection")
from transferkit.plugins import text_classification  # noqa: F401  (registers "text_classification")
from transferkit.plugins import audio_classification  # noqa: F401  (registers "audio_classification")
