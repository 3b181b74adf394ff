"""Opening the remote for a run: which URL is in effect, the S3 settings from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kling_render import env
from kling_render.errors import UsageError
from kling_render.retry import RetryPolicy
from kling_render.store.remote.claims import Claims, Owner
from kling_render.store.remote.clips import STILLS, RemoteClips
from kling_render.store.remote.config import RemoteURL, parse_remote_url, s3_settings
from kling_render.store.remote.segments import RemoteSegments
from kling_render.store.remote.spend import RemoteSpend
from kling_render.store.remote.store import RemoteStore, open_store

__all__ = ["Remote", "RemoteURL", "open_remote", "remote_for", "resolve_remote_url"]


@dataclass(frozen=True)
class Remote:
    """One remote, opened for one run."""

    store: RemoteStore
    clips: RemoteClips
    claims: Claims
    segments: RemoteSegments
    stills: RemoteClips  # the stills' area (images made by image models), as the local cache's stills_of

    @property
    def url(self) -> RemoteURL:
        return self.store.url

    def outputs(self, kind: Literal["clip", "still"]) -> RemoteClips:
        """The area that keeps outputs of ``kind`` (a Job's ``kind``)."""
        return self.stills if kind == "still" else self.clips

    def spend(self, plan_id: str) -> RemoteSpend:
        """The project's spend record for ``plan_id`` (store/remote/spend.py)."""
        return RemoteSpend(self.store, plan_id, self.claims.clock)

    def __repr__(self) -> str:
        return f"Remote({str(self.url)!r})"


def resolve_remote_url(project_remote: str | None, project_file: str | None = None) -> RemoteURL | None:
    """The remote in effect: ``KLING_RENDER_REMOTE`` if set, else the project's ``remote:``; None
    when neither is. A malformed URL is a UsageError (exit 2) naming where it came from."""
    text, source = env.remote_url(), "KLING_RENDER_REMOTE"
    if text is None and project_remote:
        text, source = project_remote, f"{project_file or 'the project'}: remote"
    if text is None:
        return None
    try:
        return parse_remote_url(text)
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None


def open_remote(url: RemoteURL, *, owner: Owner | None = None, policy: RetryPolicy | None = None) -> Remote:
    """Open ``url`` for this run; S3 settings come from the standard AWS variables (checked here:
    plain http to anything but this machine is a UsageError, before any request)."""
    settings = s3_settings(env.aws_settings()) if url.scheme == "s3" else None
    store = open_store(url, settings, policy=policy)
    claims = Claims(store, owner or Owner.here())
    return Remote(store, RemoteClips(store), claims, RemoteSegments(store), RemoteClips(store, STILLS))


def remote_for(
    project_remote: str | None, project_file: str | None = None, *, owner: Owner | None = None
) -> Remote | None:
    """:func:`open_remote` of :func:`resolve_remote_url`, or None when no remote is configured."""
    url = resolve_remote_url(project_remote, project_file)
    return None if url is None else open_remote(url, owner=owner)
