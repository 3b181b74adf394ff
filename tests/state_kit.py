"""Seeding a state file as an earlier process left it (tests only: the product moves statuses
through the lifecycle table)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kling_render.fsutil import atomic_write_text
from kling_render.records.state import ShotState, encode_state, read_state_file


def seed(path: Path, records: Mapping[str, ShotState]) -> None:
    """Write ``records`` into the state file at ``path`` (keeping its other records and ledger)."""
    shots, ledger = read_state_file(path)
    shots.update(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, encode_state(shots, ledger=ledger))
