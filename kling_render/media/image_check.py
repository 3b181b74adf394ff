"""The download check of a still (an image made by an image model): it must decode in full as an
image kling-render can send on (PNG, JPEG or WebP), within the size a Kling model takes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from kling_render.errors import DownloadError

__all__ = ["FORMATS", "MAX_IMAGE_BYTES", "CheckedImage", "check_image", "image_suffix"]

FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # what a Kling model takes as an image input (SPEC §4)
MAX_PIXELS = 89_478_485  # Pillow's bomb limit: refused undecoded above it


@dataclass(frozen=True)
class CheckedImage:
    """A still that passed its check: the digest of the bytes checked and its media facts."""

    sha256: str
    media: dict[str, Any]  # format, width, height
    duration: float = 0.0  # a still lasts nothing (the run's checks share one shape)


def check_image(path: Path) -> CheckedImage:
    """The image at ``path`` when it is a whole image of an accepted format; DownloadError
    otherwise (an HTML page, a truncated file, a bomb)."""
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise DownloadError(f"the image is {size} bytes, over the {MAX_IMAGE_BYTES} a Kling model takes")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        with Image.open(path) as img:
            fmt = img.format or ""
            if fmt not in FORMATS:
                raise DownloadError(f"not an image kling-render can send on ({fmt or 'unknown format'})")
            if img.width * img.height > MAX_PIXELS:
                raise DownloadError(f"the image is {img.width}x{img.height}: too many pixels")
            img.load()  # decode in full: a truncated file fails here
            return CheckedImage(digest, {"format": FORMATS[fmt], "width": img.width, "height": img.height})
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DownloadError(f"not a valid image: {exc}") from None


def image_suffix(media: dict[str, Any] | None) -> str:
    """The file suffix of a checked image (``.png``...), from its media facts."""
    fmt = (media or {}).get("format")
    return f".{fmt}" if isinstance(fmt, str) and fmt in FORMATS.values() else ".png"
