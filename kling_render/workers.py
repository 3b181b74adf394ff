"""How much work may run at once on this machine.

``cpu_cores`` is what this process may run on (the affinity mask, so a container limited to two
CPUs of a large host counts two). ``stitch_workers`` is how many segment encodes a stitch runs at
once: the cores, but never more than the stitch's memory budget allows. One segment encode holds
two decoders and an x264 with its pinned frame threads (cut.X264_THREADS), about 640 MB at 1080p
(benchmarks/RESULTS.md), so on an 8-core machine "one per core" alone would need 5 GB: the budget
keeps the whole process tree flat in the number of clips *and* of cores.
"""

from __future__ import annotations

import os

__all__ = ["SEGMENT_MB_BASE", "SEGMENT_MB_PER_MEGAPIXEL", "cpu_cores", "stitch_workers"]

# Resident memory of one segment encode, by output size: measured 640-660 MB at 1920x1080 and
# 320-340 MB at 1280x720 (peak RSS of the process tree / parallel encodes, bench_stitch.py).
SEGMENT_MB_BASE = 60
SEGMENT_MB_PER_MEGAPIXEL = 290


def cpu_cores() -> int:
    """The CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def segment_memory_mb(width: int, height: int) -> int:
    """Estimated resident memory of one segment encode at ``width`` x ``height``."""
    return SEGMENT_MB_BASE + round(SEGMENT_MB_PER_MEGAPIXEL * width * height / 1_000_000)


def stitch_workers(width: int, height: int, budget_mb: int, cores: int | None = None) -> int:
    """Segment encodes to run at once: the cores, within ``budget_mb`` of memory (at least one)."""
    by_memory = budget_mb // max(1, segment_memory_mb(width, height))
    return max(1, min(cores or cpu_cores(), by_memory))
