"""What a plan is (pure data): each planned shot and still with its job, cost, status and change
against the lock, their totals, and a rows: project's plan by row (rows.py builds it). plan.py
makes a Plan; the reports, `render --plan` and the pipeline read one."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from kling_render.catalog.catalog import usd
from kling_render.jobs import Job
from kling_render.plan.inputs import Wait
from kling_render.project.generated import Still
from kling_render.project.project import Project, Shot

PLAN_VERSION = 1
CHANGE_KINDS = ("added", "changed", "re-stitch", "unchanged")  # a shot's change against the lock file


@dataclass(frozen=True)
class PlannedShot:
    shot: Shot
    job: Job
    cost: Fraction
    status: str  # "cached" | "render"
    change: str  # one of CHANGE_KINDS: "re-stitch" = same clip, other cut settings (trim, transition)
    changed_fields: tuple[str, ...] = ()  # the wire fields that changed, or the cut settings for "re-stitch"
    old_prompt: str | None = None  # the prompt the lock recorded, when the prompt changed
    take: int | None = None  # the take number (None: the shot's first take)
    waits: tuple[Wait, ...] = ()  # generated inputs not made yet: no key until they are
    reason: str | None = None  # why it will (re-)render without a known key

    @property
    def provider(self) -> str:
        """Where the take renders (its key, cache and state are that provider's)."""
        return self.job.provider

    @property
    def id(self) -> str:
        """The shot's id for its first take, ``<id>#<take>`` for another (plan.inputs.take_name)."""
        return self.shot.id if self.take is None or self.take == self.shot.take else f"{self.shot.id}#{self.take}"

    @property
    def key(self) -> str | None:
        """The clip's key, or None while an input it names is not made."""
        return None if self.waits else self.job.key

    @property
    def picked(self) -> bool:
        return (self.take or self.shot.take) == self.shot.picked_take

    @property
    def change_label(self) -> str:
        """``changed (prompt)``, ``re-stitch: trim``, ``added``: the plan's "vs lock" column."""
        if self.change == "changed" and self.changed_fields:
            return f"changed ({', '.join(self.changed_fields)})"
        if self.change == "re-stitch" and self.changed_fields:
            return f"re-stitch: {', '.join(self.changed_fields)}"
        return self.change

    @property
    def prompt_change(self) -> tuple[str, str] | None:
        """(old, new) rendered prompt when it changed since the lock."""
        if self.old_prompt is None or self.old_prompt == self.shot.prompt:
            return None
        return self.old_prompt, self.shot.prompt


@dataclass(frozen=True)
class PlannedStill:
    """A still in the plan: its key (None while an input it names is not made), price and status."""

    still: Still
    key: str | None
    cost: Fraction
    status: str  # "cached" | "render"
    change: str  # "added" | "changed" | "unchanged" against the lock's ``still:<id>`` entry
    waits: tuple[Wait, ...] = ()
    reason: str | None = None
    job: Job | None = None  # what makes it (kind "still"), once its inputs are made
    provider: str = "local"  # where it renders

    @property
    def id(self) -> str:
        return self.still.step_id

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "still": self.still.id,
            "model": self.still.model.id,
            "provider": self.provider,
            "cost_usd": usd(self.cost),
            "status": self.status,
            "change": self.change,
            "key": self.key,
        }
        if self.waits:
            doc["waits_for"] = sorted({w.upstream for w in self.waits})
            doc["reason"] = self.reason
        return doc


@dataclass(frozen=True)
class Plan:
    project: Project
    provider: str
    shots: list[PlannedShot]
    removed: list[str]  # shot ids in the lock that the project no longer has
    lock_entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    selected: list[str] | None = None  # the --only selection, None for every shot
    project_sha256: str = ""  # the project file as planned: `render --plan` checks it
    restitch: list[str] = field(default_factory=list)  # project-wide cut edits: "order", "output", "audio"
    budget_usd: float | None = None
    charges: bool = True  # False for a free provider (local): the budget does not apply
    rows: RowsPlan | None = None  # a rows: project's plan by row (plan_rows.py)
    remote: str | None = None  # the shared remote whose clips count as cached (its URL), if any
    stills: list[PlannedStill] = field(default_factory=list)  # the stills the planned shots need

    @property
    def over_budget(self) -> bool:
        """True when `render` would refuse to start: what is to render costs more than the budget."""
        return self.charges and self.budget_usd is not None and self.to_render_cost > exact_usd(self.budget_usd)

    def change_counts(self) -> dict[str, int]:
        """Shots per change kind (the same words as each row's "vs lock" column), removed included."""
        counts = {kind: 0 for kind in (*CHANGE_KINDS, "removed")}
        for p in self.shots:
            counts[p.change] += 1
        counts["removed"] = len(self.removed)
        return counts

    @property
    def total_cost(self) -> Fraction:
        """What every shot and still costs, each distinct clip or image once: shots with one key (the
        shared shots of a rows: project, identical shots) are generated once and used by each."""
        return self.video_cost + _still_cost(self.stills)

    @property
    def video_cost(self) -> Fraction:
        """The video stage: every take of every shot, each distinct clip once."""
        return sum((p.cost for p in _distinct(self.shots)), Fraction(0))

    @property
    def to_render(self) -> list[PlannedShot]:
        return [p for p in self.shots if p.status == "render"]

    @property
    def stills_to_render(self) -> list[PlannedStill]:
        return [s for s in self.stills if s.status == "render"]

    @property
    def to_render_cost(self) -> Fraction:
        """What a render would pay: the stills and takes to render, each distinct one once; a step
        whose key waits for an input is counted as paid (its new key cannot be known)."""
        return self.video_to_render_cost + _still_cost(self.stills_to_render)

    @property
    def video_to_render_cost(self) -> Fraction:
        return sum((p.cost for p in _distinct(self.to_render)), Fraction(0))

    def stages(self) -> dict[str, dict[str, Any]]:
        """The cost of the stills stage (`render --until stills`) and of the video stage, apart."""
        return {
            "stills": {
                "count": len(self.stills),
                "to_render": len(self.stills_to_render),
                "total_cost_usd": usd(_still_cost(self.stills)),
                "to_render_cost_usd": usd(_still_cost(self.stills_to_render)),
            },
            "video": {
                "count": len(self.shots),
                "to_render": len(self.to_render),
                "total_cost_usd": usd(self.video_cost),
                "to_render_cost_usd": usd(self.video_to_render_cost),
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "project": self.project.name,
            "provider": self.provider,
            "shots": [
                {
                    "id": p.id,
                    "model": p.shot.model.id,
                    "duration": p.shot.duration,
                    "sound": p.shot.sound,
                    "cost_usd": usd(p.cost),
                    "status": p.status,
                    "provider": p.provider,
                    "change": p.change,
                    "changed_fields": list(p.changed_fields),
                    "key": p.key,
                    **({"row": p.shot.row, "shot": p.shot.name} if p.shot.row is not None else {}),
                    **({"take": p.take, "picked": p.picked} if p.shot.takes > 1 else {}),
                    **({"waits_for": sorted({w.upstream for w in p.waits}), "reason": p.reason}
                       if p.waits else {}),
                    **({"prompt_change": dict(zip(("old", "new"), pc, strict=True))}
                       if (pc := p.prompt_change) else {}),
                }
                for p in self.shots
            ],
            "removed": self.removed,
            "restitch": self.restitch,
            "counts": self.change_counts(),
            "total_cost_usd": usd(self.total_cost),
            "to_render_cost_usd": usd(self.to_render_cost),
            **({"stills": [s.to_json() for s in self.stills], "stages": self.stages()} if self.stills else {}),
            "budget_usd": self.budget_usd,
            "over_budget": self.over_budget,
            "selected": self.selected,
            "project_sha256": self.project_sha256,
            "lock_keys": {sid: e.get("key") for sid, e in sorted(self.lock_entries.items())},
            "remote": self.remote,
            **({"rows": self.rows.to_json()} if self.rows is not None else {}),
        }


def _distinct(shots: Sequence[PlannedShot]) -> list[PlannedShot]:
    """The first shot of each key (a shot waiting for an input has a key of its own)."""
    return list({p.job.key: p for p in reversed(shots)}.values())


def _still_cost(stills: Iterable[PlannedStill]) -> Fraction:
    """Each distinct still once (a still waiting for an input counts on its own)."""
    return sum(({s.key or s.id: s.cost for s in stills}.values()), Fraction(0))


def exact_usd(value: float) -> Fraction:
    return Fraction(repr(float(value)))


@dataclass(frozen=True)
class RowPlan:
    key: str
    line: int
    output: Path
    shots: list[PlannedShot]  # every shot of the row, shared ones included
    own: list[PlannedShot]  # the shots whose clip no other planned row uses
    restitch: list[str] = field(default_factory=list)  # cut edits since this row's last cut

    @property
    def cost(self) -> Fraction:
        return sum((p.cost for p in self.own), Fraction(0))

    @property
    def to_render_cost(self) -> Fraction:
        return sum((p.cost for p in self.own if p.status == "render"), Fraction(0))

    @property
    def to_render(self) -> int:
        return sum(1 for p in self.own if p.status == "render")

    @property
    def changes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.shots:
            counts[p.change] = counts.get(p.change, 0) + 1
        return counts


@dataclass(frozen=True)
class SharedClip:
    """A clip used by several rows: the first row's shot stands for it."""

    first: PlannedShot
    rows: list[str]

    @property
    def names(self) -> str:
        return self.first.shot.name


@dataclass(frozen=True)
class RowsPlan:
    table: str  # the data file, relative to the project
    key_column: str
    root: Path  # the project's directory (paths in JSON are relative to it)
    rows: list[RowPlan]
    shared: list[SharedClip]

    @property
    def shared_cost(self) -> Fraction:
        return sum((c.first.cost for c in self.shared), Fraction(0))

    @property
    def shared_to_render_cost(self) -> Fraction:
        return sum((c.first.cost for c in self.shared if c.first.status == "render"), Fraction(0))

    @property
    def clips(self) -> int:
        """Distinct clips: what rendering every planned row generates at most."""
        return sum(len(r.own) for r in self.rows) + len(self.shared)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": self.key_column,
            "rows": [
                {
                    "key": r.key,
                    "line": r.line,
                    "output": relative_posix(r.output, self.root),
                    "shots": [p.id for p in r.shots],
                    "own_shots": [p.id for p in r.own],
                    "cost_usd": usd(r.cost),
                    "to_render_cost_usd": usd(r.to_render_cost),
                    "to_render": r.to_render,
                    "changes": r.changes,
                    "restitch": r.restitch,
                }
                for r in self.rows
            ],
            "shared": {
                "cost_usd": usd(self.shared_cost),
                "to_render_cost_usd": usd(self.shared_to_render_cost),
                "clips": [
                    {
                        "shot": c.names,
                        "key": c.first.key,  # None while it waits for a generated input
                        "rows": c.rows,
                        "cost_usd": usd(c.first.cost),
                        "status": c.first.status,
                    }
                    for c in self.shared
                ],
            },
            "clips": self.clips,
        }


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, with forward slashes (as the plan's JSON shows paths)."""
    return Path(os.path.relpath(path, root)).as_posix()
