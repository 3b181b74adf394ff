"""The plan of a rows: project by row (pure): what each row's cut costs on its own, the clips
several rows share (priced once), and the total.

A clip is *shared* when its key is used by more than one (planned) row: a shot that does not use
the row has one key in every row, so content addressing renders it once for every cut. A row's
cost is that of the clips only it uses; the shared clips are priced once, apart; the total is the
sum of both, which is what rendering every row costs (each distinct key once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from kling_render.plan.model import Plan, PlannedShot, RowPlan, RowsPlan, SharedClip, relative_posix
from kling_render.plan.plan import project_cut_change


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
    table = relative_posix(project.table.path, project.root)
    return RowsPlan(table, project.table.key_column, project.root, rows, shared)


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
