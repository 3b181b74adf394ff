"""status: each step's state from the state file, the cache and the remote."""


from __future__ import annotations

import asyncio
from typing import Any

from kling_render.project.project import Project
from kling_render.store.cache import ClipCache


def status(project: Project, provider: str | None) -> dict[str, Any]:
    """Each step's state from the state file (pending, submitted, done, failed, unknown), plus cache:
    every take of every shot under ``shots`` (the first take under the shot's id, the others as
    ``<id>#<n>``, as in the plan), and the stills the shots need under ``stills``."""
    from kling_render.app.commands import on_provider
    from kling_render.plan.plan import build_plan
    from kling_render.store.outputs import CachedOutputs
    from kling_render.store.remote.sync import open_for, team_view

    project = on_provider(project, provider)
    name = project.provider
    cache = ClipCache.for_project(project.path)
    remote = open_for(project.remote, project.display)
    outputs = CachedOutputs(cache)
    # The plan's steps and their keys (computed there, once), without the lock: status reads the
    # state files and the cache, and answers even when the lock file is damaged.
    the_plan = build_plan(project, name, is_cached=lambda key, where: False, outputs=outputs)
    clips = [(p.id, p.provider, p.key) for p in the_plan.shots]
    states = {}
    for where in dict.fromkeys([name, *(provider for _, provider, _ in clips)]):
        on_remote: set[str] = set()
        differs: dict[str, Any] = {}
        if remote is not None:  # a remote error: exit 1
            mine = [key for _, provider, key in clips if provider == where and key is not None]
            on_remote, differs = team_view(remote, where, cache, mine)
        states[where] = (_Recorded(project, where), on_remote, differs)
    shots = []
    for step_id, where, key in clips:
        recorded, on_remote, _ = states[where]
        cached = key is not None and (cache.use(where, key) is not None or key in on_remote)
        shots.append(recorded.doc(step_id, key, cached))
    team_stills: dict[str, set[str]] = {}
    stills = []
    for still in the_plan.stills:
        where, key = still.provider, still.key
        if where not in states:
            states[where] = (_Recorded(project, where), set(), {})
        if remote is not None and where not in team_stills:
            team_stills[where] = set(asyncio.run(remote.stills.listing(where)))
        cached = key is not None and (outputs.still(where, key) is not None or key in team_stills.get(where, ()))
        stills.append(states[where][0].doc(still.id, key, cached))
    counts: dict[str, int] = {}
    for doc in [*stills, *shots]:
        counts[doc["status"]] = counts.get(doc["status"], 0) + 1
    return {
        "project": project.name,
        "provider": name,
        "remote": str(remote.url) if remote is not None else None,
        "shots": shots,
        **({"stills": stills} if stills else {}),
        "counts": counts,
        "quarantined": [moved.message for moved in cache.quarantined],
        # With a remote its record is the team's clip: one that differs here is replaced by the next
        # render or stitch (the cut, and the lock, then change).
        "differs_from_team": [
            f"{step_id}: {states[where][2][key].message} at the next render or stitch"
            for step_id, where, key in clips
            if key is not None and key in states[where][2]
        ],
        "final_cut": str(project.output.path) if project.output.path.is_file() else None,
    }


class _Recorded:
    """One provider's state file, read once: each step's row of `status`."""

    def __init__(self, project: Project, provider: str) -> None:
        from kling_render.records.state import read_project_state_file

        self.provider = provider
        self.records, self.ledgers = read_project_state_file(project.path, provider)

    def doc(self, step_id: str, key: str | None, cached: bool) -> dict[str, Any]:
        from kling_render.records.ledger import KeyLedger

        rec = self.records.get(step_id)
        ledger = self.ledgers.get(key or "", KeyLedger())
        # the key's tasks over all runs: how many count against its cap, paid and refunded apart
        history = {
            "tasks": ledger.created,
            "paid_usd": round(ledger.paid_usd, 4),
            "refunded_usd": round(ledger.refunded_usd, 4),
            "failed_for_good": ledger.blocked is not None,
        }
        if rec is None or rec.key != key:
            doc: dict[str, Any] = {
                "id": step_id,
                "status": "done" if cached else "pending",
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
            if state == "done" and not cached:  # its output is gone or was quarantined: it must be rendered
                state = "pending"
            if state == "submitting":  # the POST may have created a task: SPEC §6 calls it unknown
                state = "unknown"
            doc = {
                "id": step_id,
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
        doc["provider"] = self.provider
        return doc


__all__ = ["status"]
