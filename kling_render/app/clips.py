"""What the app layer knows about a cached clip, from the clip itself (never from its sidecar)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kling_render.media.probe import MediaInfo
    from kling_render.store.cache import CachedClip, ClipCache

__all__ = ["clip_info"]


def clip_info(cache: ClipCache, entry: CachedClip, shot_id: str) -> MediaInfo:
    """A cached clip's stream headers, as this machine found them in the clip's own bytes: from the
    probe memo by its sha256 (store/probes.py), else from the structural check (milliseconds, then
    memoized). Never from the sidecar's ``media``: a sidecar or a remote record can be edited.

    A clip that fails the check is quarantined: CorruptClipError, and the shot's clip is fetched again."""
    from kling_render.errors import CorruptClipError, InvalidClipError

    try:
        return cache.probes.checked(entry.path, entry.sha256).info
    except InvalidClipError as exc:
        moved = cache.quarantine(entry.provider, entry.key, f"is not a valid clip ({exc})")
        raise CorruptClipError(
            shot_id, entry.key, entry.sha256, str(exc), str(moved.moved_to) if moved else None
        ) from None
