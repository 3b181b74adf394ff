"""Known secrets masked wherever text leaves the process or reaches a file (SPEC §8), as CI systems
mask secrets: a server that echoes the API key (in a task id, a status, an error, a URL) must not
put it on the terminal, in the state, the lock, the cache or the remote's records.

The secrets are the values of env.SECRET_VARS (the provider keys, the AWS credentials) plus any
given otherwise (:func:`register`: a provider built with an explicit key). Each is masked as it
is, URL-encoded, JSON-escaped, HTML-escaped and as Python quotes it (``!r``), in any letter case.
The doors that apply :func:`mask`:

- the process's stdout and stderr (:func:`masked_streams`, installed by cli.py for every command:
  progress sinks, error lines, ``--json`` documents, ``--verbose`` tracebacks);
- every local file kling-render writes (fsutil.atomic_write_*, JSON documents masked value by
  value first, so they stay valid JSON) and the cache's quarantine log;
- every small object written to the remote (store/remote/store.py).

A task id that holds a secret is refused outright (jobs.valid_task_id): masked, it would no longer
name its task.
"""

from __future__ import annotations

import functools
import html
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import quote, quote_plus

from kling_render import env

__all__ = ["MASK", "contains_secret", "mask", "mask_bytes", "mask_json", "masked_streams", "register"]

MASK = "***"
# Shorter values are not masked: masking "ab" would garble every text (and hex digest) it occurs in.
MIN_LENGTH = 4
_registered: set[str] = set()


def register(secret: str) -> None:
    """Mask ``secret`` too (a key given to a provider directly rather than through the environment)."""
    if len(secret) >= MIN_LENGTH:
        _registered.add(secret)


def _secrets() -> tuple[str, ...]:
    return tuple(sorted({s for s in (*env.secret_values(), *_registered) if len(s) >= MIN_LENGTH}))


@functools.lru_cache(maxsize=8)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regular expression for every form of every secret, in any letter case (a server or a
    client may upper- or lower-case what it echoes: a status, say), longest first."""
    forms = _variants(secrets)
    return re.compile("|".join(re.escape(f) for f in forms), re.IGNORECASE) if forms else None


@functools.lru_cache(maxsize=8)
def _variants(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form in which ``secrets`` may appear in text, longest first (a longer form is masked
    before a shorter one inside it could leave a tail)."""
    forms: set[str] = set()
    for secret in secrets:
        forms.update(
            {
                secret,
                quote(secret, safe=""),
                quote(secret),
                quote_plus(secret),
                json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1],
                repr(secret)[1:-1],  # messages quote values with !r
                ascii(secret)[1:-1],
                html.escape(secret),
                html.escape(secret, quote=False),
            }
        )
    return tuple(sorted((f for f in forms if len(f) >= MIN_LENGTH), key=len, reverse=True))


def variants() -> tuple[str, ...]:
    return _variants(_secrets())


@functools.lru_cache(maxsize=8)
def _lowered(secrets: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.lower() for f in _variants(secrets)))


def _seen(text: str, secrets: tuple[str, ...]) -> bool:
    """Whether ``text`` may hold a secret: plain substring searches of the lower-cased text (fast on
    a large state file, where the case-blind regular expression is not)."""
    forms = _lowered(secrets)
    if not forms:
        return False
    low = text.lower()
    return any(form in low for form in forms)


def mask(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """``text`` with every known secret (in each of its forms, in any case) replaced by ``***``
    (``secrets``: :func:`_secrets`, when the caller masks many texts at once)."""
    if secrets is None:
        secrets = _secrets()
    if not _seen(text, secrets):
        return text
    low = text.lower()
    if len(low) != len(text):  # a character whose lower case is longer: positions differ
        pattern = _pattern(secrets)
        assert pattern is not None
        return pattern.sub(MASK, text)
    spans: list[tuple[int, int]] = []
    for form in _lowered(secrets):  # longest first
        start = low.find(form)
        while start >= 0:
            spans.append((start, start + len(form)))
            start = low.find(form, start + 1)
    parts: list[str] = []
    done = 0
    for start, end in sorted(spans):
        if end <= done:
            continue  # inside a span already masked
        parts += [text[done : max(done, start)], MASK]
        done = end
    return "".join([*parts, text[done:]])


def contains_secret(text: str) -> bool:
    secrets = _secrets()
    pattern = _pattern(secrets)
    return _seen(text, secrets) and pattern is not None and pattern.search(text) is not None


def mask_bytes(data: bytes) -> bytes:
    """``data`` masked as UTF-8 text; bytes that are not UTF-8 pass through unchanged."""
    if not _lowered(_secrets()):
        return data
    text = data.decode("utf-8", "surrogateescape")
    masked = mask(text)
    return data if masked == text else masked.encode("utf-8", "surrogateescape")


def mask_json(value: Any) -> Any:
    """A JSON value with every string (keys too) masked: it serializes to valid JSON without a secret.

    The usual case, no secret anywhere, is found in one pass over the serialized value (the lock
    and the state are written after every step): JSON escapes character by character, so a string
    holding any form of a secret (in any case) serializes to text holding that form JSON-escaped
    (_json_forms). Only when one is seen is every string masked one by one."""
    secrets = _secrets()
    if not _lowered(secrets):
        return value
    try:
        text = json.dumps(value, ensure_ascii=False, check_circular=False).lower()
    except (TypeError, ValueError, RecursionError):  # not plain JSON: string by string
        text = None
    if text is not None and not any(form in text for form in _json_forms(secrets)):
        return value
    return _mask_value(value, secrets)


@functools.lru_cache(maxsize=8)
def _json_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form of ``secrets`` as it reads inside a serialized JSON string, lower-cased."""
    return tuple(dict.fromkeys(json.dumps(f, ensure_ascii=False)[1:-1].lower() for f in _variants(secrets)))


def _mask_value(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return mask(value, secrets)
    if isinstance(value, dict):
        return {(mask(k, secrets) if isinstance(k, str) else k): _mask_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v, secrets) for v in value]
    return value


class MaskedStream:
    """A text stream that masks what is written to it before passing it on.

    It offers no ``buffer``: whatever writes here (click, rich, tracebacks) must go through
    :meth:`write`, never around it in bytes."""

    def __init__(self, inner: IO[str]) -> None:
        self._inner = inner

    @property
    def inner(self) -> IO[str]:
        return self._inner

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # as a text stream does (click probes for a binary writer)
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._inner.write(mask(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(getattr(self._inner, "closed", False))

    @property
    def encoding(self) -> str:
        return str(getattr(self._inner, "encoding", None) or "utf-8")

    @property
    def errors(self) -> str | None:
        return getattr(self._inner, "errors", None)

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":  # bytes written there would pass unmasked
            raise AttributeError(name)
        return getattr(self._inner, name)


@contextmanager
def masked_streams() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` masked while the block runs (once: nesting is harmless)."""
    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, MaskedStream):
        sys.stdout = MaskedStream(sys.stdout)
    if not isinstance(sys.stderr, MaskedStream):
        sys.stderr = MaskedStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
