"""Finding the task behind a submit whose answer was lost (SPEC §5, §6): pure decisions.

Before each POST the runner records a fingerprint of the body it sends (the sha256 of each
field's canonical JSON, uploaded media as the URLs actually sent), so any later process can
recognise the task in the provider's task list. ``decide`` looks at the tasks listed in a window
around the submit time, drops every task id the project already knows, and:

- adopts the one task whose inputs match the fingerprint (every field sent, equal);
- where the list gives no inputs, adopts a task only if exactly one candidate is left;
- with several candidates keeps the shot ``unknown`` and says how many;
- with none, proves the submit created nothing only when the list was asked at least
  ``grace`` seconds after the submit (a new task may take a moment to be listed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kling_render.errors import ProviderError
from kling_render.jobs import Job, ListedTask, shown_id, valid_task_id
from kling_render.money import Account
from kling_render.plan.keys import digest
from kling_render.run.context import Run

WINDOW_BEFORE = 10 * 60.0  # seconds before the recorded submit time a task may be stamped (clock skew)
WINDOW_AFTER = 10 * 60.0  # ... and after it (the POST's own time, clock skew)


def inputs_match(wire: Mapping[str, str], inputs: Mapping[str, Any]) -> bool:
    """Every field that was sent is in ``inputs`` with the same value (fields the service adds, such
    as defaults it filled in, do not matter)."""
    return bool(wire) and all(name in inputs and digest(inputs[name]) == value for name, value in wire.items())


@dataclass(frozen=True)
class Decision:
    kind: Literal["adopt", "absent", "ambiguous", "wait"]
    task_id: str | None = None
    message: str = ""


def decide(
    tasks: Sequence[ListedTask],
    *,
    wire: Mapping[str, str] | None,
    known: Collection[str],
    submitted_at: float,
    asked_at: float,
    grace: float,
) -> Decision:
    """What the task list says about one submit whose answer was lost (see the module doc)."""
    window = [
        t for t in tasks
        if t.id not in known
        and (t.created_at is None or submitted_at - WINDOW_BEFORE <= t.created_at <= submitted_at + WINDOW_AFTER)
    ]  # fmt: skip
    if wire:
        candidates = [t for t in window if t.inputs is None or inputs_match(wire, t.inputs)]
        matched = sum(1 for t in candidates if t.inputs is not None)
    else:  # a submit recorded before fingerprints existed: only the time tells
        candidates, matched = list(window), 0
    if len(candidates) == 1:
        task = candidates[0]
        how = "its inputs match the submit" if task.inputs is not None else "the only unknown task of that model then"
        if not valid_task_id(task.id):
            return Decision(
                "ambiguous", message=f"the matching task {shown_id(task.id)} has an id kling-render cannot use"
            )
        return Decision("adopt", task.id, f"found task {task.id} in the provider's task list ({how})")
    if len(candidates) > 1:
        detail = f", {matched} with matching inputs" if matched else ""
        return Decision(
            "ambiguous",
            message=f"{len(candidates)} tasks in the provider's task list could be this submit's{detail}; "
            "cannot tell which",
        )
    waited = asked_at - submitted_at
    if waited < grace:
        return Decision("wait", message=f"not in the provider's task list {waited:.0f}s after the submit")
    return Decision(
        "absent",
        message=f"the provider's task list, asked {waited:.0f}s after the submit, has no task with its inputs: "
        "the submit created nothing",
    )


# -- applying decisions to a run -------------------------------------------------------------------


def epoch(stamp: str | None) -> float | None:
    """A recorded submit time as epoch seconds, rounded up: a stamp in whole seconds may be up to a
    second early, and the grace must not be shortened by it."""
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return when.timestamp() + (1.0 if when.microsecond == 0 else 0.0)


class Reconciler:
    """Asks the provider's task list about a run's unknown submits and applies each decision: an
    adopted task is polled (never paid again), an absent one may be submitted again, anything else
    stays ``unknown`` and says why."""

    def __init__(self, run: Run, account: Account) -> None:
        self.run = run
        self.account = account

    async def at_start(self, jobs: Sequence[Job]) -> set[str]:
        """Reconcile the unknown shots a run starts with; the ids of those to look at again later in
        the run (the list was asked too soon after their submit to prove anything)."""
        run = self.run
        later: set[str] = set()
        pending: dict[str, list[tuple[Job, float]]] = {}
        for job in jobs:
            record = run.state.get(job.shot_id)
            submitted = epoch(record.submitted_at) if record else None
            if self.from_ledger(job, in_run=False):
                continue
            if submitted is None:
                self.keep_unknown(job, "no submit time was recorded, so its task cannot be looked for")
            elif self.expired(job, submitted):
                pass
            else:
                pending.setdefault(job.wire_model, []).append((job, submitted))
        for model, items in pending.items():
            items.sort(key=lambda item: item[1])
            for group in _windows(items):
                first, last = group[0][1], group[-1][1]
                asked = time.time()
                try:
                    tasks = await run.provider.list_tasks(model, first - WINDOW_BEFORE, last + WINDOW_AFTER)
                except ProviderError as exc:
                    for job, _ in group:
                        self.keep_unknown(job, f"the provider's task list could not be read ({exc})")
                    continue
                for job, submitted in group:
                    if self.apply(job, self.decide(job, tasks, submitted, asked), in_run=False) == "wait":
                        later.add(job.shot_id)
        return later

    async def in_run(self, job: Job, *, just_now: bool) -> str | None:
        """Look for the task of ``job``'s unknown submit: its id to poll, "" when the shot may be
        submitted again, None when it stays unknown. ``just_now``: the submit was this moment, give
        the service a poll interval to list it."""
        run = self.run
        if just_now:
            await asyncio.sleep(run.options.poll_interval)
        in_run = job.shot_id in self.account.unknown_this_run
        if (found := self.from_ledger(job, in_run=in_run)) is not None:
            return found
        pause = max(1.0, run.options.poll_interval)
        give_up = time.monotonic() + (run.options.task_timeout or float("inf"))
        while True:
            record = run.state.get(job.shot_id)
            submitted = epoch(record.submitted_at) if record else None
            if submitted is None:
                self.keep_unknown(job, "no submit time was recorded, so its task cannot be looked for")
                return None
            if self.expired(job, submitted):
                return ""
            asked = time.time()
            try:
                window = (submitted - WINDOW_BEFORE, submitted + WINDOW_AFTER)
                tasks = await run.provider.list_tasks(job.wire_model, *window)
            except ProviderError as exc:
                self.keep_unknown(job, f"the provider's task list could not be read ({exc})")
                return None
            decision = self.decide(job, tasks, submitted, asked)
            kind = self.apply(job, decision, in_run=in_run)
            if kind == "adopt":
                return decision.task_id
            if kind == "absent":
                return ""
            if kind != "wait":
                return None
            # Not listed yet: ask again, sooner while the task may be about to be listed (a provider
            # that lists only ended tasks shows it once it ends), at the latest when the grace ends.
            left = submitted + run.options.reconcile_grace - time.time()
            if time.monotonic() + min(left, pause) > give_up:
                self.keep_unknown(job, f"{decision.message}; the next run asks the task list again")
                return None
            await asyncio.sleep(max(0.0, min(left, pause)) + 0.05)
            pause = min(pause * 2, 60.0)

    def from_ledger(self, job: Job, *, in_run: bool) -> str | None:
        """The task id the ledger still holds for the shot's open submit (the shot's own record lost
        it, e.g. an unusable id written over it): adopted without asking the list."""
        ledger = self.run.state.ledger(job.key)
        index = ledger.open_index(job.shot_id)
        task_id = None if index is None else ledger.tasks[index].task_id
        if task_id is None:
            return None
        message = f"the state's task ledger still holds its task {task_id}"
        self.apply(job, Decision("adopt", task_id, message), in_run=in_run)
        return task_id

    def decide(self, job: Job, tasks: Sequence[ListedTask], submitted: float, asked: float) -> Decision:
        run = self.run
        record = run.state.get(job.shot_id)
        return decide(
            tasks,
            wire=record.wire if record else None,
            known=run.state.known_task_ids(),
            submitted_at=submitted,
            asked_at=asked,
            grace=run.options.reconcile_grace,
        )

    def expired(self, job: Job, submitted: float) -> bool:
        """A submit older than the provider keeps tasks: whatever it created is gone with its output."""
        keep = self.run.provider.output_retention
        age = time.time() - submitted
        if keep is None or age <= keep - WINDOW_AFTER:
            return False
        message = (
            f"it was submitted {age / 86400:.1f} days ago and the provider lists (and keeps) tasks "
            f"{keep / 86400:g} days, so whatever it created is gone"
        )
        self.apply(job, Decision("absent", message=message), in_run=False)
        return True

    def apply(self, job: Job, decision: Decision, *, in_run: bool) -> str:
        """Record ``decision`` for ``job`` (through the account); its kind. ``in_run``: the
        unknown submit was this run's."""
        if decision.kind == "adopt":
            assert decision.task_id is not None
            self.account.adopt(job, decision.task_id, in_run=in_run, message=decision.message)
        elif decision.kind == "absent":
            self.account.absent(job, in_run=in_run, message=decision.message)
        elif decision.kind == "ambiguous":
            self.keep_unknown(job, decision.message)
        return decision.kind

    def keep_unknown(self, job: Job, why: str) -> None:
        record = self.run.state.get(job.shot_id)
        before = record.error if record and record.error else "the submit got no usable answer"
        before = before.split("; the submit may have created a paid task")[0].split("; not resolved: ")[0]
        self.run.mark_unknown(job, f"{before}; not resolved: {why}")


def _windows(items: Sequence[tuple[Job, float]]) -> list[list[tuple[Job, float]]]:
    """Submits (sorted by time) grouped so one task-list query covers each group's window."""
    groups: list[list[tuple[Job, float]]] = []
    for item in items:
        if groups and item[1] - groups[-1][-1][1] <= WINDOW_BEFORE + WINDOW_AFTER:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
