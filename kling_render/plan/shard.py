"""``render --shard K/N``: a stable split of the shots by key, so a CI matrix renders in parallel.

A shot belongs to shard ``int(key[:16], 16) % N + 1``: it depends on nothing but the shot's key
and N, so every machine of the matrix computes the same split, shots with the same key (which
render once) fall in the same shard, and editing one shot moves no other shot between shards.
"""

from __future__ import annotations

import re

from kling_render.errors import UsageError

_SHARD_RE = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*\Z")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; anything else (0, K > N, not K/N) is a UsageError (exit 2)."""
    match = _SHARD_RE.match(text)
    if match is None:
        raise UsageError(f"--shard {text!r}: expected K/N, e.g. 1/4 (this machine renders shard K of N)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {text!r}: K must be between 1 and N, and N at least 1")
    return index, count


def shard_of(key: str, count: int) -> int:
    """The shard (1-based) of a shot key among ``count``."""
    return int(key[:16], 16) % count + 1


def in_shard(key: str, index: int, count: int) -> bool:
    return shard_of(key, count) == index
