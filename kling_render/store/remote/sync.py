"""The remote outside a render: what `plan` and `status` count as cached, what `stitch` pulls.

A plan must never silently claim that every shot must be paid: a remote that cannot be listed
is an error (RemoteError, exit 1), not an empty listing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kling_render.report.progress import Event, EventSink

if TYPE_CHECKING:
    from kling_render.store.cache import ClipCache
    from kling_render.store.remote.connect import Remote

__all__ = ["open_for", "pull_missing", "remote_keys"]

PULLS_AT_ONCE = 4


def open_for(project_remote: str | None, project_file: str) -> Remote | None:
    """The remote in effect for a project (``KLING_RENDER_REMOTE`` wins), opened; None without one.
    A bad URL or plain http to another machine is a UsageError (exit 2) before any request."""
    from kling_render.store.remote.connect import remote_for

    return remote_for(project_remote, project_file)


def remote_keys(project_remote: str | None, project_file: str, provider: str) -> set[str] | None:
    """The keys whose clip the remote holds for ``provider`` (one listing); None without a remote."""
    remote = open_for(project_remote, project_file)
    if remote is None:
        return None
    return asyncio.run(remote.clips.keys(provider))


def pull_missing(
    remote: Remote, provider: str, keys: Mapping[str, str], cache: ClipCache, sink: EventSink
) -> list[str]:
    """Pull the clips of ``keys`` (shot id -> key) that the local cache lacks and the remote holds
    (size and sha256 checked); the shot ids pulled. A damaged remote clip is an error naming it."""
    wanted: dict[str, list[str]] = {}
    for shot_id, key in keys.items():
        if cache.use(provider, key) is None:
            wanted.setdefault(key, []).append(shot_id)
    if not wanted:
        return []

    async def main() -> list[str]:
        listed = await remote.clips.keys(provider)
        gate = asyncio.Semaphore(PULLS_AT_ONCE)

        async def pull(key: str) -> list[str]:
            async with gate:
                entry = await remote.clips.pull(provider, key, cache)
            if entry is None:
                return []
            for shot_id in wanted[key]:
                sink.emit(Event("pulled", shot_id=shot_id, task_id=entry.task_id, message=f"from {remote.url}"))
            return wanted[key]

        done = await asyncio.gather(*(pull(key) for key in wanted if key in listed), return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException):
                raise result
        return [shot_id for shots in done if isinstance(shots, list) for shot_id in shots]

    return asyncio.run(main())
