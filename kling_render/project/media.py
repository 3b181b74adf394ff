"""Media inputs: where a path points, whether it stays in the project, image limits, content hashes."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from kling_render.catalog.catalog import IMAGE_MAX_BYTES, Model
from kling_render.fsutil import sha256_file

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".m4v")
AUDIO_EXTENSIONS = (".mp3", ".wav", ".m4a", ".aac", ".flac", ".ogg", ".opus")
_PIL_FORMATS = {"PNG": ("png",), "JPEG": ("jpg", "jpeg"), "WEBP": ("webp",)}
_PIXELS = re.compile(r"\((\d+) pixels\)")
_LOG_CONTEXT = re.compile(r"^\[[^\]]*\]\s*")  # ffmpeg's "[in#0 @ 0x55c4...] " prefix


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
        self._images: dict[Path, ImageInfo | MediaProblem] = {}
        self._hashes: dict[Path, str] = {}
        self._streams: dict[tuple[Path, str], MediaProblem | None] = {}
        self._durations: dict[Path, float | MediaProblem] = {}

    def image(self, path: Path) -> ImageInfo:
        info = self._images.get(path)
        if info is None:
            try:
                info = _read_image(path)
            except MediaProblem as exc:
                info = exc
            self._images[path] = info
        if isinstance(info, MediaProblem):
            raise info
        return info

    def sha256(self, path: Path) -> str:
        digest = self._hashes.get(path)
        if digest is None:
            digest = self._hashes[path] = sha256_file(path)
        return digest

    def check_media(self, path: Path, stream: str) -> None:
        """Refuse a reference video or a music bed that ffmpeg cannot read, or that lacks its
        ``stream`` ("video" or "audio"): found at validate, not after the clips are paid for."""
        key = (path, stream)
        if key not in self._streams:
            self._streams[key] = _probe_problem(path, stream)
        problem = self._streams[key]
        if problem is not None:
            raise problem


    def duration(self, path: Path) -> float:
        """Seconds of a reference video or audio (from its headers); MediaProblem when unreadable."""
        found = self._durations.get(path)
        if found is None:
            from kling_render.errors import FFmpegError
            from kling_render.media.probe import probe

            try:
                found = float(probe(path).duration)
            except FFmpegError:
                found = MediaProblem(f"{path.name} is not readable media")
            self._durations[path] = found
        if isinstance(found, MediaProblem):
            raise found
        return found


def _probe_problem(path: Path, stream: str) -> MediaProblem | None:
    from kling_render.errors import FFmpegError
    from kling_render.media.probe import probe

    if not path.is_file():
        return MediaProblem(f"{path.name} is not a regular file")
    try:
        info = probe(path)  # headers only: one short ffmpeg run
    except FFmpegError as exc:
        lines = [_LOG_CONTEXT.sub("", line) for line in exc.stderr_tail if str(path) not in line]
        detail = "; ".join(dict.fromkeys(line for line in lines if line))[:200] or "ffmpeg cannot open it"
        return MediaProblem(f"{path.name} is not readable media ({detail})")
    if stream == "video" and info.width is None:
        return MediaProblem(f"{path.name} has no video stream")
    if stream == "audio" and not info.has_audio:
        return MediaProblem(f"{path.name} has no audio stream")
    return None


def _read_image(path: Path) -> ImageInfo:
    """Format and size, after decoding every pixel (a truncated or corrupt file fails here, not at
    the provider). An image over Pillow's decompression-bomb threshold is refused undecoded."""
    if not path.exists():
        raise MediaProblem(f"file not found: {path.name}")
    if not path.is_file():
        raise MediaProblem(f"{path.name} is not a regular file")
    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = (img.format or "").upper()
                width, height = img.size
                if fmt in _PIL_FORMATS and size <= IMAGE_MAX_BYTES:  # others are refused by check_image
                    if fmt == "JPEG":  # decode at 1/8 scale: every byte is still read, in 1/64 the memory
                        img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    img.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        pixels = _PIXELS.search(str(exc))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise MediaProblem(
            f"{path.name} has {count}; images over {Image.MAX_IMAGE_PIXELS:,} pixels are refused "
            "(a possible decompression bomb)"
        ) from None
    except UnidentifiedImageError:
        raise MediaProblem(f"{path.name} is not a readable image") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError... on bad data
        reason = str(exc).splitlines()[0][:120] if str(exc) else "it cannot be decoded"
        raise MediaProblem(f"{path.name} is damaged or truncated ({reason})") from None
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
