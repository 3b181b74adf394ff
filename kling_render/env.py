"""The one place that reads the process environment."""

from __future__ import annotations

import math
import os
from pathlib import Path

DEFAULT_WAVESPEED_BASE_URL = "https://api.wavespeed.ai"
# fal's three hosts: the queue (submit, status, result), the platform API (requests list, prices),
# and the storage API (uploads). KLING_RENDER_FAL_URL replaces all three (one local stand-in).
DEFAULT_FAL_QUEUE_URL = "https://queue.fal.run"
DEFAULT_FAL_API_URL = "https://api.fal.ai"
DEFAULT_FAL_REST_URL = "https://rest.fal.ai"


def wavespeed_api_key() -> str | None:
    return os.environ.get("WAVESPEED_API_KEY") or None


def wavespeed_base_url() -> str:
    return (os.environ.get("WAVESPEED_BASE_URL") or DEFAULT_WAVESPEED_BASE_URL).rstrip("/")


def fal_key() -> str | None:
    return os.environ.get("FAL_KEY") or None


def fal_urls() -> tuple[str, str, str]:
    """fal's queue, platform API and storage base URLs; ``KLING_RENDER_FAL_URL`` is all three."""
    override = (os.environ.get("KLING_RENDER_FAL_URL") or "").rstrip("/")
    if override:
        return override, override, override
    return DEFAULT_FAL_QUEUE_URL, DEFAULT_FAL_API_URL, DEFAULT_FAL_REST_URL


def fal_url_override() -> str | None:
    return os.environ.get("KLING_RENDER_FAL_URL") or None


def cache_dir_override() -> Path | None:
    value = os.environ.get("KLING_RENDER_CACHE")
    return Path(value).expanduser() if value else None


def ffmpeg_override() -> str | None:
    return os.environ.get("KLING_RENDER_FFMPEG") or None


def user_cache_dir() -> Path:
    """Per-user cache of facts about this machine (what an ffmpeg binary can do):
    ``$XDG_CACHE_HOME/kling-render``, else ``~/.cache/kling-render``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "kling-render"


def heartbeat_seconds(default: float = 30.0) -> float:
    """Seconds between "still working" lines in plain-text logs (``KLING_RENDER_HEARTBEAT``)."""
    value = os.environ.get("KLING_RENDER_HEARTBEAT")
    try:
        seconds = float(value) if value else default
    except ValueError:
        return default
    return seconds if seconds > 0 else default


def reconcile_grace_override() -> float | None:
    """``KLING_RENDER_RECONCILE_GRACE``: seconds after a submit before the provider's task list may
    prove it created nothing (default 60). For tests: a shorter grace risks paying twice when the
    service lists new tasks late. Not a number, or negative: ignored."""
    return _seconds("KLING_RENDER_RECONCILE_GRACE", allow_zero=True)


def _seconds(name: str, *, allow_zero: bool = False) -> float | None:
    """A duration in seconds from ``name``: None when unset, not a number, negative, infinite (or 0
    unless ``allow_zero``), so a typo falls back to the product's default instead of switching a
    bound off."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        return None
    return seconds


# -- bounds of requests (SPEC §8: every request has a total deadline) ---------------------------
# The product's defaults live with the code that applies them; these variables exist so tests can
# shrink them (a trickling stand-in, an endpoint that never answers) without waiting minutes.


def http_limits_overrides() -> dict[str, float]:
    """Bounds of the providers' HTTP transfers (providers/transport.py ``Limits``) set in the
    environment: ``KLING_RENDER_HTTP_DEADLINE`` (seconds for one API call),
    ``KLING_RENDER_DOWNLOAD_DEADLINE`` (seconds for one download), ``KLING_RENDER_STALL_RATE``
    (bytes/s a body must keep up ...) and ``KLING_RENDER_STALL_WINDOW`` (... over this many seconds)."""
    names = {
        "api_deadline": "KLING_RENDER_HTTP_DEADLINE",
        "download_deadline": "KLING_RENDER_DOWNLOAD_DEADLINE",
        "stall_rate": "KLING_RENDER_STALL_RATE",
        "stall_window": "KLING_RENDER_STALL_WINDOW",
    }
    return {field: value for field, name in names.items() if (value := _seconds(name)) is not None}


def remote_timeout() -> float | None:
    """``KLING_RENDER_REMOTE_TIMEOUT``: seconds one request to the remote for a record, a claim, a
    lookup or a listing page may take, connection included (default in store/remote/store.py)."""
    return _seconds("KLING_RENDER_REMOTE_TIMEOUT")


def remote_transfer_timeout() -> float | None:
    """``KLING_RENDER_REMOTE_TRANSFER_TIMEOUT``: seconds one clip upload (part) or download from the
    remote may take (default in store/remote/store.py)."""
    return _seconds("KLING_RENDER_REMOTE_TRANSFER_TIMEOUT")


def claim_stale_override() -> float | None:
    """``KLING_RENDER_CLAIM_STALE``: seconds of the store's time after which a claim that names no
    task has lost its holder (default 15 minutes, store/remote/claims.py). For tests."""
    return _seconds("KLING_RENDER_CLAIM_STALE")


DEFAULT_STITCH_MEMORY_MB = 1400


def stitch_memory_mb() -> int:
    """``KLING_RENDER_STITCH_MEMORY``: megabytes the stitch's parallel segment encodes may hold
    together (default 1,400: the whole process tree stays under 1.5 GB). Below 1 or not a whole
    number: the default. One encode always runs, whatever the budget."""
    value = os.environ.get("KLING_RENDER_STITCH_MEMORY", "")
    return int(value) if value.isascii() and value.isdigit() and 0 < int(value) < 10**7 else DEFAULT_STITCH_MEMORY_MB


def remote_url() -> str | None:
    """``KLING_RENDER_REMOTE``: the shared remote (``s3://bucket/prefix``, ``file:///path``, ...)."""
    return os.environ.get("KLING_RENDER_REMOTE") or None


# The standard AWS variables the S3 remote honours, in the order they take precedence.
# (obstore also reads other AWS_* variables itself, e.g. AWS_WEB_IDENTITY_TOKEN_FILE; the
# endpoint, the keys and the region are passed to it explicitly from here.)
AWS_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
AWS_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")


def aws_settings() -> dict[str, str]:
    """The AWS variables that are set and not empty, by name (values may be secrets: never print them)."""
    names = (
        *AWS_ENDPOINT_VARS,
        *AWS_REGION_VARS,
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    )
    return {name: value for name in names if (value := os.environ.get(name, "").strip())}


# -- secrets (SPEC §8) --------------------------------------------------------------------------
# Every variable whose value must never be printed or stored: masking.py masks their values
# wherever text leaves the process or reaches a file, and a task id holding one is refused.
SECRET_VARS = (
    "WAVESPEED_API_KEY",
    "FAL_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",  # not a secret to AWS, but it names the account
)


def secret_values() -> tuple[str, ...]:
    """The values of :data:`SECRET_VARS` that are set (as given and stripped, as the code uses them)."""
    found: list[str] = []
    for name in SECRET_VARS:
        value = os.environ.get(name)
        if value:
            found.append(value)
            if value.strip() != value and value.strip():
                found.append(value.strip())
    return tuple(found)
