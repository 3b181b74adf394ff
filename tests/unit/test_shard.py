"""render --shard K/N: a stable split of the shots by key."""

from __future__ import annotations

import hashlib

import pytest

from kling_render.errors import UsageError
from kling_render.plan.shard import in_shard, parse_shard, shard_of

KEYS = [hashlib.sha256(f"shot-{i}".encode()).hexdigest() for i in range(2000)]


@pytest.mark.parametrize(("text", "expected"), [("1/1", (1, 1)), ("2/4", (2, 4)), (" 3 / 3 ", (3, 3))])
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "1", "a/b", "-1/4", "1/4/2", "", "99999/99999"])
def test_bad_shards_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--shard") as info:
        parse_shard(text)
    assert info.value.exit_code == 2


def test_every_key_is_in_exactly_one_shard_and_the_split_is_even() -> None:
    for count in (1, 2, 3, 4, 7):
        shards = [[k for k in KEYS if in_shard(k, index, count)] for index in range(1, count + 1)]
        assert sorted(k for shard in shards for k in shard) == sorted(KEYS)
        for shard in shards:
            assert abs(len(shard) - len(KEYS) / count) < 0.1 * len(KEYS) / count + 15


def test_the_split_depends_only_on_the_key_and_n() -> None:
    """Adding or removing shots moves no other shot between shards, on any machine."""
    before = {k: shard_of(k, 4) for k in KEYS[:100]}
    after = {k: shard_of(k, 4) for k in KEYS[50:150]}
    assert all(before[k] == after[k] for k in KEYS[50:100])
    assert shard_of("0" * 64, 4) == 1 and shard_of("0" * 15 + "1" + "0" * 48, 4) == 2
    assert shard_of("f" * 64, 2) == int("f" * 16, 16) % 2 + 1
