"""What `render` is asked (RenderOptions) and what it answers (RenderResult)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kling_render.plan.model import Plan

__all__ = ["RenderOptions", "RenderResult"]


@dataclass(frozen=True)
class RenderOptions:
    provider: str | None = None
    only: Sequence[str] | None = None
    max_cost: float | None = None
    concurrency: int | None = None
    poll_interval: float | None = None
    resubmit_unknown: bool = False
    retry_failed: bool = False
    no_stitch: bool = False
    json_events: bool = False
    lock_timeout: float = 0.0
    force: bool = False  # stitch even when the final cut is up to date
    reviewed_plan: dict[str, Any] | None = None  # `render --plan`: render exactly this, or refuse
    shard: tuple[int, int] | None = None  # `--shard K/N`: only the shots of shard K of N (shard.py)
    until: Literal["stills"] | None = None  # `--until stills`: pay for the stills only (the approval gate)


@dataclass
class RenderResult:
    exit_code: int
    plan: Plan
    report: dict[str, Any] = field(default_factory=dict)
    final_cut: Path | None = None
    up_to_date: bool = False  # the final cut was already up to date: not re-encoded
    message: str = ""
    cuts: list[dict[str, Any]] = field(default_factory=list)  # a rows: project: each row's cut (rows_pipeline)
