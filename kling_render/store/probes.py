"""What kling-render found out about a clip's bytes, memoized by their sha256 (issue 20 item 6,
issue 23 items 4 and 19).

The stitch relies on a clip's stream headers (size, fps, codec, duration, audio layout): they decide
the filter graph and whether the cut may be stream-copied. They come from here or from the clip
itself, never from a cache sidecar or a remote record, which anyone can edit::

    <cache>/probes/<sha[:2]>/<sha256>.json    {"format", "sha256", "checked": {...} | null,
                                               "decodes": bool, "corrupt": null | "why", "mac"}
    <cache>/probes/key                        32 random bytes, made once, readable by the owner only

An entry is written only by this machine, right after it checked the bytes with that digest (the
structural check of media/check.py, or a decode that failed), and carries an HMAC of its content
under the cache's own key. An edited entry, one copied from elsewhere or written by another
version no longer verifies and is ignored: the clip is checked again (a few milliseconds) and the
entry rewritten. So a memo can save work but never change what a stitch believes. Without a
usable key (a read-only shared cache) nothing is memoized and every stitch checks its clips.

``corrupt`` marks bytes whose bitstream failed to decode in a stitch: a clip fetched again with the
same digest is refused rather than cached as good (the provider's copy itself is damaged).
``decodes`` marks bytes decoded end to end without an error, which a stream-copy cut (which
decodes nothing itself) needs once per clip.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from kling_render.errors import InvalidClipError
from kling_render.fsutil import atomic_path
from kling_render.media.check import CHECK_FORMAT, CheckedClip, check_structure
from kling_render.media.probe import MediaInfo

__all__ = ["AREA", "ProbeMemo"]

AREA = "probes"
_SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")
MAX_ENTRY_BYTES = 64 * 1024


class ProbeMemo:
    """The memo of one clip cache (``root`` is the cache's root)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / AREA
        self._key: bytes | None = None
        self._no_key = False

    def path(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ValueError(f"bad sha256 {sha256!r}")
        return self.dir / sha256[:2] / f"{sha256}.json"

    # -- reading -----------------------------------------------------------------------------

    def get(self, sha256: str) -> CheckedClip | None:
        """The checked facts of the bytes with ``sha256``, when this cache recorded them."""
        doc = self._read(sha256)
        if doc is None or not isinstance(doc.get("checked"), dict):
            return None
        try:
            return _checked_from(doc["checked"], sha256)
        except (KeyError, TypeError, ValueError, OverflowError):
            return None

    def corrupt(self, sha256: str) -> str | None:
        """Why the bytes with ``sha256`` are known not to decode; None when they are not."""
        doc = self._read(sha256)
        reason = doc.get("corrupt") if doc is not None else None
        return reason if isinstance(reason, str) else None

    def decodes(self, sha256: str) -> bool:
        """The bytes with ``sha256`` were decoded end to end without an error on this machine."""
        doc = self._read(sha256)
        return doc is not None and doc.get("decodes") is True

    def checked(self, path: Path, sha256: str) -> CheckedClip:
        """The facts of the clip at ``path``, whose bytes the caller verified to hash to ``sha256``:
        from the memo, else from the structural check (then memoized). InvalidClipError when the
        check fails, or finds other bytes than ``sha256``."""
        found = self.get(sha256)
        if found is not None:
            return found
        checked = check_structure(path)
        if checked.sha256 != sha256:
            raise InvalidClipError(f"{path.name} changed: it hashes to {checked.sha256[:12]}, not {sha256[:12]}")
        self.put(checked)
        return checked

    # -- writing -----------------------------------------------------------------------------

    def put(self, checked: CheckedClip) -> None:
        """Record what the structural check found for the bytes with ``checked.sha256``."""
        self._update(checked.sha256, checked=checked.to_json())

    def mark_decodes(self, sha256: str) -> None:
        """Record that the bytes with ``sha256`` decoded end to end without an error."""
        self._update(sha256, decodes=True, corrupt=None)

    def mark_corrupt(self, sha256: str, reason: str) -> None:
        """Record that the bytes with ``sha256`` failed to decode (see the module docstring)."""
        self._update(sha256, decodes=False, corrupt=reason[:2000])

    def _update(self, sha256: str, **changes: Any) -> None:
        old = self._read(sha256) or {}
        fields = {
            "checked": old.get("checked") if isinstance(old.get("checked"), dict) else None,
            "decodes": old.get("decodes") is True,
            "corrupt": old.get("corrupt") if isinstance(old.get("corrupt"), str) else None,
        }
        self._write(sha256, {**fields, **changes})

    def _write(self, sha256: str, fields: dict[str, Any]) -> None:
        key = self._secret()
        if key is None:
            return
        doc: dict[str, Any] = {"format": CHECK_FORMAT, "sha256": sha256, **fields}
        doc["mac"] = _mac(key, doc)
        path = self.path(sha256)
        # Not fsynced: a lost entry only costs a check.
        with contextlib.suppress(OSError), atomic_path(path, durable=False) as tmp:
            tmp.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")

    def _read(self, sha256: str) -> dict[str, Any] | None:
        """The entry for ``sha256`` when it verifies under this cache's key; else None."""
        key = self._secret()
        if key is None:
            return None
        try:
            with self.path(sha256).open("rb") as fh:
                raw = fh.read(MAX_ENTRY_BYTES + 1)
            if len(raw) > MAX_ENTRY_BYTES:
                return None
            doc = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != CHECK_FORMAT or doc.get("sha256") != sha256:
            return None
        mac = doc.pop("mac", None)
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, doc)):
            return None
        return doc

    def _secret(self) -> bytes | None:
        """The cache's memo key, made on first use (None when it cannot be read or made)."""
        if self._key is not None or self._no_key:
            return self._key
        key_file = self.dir / "key"
        try:
            self._key = _read_key(key_file)
        except FileNotFoundError:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                tmp = self.dir / f".key.{os.getpid()}.{secrets.token_hex(6)}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(secrets.token_bytes(32))
                    fh.flush()
                    os.fsync(fh.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, key_file)  # atomic: the first writer's key wins
                tmp.unlink(missing_ok=True)
                self._key = _read_key(key_file)
            except OSError:
                self._no_key = True
        except OSError:
            self._no_key = True
        return self._key


def _read_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != 32:
        raise OSError(f"{path} is not a memo key")
    return data


def _mac(key: bytes, doc: dict[str, Any]) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _checked_from(raw: dict[str, Any], sha256: str) -> CheckedClip:
    size, frames, duration = raw["size"], raw["frames"], raw["duration"]
    if raw["sha256"] != sha256 or not isinstance(size, int) or not isinstance(frames, int):
        raise ValueError("not a checked clip")
    if not isinstance(duration, int | float):
        raise ValueError("not a checked clip")
    return CheckedClip(sha256, size, MediaInfo.from_json(raw["info"]), frames, float(duration))
