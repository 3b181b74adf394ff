"""Keys: the one place a step's content address is computed (SPEC §6).

A step's key is the sha256 of a canonical JSON document of its kind, its parameters and the
digests of what it reads. The documents keep the exact shapes earlier versions used, so every
clip, segment and lock entry made before stays valid:

- a clip (and a take of it): ``{provider, model, params (local files as sha256:<hex>), take}``,
  plus ``endpoint`` for a model the project declares;
- a segment: its identity (stitch/segments.py ``segment_identity``), hashed ASCII-escaped;
- a still: ``{kind: "still", provider, model, endpoint, params, take}``; in any ``params`` a
  made still stands as the sha256 of its image (as a local file would), a frame as
  ``frame:<clip sha256>@<frame index>`` (plan/inputs.py);
- newer kinds (frame, audio, join): ``{"kind": ..., ...}``.

Nothing else in the package hashes a document into a key: plan, status, report, the lock, the
stitch and the shards read keys from the plan, never compute them again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kling_render.jobs import ClipRef, FrameRef, MediaRef, StillRef, UnresolvedInputError

__all__ = [
    "canonical",
    "clip_key",
    "digest",
    "doc_key",
    "field_digests",
    "fingerprint",
    "still_key",
    "wire_for_key",
]


def doc_key(doc: Mapping[str, Any], *, ascii_only: bool = False) -> str:
    """The sha256 of ``doc`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
    return hashlib.sha256(text.encode("ascii" if ascii_only else "utf-8")).hexdigest()


def wire_for_key(params: Mapping[str, Any]) -> dict[str, Any]:
    """Wire parameters with every local file replaced by its sha256 (URLs stay as they are), a
    made still by the sha256 of its image, a frame by ``frame:<clip sha256>@<index>``;
    UnresolvedInputError for a generated input not made yet (its digest is unknown)."""

    def value(v: Any) -> Any:
        if isinstance(v, MediaRef):
            return v.key_value
        if isinstance(v, StillRef | FrameRef | ClipRef):
            raise UnresolvedInputError(f"{v.label} is not made yet: its digest is unknown")
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    return {k: value(v) for k, v in params.items()}


def clip_key(provider: str, model: str, params: Mapping[str, Any], take: int, *, endpoint: str | None = None) -> str:
    """A generated output's key: sha256 of {provider, model, wire params (files by hash), take}.

    ``endpoint`` is given for a model the project declares: its id alone does not fix where the
    shot is sent, and moving the endpoint must not reuse the clips of the old one (a built-in id
    always means the same endpoint, so built-in keys stay as they were)."""
    doc: dict[str, Any] = {"provider": provider, "model": model, "params": wire_for_key(params), "take": take}
    if endpoint is not None:
        doc["endpoint"] = endpoint
    return doc_key(doc)


def still_key(provider: str, model: str, endpoint: str, params: Mapping[str, Any], take: int) -> str:
    """A still's key: sha256 of {kind: still, provider, model, endpoint, wire params, take}."""
    doc = {"kind": "still", "provider": provider, "model": model, "endpoint": endpoint,
           "params": wire_for_key(params), "take": take}  # fmt: skip
    return doc_key(doc)


def field_digests(params: Mapping[str, Any], take: int, *, endpoint: str | None = None) -> dict[str, str]:
    """A short digest per wire field, kept in the lock so `plan` can say which field changed (a
    field whose generated input is not made yet has none)."""
    out = {}
    for name in sorted(params):
        try:
            value = wire_for_key({name: params[name]})[name]
        except UnresolvedInputError:
            continue
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
        out[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    out["take"] = str(take)
    if endpoint is not None:  # part of a declared model's key (see clip_key)
        out["endpoint"] = endpoint
    return out


# -- fingerprints of a submit body (for the task list and the claims) ----------------------------


def canonical(value: Any) -> Any:
    """``value`` with whole floats as ints (5.0 == 5 as the service may echo it), recursively."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


def digest(value: Any) -> str:
    """The sha256 of one field's value, as a service may echo it back (see :func:`canonical`)."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(body: Mapping[str, Any]) -> dict[str, str]:
    """The sha256 of each field of a submit body, as the state file and the claims keep it."""
    return {str(name): digest(value) for name, value in body.items()}
