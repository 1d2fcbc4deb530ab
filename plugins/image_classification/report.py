"""The image classifier's report helpers: which validation files do not decode, and why."""

from __future__ import annotations

from typing import Sequence


def decode_error(path: str, max_pixels: int) -> str | None:
    """Why a file does not decode with the decoder training uses, or None when it does."""
    from transferkit.vision.images import read_image

    try:
        read_image(path, max_pixels)
    except Exception as error:  # TensorFlow and Pillow raise many types for a bad body
        return f"did not decode: {type(error).__name__}: {str(error)[:200]}"
    return None


def undecodable_files(paths: Sequence[str], max_pixels: int) -> list[dict[str, str]]:
    """`{"path", "reason"}` of each file among `paths` that does not decode."""
    found = ((path, decode_error(path, max_pixels)) for path in paths)
    return [{"path": path, "reason": reason} for path, reason in found if reason is not None]
