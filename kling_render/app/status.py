"""status: each step's state from the state file, the cache and the remote."""


from __future__ import annotations

from typing import Any

from kling_render.app.cut import clip_units
from kling_render.project.project import Project
from kling_render.store.cache import ClipCache


def status(project: Project, provider: str | None) -> dict[str, Any]:
    """Per-shot state from the state file (pending, submitted, done, failed, unknown), plus cache."""
    from kling_render.app.commands import on_provider
    from kling_render.records.ledger import KeyLedger
    from kling_render.records.state import read_project_state_file
    from kling_render.store.remote.sync import open_for, team_view

    project = on_provider(project, provider)
    name = project.provider
    cache = ClipCache.for_project(project.path)
    keys = clip_units(project, name, cache)
    remote = open_for(project.remote, project.display)
    states = {}
    for where in dict.fromkeys([name, *(k.provider for k in keys.values())]):
        recorded, ledgers = read_project_state_file(project.path, where)
        on_remote: set[str] = set()
        differs: dict[str, Any] = {}
        if remote is not None:  # a remote error: exit 1
            mine = [k.key for k in keys.values() if k.provider == where and k.key is not None]
            on_remote, differs = team_view(remote, where, cache, mine)
        states[where] = (recorded, ledgers, on_remote, differs)
    shots = []
    for shot in project.shots:
        where, key = keys[shot.id].provider, keys[shot.id].key or ""
        recorded, ledgers, on_remote, _ = states[where]
        rec = recorded.get(shot.id)
        cached = bool(key) and (cache.use(where, key) is not None or key in on_remote)
        ledger = ledgers.get(key, KeyLedger())
        # the key's tasks over all runs: how many count against its cap, paid and refunded apart
        history = {
            "tasks": ledger.created,
            "paid_usd": round(ledger.paid_usd, 4),
            "refunded_usd": round(ledger.refunded_usd, 4),
            "failed_for_good": ledger.blocked is not None,
        }
        if rec is None or rec.key != key:
            state = "done" if cached else "pending"
            doc: dict[str, Any] = {
                "id": shot.id,
                "status": state,
                "cached": cached,
                "task_id": None,
                "attempts": 0,
                "cost_usd": 0.0,
                "refunded_usd": 0.0,
                "error": None,
                "error_code": None,
                "stale": rec is not None and rec.key != key,
                "ledger": history,
            }
        else:
            state = "done" if cached and rec.status in ("pending", "done") else rec.status
            if state == "done" and not cached:  # its clip is gone or was quarantined: it must be rendered
                state = "pending"
            if state == "submitting":  # the POST may have created a task: SPEC §6 calls it unknown
                state = "unknown"
            doc = {
                "id": shot.id,
                "status": state,
                "cached": cached,
                "task_id": rec.task_id,
                "attempts": rec.attempts,
                "cost_usd": rec.cost_usd,
                "refunded_usd": rec.refunded_usd,
                "error": rec.error,
                "error_code": rec.error_code,
                "stale": False,
                "ledger": history,
            }
        doc["provider"] = where
        shots.append(doc)
    counts: dict[str, int] = {}
    for doc in shots:
        counts[doc["status"]] = counts.get(doc["status"], 0) + 1
    return {
        "project": project.name,
        "provider": name,
        "remote": str(remote.url) if remote is not None else None,
        "shots": shots,
        "counts": counts,
        "quarantined": [moved.message for moved in cache.quarantined],
        # With a remote its record is the team's clip: one that differs here is replaced by the next
        # render or stitch (the cut, and the lock, then change).
        "differs_from_team": [
            f"{shot_id}: {states[unit.provider][3][unit.key].message} at the next render or stitch"
            for shot_id, unit in keys.items()
            if unit.key is not None and unit.key in states[unit.provider][3]
        ],
        "final_cut": str(project.output.path) if project.output.path.is_file() else None,
    }


__all__ = ["status"]

