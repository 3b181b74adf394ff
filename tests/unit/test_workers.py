"""Segment encodes at once: the cores, within the stitch's memory budget."""

from __future__ import annotations

import pytest

from kling_render.env import DEFAULT_STITCH_MEMORY_MB, stitch_memory_mb
from kling_render.workers import segment_memory_mb, stitch_workers


def test_the_estimate_matches_the_measured_encodes() -> None:
    # bench_stitch.py: about 640 MB per 1080p segment encode, about 330 MB per 720p one.
    assert 600 <= segment_memory_mb(1920, 1080) <= 700
    assert 300 <= segment_memory_mb(1280, 720) <= 360


@pytest.mark.parametrize("cores", [2, 8, 64])
def test_many_cores_never_raise_memory_past_the_budget(cores: int) -> None:
    for width, height in [(1920, 1080), (1280, 720), (3840, 2160), (640, 360)]:
        n = stitch_workers(width, height, DEFAULT_STITCH_MEMORY_MB, cores=cores)
        assert 1 <= n <= cores
        assert n == 1 or n * segment_memory_mb(width, height) <= DEFAULT_STITCH_MEMORY_MB


def test_the_default_budget_keeps_two_1080p_encodes_and_4k_runs_alone() -> None:
    assert stitch_workers(1920, 1080, DEFAULT_STITCH_MEMORY_MB, cores=8) == 2
    assert stitch_workers(3840, 2160, DEFAULT_STITCH_MEMORY_MB, cores=8) == 1  # one always runs
    assert stitch_workers(640, 360, DEFAULT_STITCH_MEMORY_MB, cores=2) == 2  # small cuts: the cores


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4000", 4000),
        ("", DEFAULT_STITCH_MEMORY_MB),
        ("0", DEFAULT_STITCH_MEMORY_MB),
        ("-5", DEFAULT_STITCH_MEMORY_MB),
        ("1e9", DEFAULT_STITCH_MEMORY_MB),
        ("nan", DEFAULT_STITCH_MEMORY_MB),
        ("٣٠٠", DEFAULT_STITCH_MEMORY_MB),
        ("9" * 40, DEFAULT_STITCH_MEMORY_MB),
    ],
)
def test_the_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv("KLING_RENDER_STITCH_MEMORY", value)
    assert stitch_memory_mb() == expected
