"""What each paid step needs before it runs (cached, poll its task, follow another step with the
same key, wait for reconciliation, blocked, or submit), decided from state, ledger and cache
without writing state. Pure decisions over the run's records; the generator acts on them.

The decision is derived from the step's lifecycle status (records/lifecycle.py): a ``submitted``
step with a task id is polled, a ``done`` one whose output left the cache has its task's output
fetched again (free first), a ``submitting``/``unknown`` one is reconciled, anything else is
submitted unless the account refuses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

from kling_render.jobs import Job
from kling_render.money import Account
from kling_render.records.lifecycle import Status
from kling_render.run.context import Run

__all__ = ["Action", "carriers", "classify"]

Action = Literal["cached", "poll", "refetch", "submit", "unknown", "follow", "blocked", "reconcile"]


def classify(
    run: Run, account: Account, jobs: Iterable[Job], *, resubmit: bool, carried: Mapping[str, str] | None = None
) -> tuple[dict[str, Action], dict[str, str]]:
    """What to do with each of ``jobs``, and why each blocked one is blocked. ``resubmit``: an
    ``unknown`` step is submitted again (the --resubmit-unknown override). ``carried``: per key,
    the step whose record has its task in flight (see :func:`carriers`).

    A cached output counts only when it still matches its recorded sha256 (``cache.use``); one
    that does not is quarantined by the cache and its step rendered again.
    """
    jobs = list(jobs)
    actions: dict[str, Action] = {}
    blocked: dict[str, str] = {}
    leaders: set[str] = set()
    carried = carriers(run, jobs) if carried is None else carried
    for job in jobs:
        record = run.state.get(job.shot_id)
        if record is not None and record.key != job.key:
            record = None  # the step changed: its old record is reset (the ledger is kept by key)
        if run.cache.use(run.provider.name, job.key) is not None:
            actions[job.shot_id] = "cached"
        elif job.key in leaders or carried.get(job.key, job.shot_id) != job.shot_id:
            actions[job.shot_id] = "follow"  # another step of this run renders the same key
        elif record is not None and record.status is Status.SUBMITTED and record.task_id:
            actions[job.shot_id] = "poll"
            leaders.add(job.key)
        elif record is not None and _refetchable(run, record.status, record.task_id, record.submitted_at):
            # Done, but its output is not in the cache (quarantined, or deleted): its task's output is
            # fetched again, free while the provider keeps it, before anything is paid (issue 23 item 1).
            actions[job.shot_id] = "refetch"
            leaders.add(job.key)
        elif (
            record is not None
            and record.status in (Status.SUBMITTING, Status.UNKNOWN)
            and not resubmit
            and run.provider.charges  # a free provider's lost submit costs nothing to repeat
        ):
            actions[job.shot_id] = "unknown"
        elif (reason := account.refusal(job)) is not None:
            blocked[job.shot_id] = reason
            actions[job.shot_id] = "blocked"
        else:
            actions[job.shot_id] = "submit"
            leaders.add(job.key)
    return actions, blocked


def _refetchable(run: Run, status: Status, task_id: str | None, submitted_at: str | None) -> bool:
    """Whether a done step's task may still give its output again: a paid task, submitted within
    what the provider keeps (an unknown age is tried: a task the provider forgot ends as gone)."""
    if status is not Status.DONE or not task_id or not run.provider.charges:
        return False
    keep = run.provider.output_retention
    if keep is None or submitted_at is None:
        return True
    try:
        when = datetime.fromisoformat(submitted_at).timestamp()
    except ValueError:
        return True
    return time.time() - when <= keep


def carriers(run: Run, jobs: Iterable[Job]) -> dict[str, str]:
    """Per key, the step whose record has its task in flight (a task to poll, else a submit whose
    outcome is unknown): that step carries the key, and every other step with the key follows it,
    wherever it stands in the run. (Rows of a rows: project share every shot that does not use
    the row; a second submit for a key whose task is running, or may be, would pay twice.)"""
    best: dict[str, tuple[int, str]] = {}
    for job in jobs:
        record = run.state.get(job.shot_id)
        if record is None or record.key != job.key:
            continue
        if record.status is Status.SUBMITTED and record.task_id:
            rank = 0
        elif record.status in (Status.SUBMITTING, Status.UNKNOWN):
            rank = 1
        else:
            continue
        if job.key not in best or rank < best[job.key][0]:
            best[job.key] = (rank, job.shot_id)
    return {key: shot_id for key, (_, shot_id) in best.items()}
