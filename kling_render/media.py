"""Media inputs: where a path points, whether it stays in the project, image limits, content hashes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from kling_render.catalog import IMAGE_MAX_BYTES, Model
from kling_render.fsutil import sha256_file

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".m4v")
AUDIO_EXTENSIONS = (".mp3", ".wav", ".m4a", ".aac", ".flac", ".ogg", ".opus")
_PIL_FORMATS = {"PNG": ("png",), "JPEG": ("jpg", "jpeg"), "WEBP": ("webp",)}


class MediaProblem(Exception):
    """A media input is unusable; the message is one readable line."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png" | "jpeg" | "webp" | other lower-case PIL name
    width: int
    height: int
    size_bytes: int


def is_url(value: str) -> bool:
    return "://" in value


def resolve_inside(base_dir: Path, value: str) -> Path:
    """``value`` as a path inside ``base_dir`` (relative to it, or absolute within it)."""
    if is_url(value):
        scheme = value.split("://", 1)[0].lower()
        raise MediaProblem(f"{value!r}: only https URLs are accepted, not {scheme}://")
    raw = Path(value)
    candidate = raw if raw.is_absolute() else base_dir / raw
    resolved = Path(os.path.realpath(candidate))
    root = Path(os.path.realpath(base_dir))
    if resolved != root and root not in resolved.parents:
        raise MediaProblem(f"{value!r} is outside the project directory")
    return resolved


class MediaIndex:
    """Memoised facts about local media files, so 10,000 shots sharing 3 images read them 3 times."""

    def __init__(self) -> None:
        self._images: dict[Path, ImageInfo] = {}
        self._hashes: dict[Path, str] = {}

    def image(self, path: Path) -> ImageInfo:
        info = self._images.get(path)
        if info is None:
            info = self._images[path] = _read_image(path)
        return info

    def sha256(self, path: Path) -> str:
        digest = self._hashes.get(path)
        if digest is None:
            digest = self._hashes[path] = sha256_file(path)
        return digest


def _read_image(path: Path) -> ImageInfo:
    if not path.is_file():
        raise MediaProblem(f"file not found: {path.name}")
    size = path.stat().st_size
    try:
        with Image.open(path) as img:
            fmt = (img.format or "").upper()
            width, height = img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaProblem(f"{path.name} is not a readable image ({exc.__class__.__name__})") from None
    return ImageInfo(format=fmt.lower(), width=width, height=height, size_bytes=size)


def check_image(info: ImageInfo, path: Path, model: Model) -> list[str]:
    """Every limit of ``model`` that the image breaks, as readable sentences."""
    problems: list[str] = []
    ext = path.suffix.lower().lstrip(".")
    allowed = model.image_formats
    content_exts = _PIL_FORMATS.get(info.format.upper(), (info.format,))
    if ext not in allowed or not any(e in allowed for e in content_exts):
        kind = info.format.upper() or "unknown"
        problems.append(f"{path.name} is {kind}; {model.id} takes {', '.join(allowed)} images")
    if info.size_bytes > IMAGE_MAX_BYTES:
        problems.append(f"{path.name} is {info.size_bytes / 1e6:.1f} MB; the limit is 10 MB")
    if model.image_min_side and min(info.width, info.height) < model.image_min_side:
        problems.append(
            f"{path.name} is {info.width}x{info.height} px; {model.id} needs at least "
            f"{model.image_min_side} px a side"
        )
    if model.image_max_aspect:
        ratio = info.width / info.height
        limit = model.image_max_aspect
        if ratio > limit or ratio < 1 / limit:
            problems.append(
                f"{path.name} has aspect ratio {ratio:.2f}:1 ({info.width}x{info.height}); {model.id} "
                f"needs between 1:{limit:g} and {limit:g}:1"
            )
    return problems
