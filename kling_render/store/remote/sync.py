"""The remote outside a render, and what every command agrees on about it: what `plan` and `status`
count as cached, what `stitch` pulls, and which clip of a key is the team's. The functions that
move outputs take one area of the remote (``remote.clips`` or ``remote.stills``): the same rules
hold for both.

A plan must never silently claim that every shot must be paid: a remote that cannot be listed
is an error (RemoteError, exit 1), not an empty listing.

With a remote, its record is the team's clip for a key (SPEC §6): a clip this machine holds for a
key whose record names another sha256 (made here before the remote was set, or while it could
not be reached) is set aside in the cache's quarantine and replaced by the team's clip, and the
replacement is reported, so every machine cuts, stitches and locks the same bytes. Finding out
reads each such key's record once: ``<key>.remote`` beside the cached clip remembers the record's
ETag (records are create-only) when the two agreed, and a later listing with the same ETag needs
no read. A lost or stale memo only costs a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kling_render.errors import RemoteError
from kling_render.fsutil import atomic_path
from kling_render.report.progress import Event, EventSink

if TYPE_CHECKING:
    from kling_render.store.cache import CachedClip, ClipCache
    from kling_render.store.remote.clips import ClipCheck, RemoteClip, RemoteClips
    from kling_render.store.remote.connect import Remote

__all__ = ["Differs", "differing", "open_for", "pull_missing", "replace_local", "team_view"]

PULLS_AT_ONCE = 4
MEMO_SUFFIX = ".remote"


def replaced(noun: str) -> str:
    """Why this machine's output of a key was set aside (``noun``: clip, still)."""
    return f"differed from the remote's {noun} for the same key (the team's {noun}), which replaces it"


def open_for(project_remote: str | None, project_file: str) -> Remote | None:
    """The remote in effect for a project (``KLING_RENDER_REMOTE`` wins), opened; None without one.
    A bad URL or plain http to another machine is a UsageError (exit 2) before any request."""
    from kling_render.store.remote.connect import remote_for

    return remote_for(project_remote, project_file)


@dataclass(frozen=True)
class Differs:
    """A key whose clip here is not the team's: this machine's sha256, and the remote's record."""

    key: str
    local_sha256: str
    team: RemoteClip
    noun: str = "clip"

    @property
    def message(self) -> str:
        return f"this machine's {self.noun} {self.local_sha256[:12]} {replaced(self.noun)} ({self.team.sha256[:12]})"


async def differing(
    area: RemoteClips,
    provider: str,
    cache: ClipCache,
    keys: Iterable[str],
    listing: Mapping[str, str | None],
    *,
    errors: dict[str, RemoteError] | None = None,
) -> dict[str, Differs]:
    """Of ``keys``, those cached here and recorded in ``area`` (``listing``: key -> record ETag)
    with another sha256 than the local output's. Reads only records the memo cannot vouch for. A
    record that cannot be read (damaged, newer) raises, or with ``errors`` is recorded there."""
    gate = asyncio.Semaphore(PULLS_AT_ONCE)
    url = str(area.store.url)
    found: dict[str, Differs] = {}

    async def read(key: str) -> RemoteClip | None:
        async with gate:
            try:
                return await area.get(provider, key)
            except RemoteError as exc:
                if errors is None:
                    raise
                errors[key] = exc
                return None

    async def look(key: str) -> None:
        entry = cache.get(provider, key)
        if entry is None:
            return
        etag = listing[key]
        if etag is not None and _memo(cache, provider, key) == {"remote": url, "etag": etag,
                                                               "sha256": entry.sha256}:  # fmt: skip
            return
        team = await read(key)
        if team is None:
            return
        if team.sha256 == entry.sha256:
            if etag is not None:
                _remember(cache, provider, key, {"remote": url, "etag": etag, "sha256": entry.sha256})
            return
        found[key] = Differs(key, entry.sha256, team, area.area.noun)

    await asyncio.gather(*(look(key) for key in dict.fromkeys(keys) if key in listing))
    return found


async def replace_local(area: RemoteClips, cache: ClipCache, differs: Differs, verify: ClipCheck) -> CachedClip:
    """Set this machine's output aside and put the team's in its place (checked as a download is);
    if the team's cannot be pulled, this machine's stays and the error propagates."""
    return await area.fetch(differs.team, cache, verify=verify, replace=replaced(differs.noun))


def team_view(
    remote: Remote, provider: str, cache: ClipCache, keys: Iterable[str]
) -> tuple[set[str], dict[str, Differs]]:
    """For `plan` and `status` (nothing is moved): the keys the remote holds, and those of ``keys``
    whose clip here differs from the team's (the next render or stitch replaces them)."""

    async def main() -> tuple[set[str], dict[str, Differs]]:
        listing = await remote.clips.listing(provider)
        return set(listing), await differing(remote.clips, provider, cache, keys, listing)

    return asyncio.run(main())


def pull_missing(
    area: RemoteClips,
    provider: str,
    keys: Mapping[str, str],
    cache: ClipCache,
    sink: EventSink,
    verify: ClipCheck,
    *,
    strict: bool = True,
) -> list[str]:
    """Before a stitch: pull the outputs of ``keys`` (step name -> key) that ``cache`` lacks and
    ``area`` holds, and replace those that differ from the remote's (the team's), each checked as a
    download is (``verify``: a clip's, or a still's); the step names pulled or replaced. A damaged
    remote output is an error naming it; not ``strict``: it is skipped (a render's gate then
    refuses its step, naming it, and pays nothing for it)."""
    wanted: dict[str, list[str]] = {}
    for shot_id, key in keys.items():
        wanted.setdefault(key, []).append(shot_id)

    async def main() -> list[str]:
        listing = await area.listing(provider)
        missing = [key for key in wanted if key in listing and cache.use(provider, key) is None]
        unreadable: dict[str, RemoteError] | None = None if strict else {}
        differs = await differing(
            area, provider, cache, (k for k in wanted if k not in missing), listing, errors=unreadable
        )
        gate = asyncio.Semaphore(PULLS_AT_ONCE)

        async def pull(key: str) -> list[str]:
            async with gate:
                if key in differs:
                    entry: CachedClip | None = await replace_local(area, cache, differs[key], verify)
                else:
                    entry = await area.pull(provider, key, cache, verify=verify)
            if entry is None:
                return []
            for shot_id in wanted[key]:
                if key in differs:
                    sink.emit(Event("replaced", shot_id=shot_id, task_id=entry.task_id, message=differs[key].message))
                else:
                    sink.emit(Event("pulled", shot_id=shot_id, task_id=entry.task_id, message=f"from {area.store.url}"))
            return wanted[key]

        done = await asyncio.gather(*(pull(key) for key in [*missing, *differs]), return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException) and (strict or not isinstance(result, RemoteError)):
                raise result
        return [shot_id for shots in done if isinstance(shots, list) for shot_id in shots]

    return asyncio.run(main())


def _memo_path(cache: ClipCache, provider: str, key: str) -> Path:
    return cache.clip_path(provider, key).with_suffix(MEMO_SUFFIX)


def _memo(cache: ClipCache, provider: str, key: str) -> object:
    try:
        return json.loads(_memo_path(cache, provider, key).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _remember(cache: ClipCache, provider: str, key: str, doc: dict[str, str]) -> None:
    # Not fsynced: losing it costs one read of the record. A read-only cache simply reads again.
    with contextlib.suppress(OSError), atomic_path(_memo_path(cache, provider, key), durable=False) as tmp:
        tmp.write_text(json.dumps(doc), encoding="utf-8")
