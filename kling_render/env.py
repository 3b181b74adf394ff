"""The one place that reads the process environment."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_WAVESPEED_BASE_URL = "https://api.wavespeed.ai"


def wavespeed_api_key() -> str | None:
    return os.environ.get("WAVESPEED_API_KEY") or None


def wavespeed_base_url() -> str:
    return (os.environ.get("WAVESPEED_BASE_URL") or DEFAULT_WAVESPEED_BASE_URL).rstrip("/")


def cache_dir_override() -> Path | None:
    value = os.environ.get("KLING_RENDER_CACHE")
    return Path(value).expanduser() if value else None


def ffmpeg_override() -> str | None:
    return os.environ.get("KLING_RENDER_FFMPEG") or None
