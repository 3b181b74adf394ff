"""At the start of a run: what each shot needs (cached, poll its task, follow another shot with the
same key, wait for reconciliation, blocked, or submit), from state, ledger and cache, writing no
state. Pure decisions over the run's records; the runner acts on them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from kling_render.run.task_end import ASK_AGAIN

if TYPE_CHECKING:
    from kling_render.jobs import Job
    from kling_render.run.scheduler import _Run

__all__ = ["Action", "carriers", "classify", "submit_refusal"]

Action = Literal["cached", "poll", "submit", "unknown", "follow", "blocked", "reconcile"]


def classify(run: _Run, *, resubmit: bool) -> dict[str, Action]:
    """What to do with each shot, decided from state, ledger and cache without writing state.
    ``resubmit``: an ``unknown`` shot is submitted again (the --resubmit-unknown override).

    A cached clip counts only when it still matches its recorded sha256 (``cache.use``); one
    that does not is quarantined by the cache and its shot rendered again.
    """
    actions: dict[str, Action] = {}
    leaders: set[str] = set()
    run.blocked.clear()
    carried = carriers(run)
    for job in run.jobs:
        record = run.state.get(job.shot_id)
        if record is not None and record.key != job.key:
            record = None  # the shot changed: its old record is reset (the ledger is kept by key)
        if run.cache.use(run.provider.name, job.key) is not None:
            actions[job.shot_id] = "cached"
        elif job.key in leaders or carried.get(job.key, job.shot_id) != job.shot_id:
            actions[job.shot_id] = "follow"  # another shot of this run renders the same key
        elif record is not None and record.status == "submitted" and record.task_id:
            actions[job.shot_id] = "poll"
            leaders.add(job.key)
        elif (
            record is not None
            and record.status in ("submitting", "unknown")
            and not resubmit
            and run.provider.charges  # a free provider's lost submit costs nothing to repeat
        ):
            actions[job.shot_id] = "unknown"
        elif (reason := run.submit_refusal(job)) is not None:
            run.blocked[job.shot_id] = reason
            actions[job.shot_id] = "blocked"
        else:
            actions[job.shot_id] = "submit"
            leaders.add(job.key)
    return actions


def carriers(run: _Run) -> dict[str, str]:
    """Per key, the shot whose record has its task in flight (a task to poll, else a submit whose
    outcome is unknown): that shot carries the key, and every other shot with the key follows it,
    wherever it stands in the run. (Rows of a rows: project share every shot that does not use
    the row; a second submit for a key whose task is running, or may be, would pay twice.)"""
    best: dict[str, tuple[int, str]] = {}
    for job in run.jobs:
        record = run.state.get(job.shot_id)
        if record is None or record.key != job.key:
            continue
        if record.status == "submitted" and record.task_id:
            rank = 0
        elif record.status in ("submitting", "unknown"):
            rank = 1
        else:
            continue
        if job.key not in best or rank < best[job.key][0]:
            best[job.key] = (rank, job.shot_id)
    return {key: shot_id for key, (_, shot_id) in best.items()}


def submit_refusal(run: _Run, job: Job) -> str | None:
    """Why no new task may be submitted for ``job``, or None (the lifetime cap, a permanent failure)."""
    if run.gate is not None and job.key in run.gate.refusals:
        return run.gate.refusals[job.key]
    cap = run.options.max_task_attempts
    if run.options.retry_failed or not run.provider.charges:
        if run.run_tasks[job.key] >= cap:
            return f"{run.run_tasks[job.key]} tasks submitted for it this run (at most {cap})"
        return None
    ledger = run.state.ledger(job.key)
    blocked = ledger.blocked
    if blocked is not None:
        code = f" (code {blocked.code})" if blocked.code else ""
        return (
            f"its task {blocked.task_id} failed for good{code}: {blocked.error or 'no reason given'}; "
            f"the same inputs fail the same way, so none is submitted again: {ASK_AGAIN}"
        )
    if ledger.created >= cap:
        return (
            f"these inputs have created {ledger.created} tasks over all runs, the cap of {cap} "
            f"(failed and unusable ones count): {ASK_AGAIN} to allow more"
        )
    return None
