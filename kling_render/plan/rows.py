"""The plan of a rows: project by row (pure): what each row's cut costs on its own, the clips
several rows share (priced once), and the total.

A clip is *shared* when its key is used by more than one (planned) row: a shot that does not use
the row has one key in every row, so content addressing renders it once for every cut. A row's
cost is that of the clips only it uses; the shared clips are priced once, apart; the total is the
sum of both, which is what rendering every row costs (each distinct key once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from kling_render.catalog.catalog import usd
from kling_render.plan.plan import Plan, PlannedShot, project_cut_change


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
                    "output": _relative(r.output, self.root),
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


def rows_plan(
    plan: Plan,
    lock_cut: Mapping[str, Any] | None = None,
    cut_now: Callable[[str], Mapping[str, Any]] | None = None,
) -> RowsPlan:
    """The plan by row. ``lock_cut`` is the lock's ``cut`` section, ``cut_now(key)`` a row's cut
    settings as the project now has them: with both, each row says what only re-stitches it."""
    project = plan.project
    assert project.rows is not None and project.table is not None
    by_row: dict[str, list[PlannedShot]] = {}
    users: dict[str, dict[str, None]] = {}
    for p in plan.shots:
        key = p.shot.row or ""
        by_row.setdefault(key, []).append(p)
        users.setdefault(p.job.key, {})[key] = None
    shared: list[SharedClip] = []
    seen: set[str] = set()
    for p in plan.shots:
        key = p.job.key
        if len(users[key]) > 1 and key not in seen:
            seen.add(key)
            shared.append(SharedClip(p, list(users[key])))
    recorded = lock_cut.get("rows") if lock_cut is not None else None
    rows: list[RowPlan] = []
    for row in project.rows:
        planned = by_row.get(row.key)
        if not planned:
            continue  # not selected
        own: list[PlannedShot] = []
        mine: set[str] = set()  # one row may use a clip twice (two identical shots): generated once
        for p in planned:
            if len(users[p.job.key]) == 1 and p.job.key not in mine:
                mine.add(p.job.key)
                own.append(p)
        restitch: list[str] = []
        then = recorded.get(row.key) if isinstance(recorded, Mapping) else None
        if isinstance(then, Mapping) and cut_now is not None:
            restitch = project_cut_change(then, cut_now(row.key))
        rows.append(RowPlan(row.key, row.line, row.output.path, planned, own, restitch))
    table = _relative(project.table.path, project.root)
    return RowsPlan(table, project.table.key_column, project.root, rows, shared)


def _relative(path: Path, root: Path) -> str:
    import os

    return Path(os.path.relpath(path, root)).as_posix()


def with_rows(plan: Plan, lock_cut: Mapping[str, Any] | None) -> Plan:
    """``plan`` with its by-row breakdown (a rows: project; others are returned as they are)."""
    project = plan.project
    if project.rows is None:
        return plan
    from kling_render.project.rows import row_view
    from kling_render.records import manifest

    views = {row.key: row for row in project.rows}
    music: dict[Path | None, Any] = {}

    def cut_now(key: str) -> Mapping[str, Any]:
        view = row_view(project, views[key])
        music_path = view.audio.music if view.audio is not None else None
        if music_path not in music:  # hashed once, however many rows share it
            music[music_path] = manifest.audio_settings(view)
        audio = music[music_path]
        if audio is not None and view.audio is not None:
            audio = {**audio, "music_volume": view.audio.music_volume, "duck": view.audio.duck,
                     "normalize": view.audio.normalize}  # fmt: skip
        return {"order": [s.id for s in view.shots], "output": manifest.output_settings(view), "audio": audio}

    return replace(plan, rows=rows_plan(plan, lock_cut, cut_now if lock_cut is not None else None))


__all__ = ["RowPlan", "RowsPlan", "SharedClip", "rows_plan", "with_rows"]
