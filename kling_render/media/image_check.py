"""The download check of a still (an image made by an image model): it must decode in full as an
image kling-render can send on (PNG, JPEG or WebP), within the size a Kling model takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from kling_render.errors import DownloadError

__all__ = ["FORMATS", "MAX_IMAGE_BYTES", "check_image", "image_suffix"]

FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # what a Kling model takes as an image input (SPEC §4)
MAX_PIXELS = 89_478_485  # Pillow's bomb limit: refused undecoded above it


def check_image(path: Path) -> tuple[float, dict[str, Any]]:
    """(0.0, its media facts: format, width, height) when ``path`` is a whole image of an accepted
    format; DownloadError otherwise (an HTML page, a truncated file, a bomb)."""
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise DownloadError(f"the image is {size} bytes, over the {MAX_IMAGE_BYTES} a Kling model takes")
    try:
        with Image.open(path) as img:
            fmt = img.format or ""
            if fmt not in FORMATS:
                raise DownloadError(f"not an image kling-render can send on ({fmt or 'unknown format'})")
            if img.width * img.height > MAX_PIXELS:
                raise DownloadError(f"the image is {img.width}x{img.height}: too many pixels")
            img.load()  # decode in full: a truncated file fails here
            return 0.0, {"format": FORMATS[fmt], "width": img.width, "height": img.height}
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DownloadError(f"not a valid image: {exc}") from None


def image_suffix(media: dict[str, Any] | None) -> str:
    """The file suffix of a checked image (``.png``...), from its media facts."""
    fmt = (media or {}).get("format")
    return f".{fmt}" if isinstance(fmt, str) and fmt in FORMATS.values() else ".png"
