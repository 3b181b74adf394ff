"""Where the remote is and how to reach it: the URL and the S3 endpoint/credential settings.

Nothing here imports the object-store library, so ``validate`` can check a project's
``remote:`` without loading it. Messages never repeat a credential: a URL that carries one
is refused without being echoed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kling_render.env import AWS_ENDPOINT_VARS, AWS_REGION_VARS
from kling_render.errors import UsageError
from kling_render.loopback import is_loopback_host

SCHEMES = ("s3", "gs", "az", "file")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]\Z")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=+-]*\Z")


@dataclass(frozen=True)
class RemoteURL:
    """A parsed remote: ``s3://bucket/prefix``, ``gs://…``, ``az://container/prefix`` or ``file:///dir``."""

    scheme: str
    bucket: str = ""  # bucket or container; empty for file://
    prefix: str = ""  # "a/b" without leading or trailing slash; may be empty
    root: Path | None = None  # file:// only

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.root}"
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


def parse_remote_url(text: str) -> RemoteURL:
    """Parse and check a remote URL; ValueError says what is wrong (and never repeats a credential)."""
    raw = text.strip()
    if "@" in raw:  # user:password@ (a secret may even hold a '/', so look at the whole text)
        raise ValueError(
            "the remote URL must not carry credentials (it is not shown here for that reason); "
            "give them in the standard variables, e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    scheme, sep, _ = raw.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError(
            f"{_shown(raw)!r} is not a remote URL: expected s3://bucket/prefix, gs://bucket/prefix, "
            "az://container/prefix or file:///absolute/dir"
        )
    parts = urlsplit(raw)
    if parts.query or parts.fragment:
        raise ValueError("a remote URL takes no ?query or #fragment (it is not shown here: one may hold a token)")
    scheme = scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{_shown(raw)!r}: a file remote is file:///absolute/dir (three slashes), not a host")
        if not parts.path.startswith("/"):
            raise ValueError(f"{_shown(raw)!r}: a file remote needs an absolute path (file:///absolute/dir)")
        segments = [s for s in parts.path.split("/") if s]
        if any(s in (".", "..") for s in segments):
            raise ValueError(f"{_shown(raw)!r}: '.' and '..' are not allowed in a remote path")
        return RemoteURL("file", root=Path("/", *segments))
    bucket = parts.netloc
    if not _BUCKET_RE.match(bucket):
        raise ValueError(
            f"{_shown(raw)!r}: {bucket!r} is not a valid bucket name (3-222 lowercase letters, digits, '.', '-', '_')"
        )
    segments = [s for s in parts.path.split("/") if s]
    for segment in segments:
        if not _SEGMENT_RE.match(segment):
            raise ValueError(
                f"{_shown(raw)!r}: the prefix part {segment!r} may only use letters, digits and . _ - = +"
            )
    return RemoteURL(scheme, bucket=bucket, prefix="/".join(segments))


def _shown(text: str) -> str:
    """``text`` for a message, cut short, and blanked when it may hold a credential."""
    if "@" in text:
        return "<the remote URL>"
    return text if len(text) <= 200 else text[:200] + "…"



def check_endpoint(url: str, variable: str) -> bool:
    """Check an endpoint URL from ``variable``; True when it is plain http (allowed to loopback only).

    Raises UsageError (exit 2) before any request: https anywhere, http only to this machine.
    """
    if "@" in url:
        raise UsageError(f"{variable} must not carry credentials (its value is not shown for that reason)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise UsageError(f"{variable}={_shown(url)!r} is not an http(s) URL with a host")
    if scheme == "http" and not is_loopback_host(host):
        raise UsageError(
            f"{variable}={_shown(url)!r}: plain http is allowed only to this machine (localhost, 127.0.0.1, ::1), "
            "because the requests carry signed credentials and the clips; use https"
        )
    return scheme == "http"


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible store, from the standard AWS variables. Secrets stay out of repr."""

    endpoint: str | None = None
    allow_http: bool = False
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message (the key id too: it names the account)."""
        return tuple(v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v)


def s3_settings(values: Mapping[str, str]) -> S3Settings:
    """S3Settings from the AWS variables in ``values`` (see :func:`kling_render.env.aws_settings`)."""
    endpoint_var = next((name for name in AWS_ENDPOINT_VARS if values.get(name)), None)
    endpoint = values[endpoint_var].rstrip("/") if endpoint_var else None
    allow_http = check_endpoint(endpoint, endpoint_var) if endpoint and endpoint_var else False
    region = next((values[name] for name in AWS_REGION_VARS if values.get(name)), None)
    key_id, secret = values.get("AWS_ACCESS_KEY_ID"), values.get("AWS_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        have, missing = (
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if key_id else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        )
        raise UsageError(f"{have} is set but {missing} is not: set both, or neither (to use an instance role)")
    return S3Settings(
        endpoint=endpoint,
        allow_http=allow_http,
        region=region,
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=values.get("AWS_SESSION_TOKEN") if key_id else None,
    )
