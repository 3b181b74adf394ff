"""Claims: who pays for a shot key, so that two machines never pay for one shot (SPEC §6).

``claims/<key>`` on the remote is a small JSON record::

    {"key", "provider", "model",
     "owner": {"host", "pid", "run_id"},    the run that holds it
     "status": "active" | "done" | "failed" | "released",
     "wire",                                per field, the sha256 of the body about to be sent
     "task_id", "submitted_at",             null until the paid task is known
     "attempts", "tasks",                   paid tasks recorded on this key (count and ids), all owners
     "error", "permanent", "output_sha256",
     "previous",                            the claim this one took over, for audit
     "created_at", "updated_at", "version"}

A run creates the claim create-only (If-None-Match: *) before it submits anything; every later
change is a compare-and-swap on the ETag (If-Match), so of two machines exactly one wins each
step, and the other gets :class:`Lost` with the claim as it now is.

Every claim write that precedes a POST carries the ``wire`` fingerprint of the body about to be
sent (reconcile.fingerprint), so another machine can recognise that POST's task in the
provider's task list if the holder dies before recording its task id. Hence: an active claim
with neither a task id nor a wire was never followed by a POST, and may be taken over at once.

Claims are judged by the store's time, never a writer's: a claim's age is the store's clock
(RemoteStore.now) minus the claim's Last-Modified, so a machine whose clock is off by hours or a
hand-made stamp neither makes a live claim look abandoned nor an abandoned one look fresh. The
stamps in the record (``created_at``, ``updated_at``, ``submitted_at``) are kept for people only.
A claim written by a newer kling-render (``version``) is refused, never taken over or rewritten;
a claim whose task id is not a usable id (jobs.valid_task_id) is damaged.

Claims are kept, never deleted, once their shot is done or failed: they are a few hundred bytes,
they record who paid for what, and obstore has no conditional delete (a plain delete could
remove a claim another machine has just taken over). What a run does with a claim it finds
is :func:`judge`'s verdict; a claim that is ``free`` (released, or failed for a passing reason)
or ``orphaned`` (reconciled first) is taken over by compare-and-swap.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from kling_render import env
from kling_render.errors import RemoteIntegrityError, RemoteVersionError
from kling_render.fsutil import pid_alive
from kling_render.jobs import shown_id, valid_task_id
from kling_render.masking import mask_json
from kling_render.records.state import now_iso
from kling_render.store.remote.store import RemoteStore, Written

__all__ = [
    "STALE_AFTER",
    "Claim",
    "ClaimRecord",
    "Claims",
    "Lost",
    "NewerClaim",
    "Owner",
    "Verdict",
    "Won",
    "age",
    "holder_gone",
    "judge",
    "new_run_id",
]

CLAIM_VERSION = 1
STATUSES = ("active", "done", "failed", "released")
# An active claim with no task id older than this has lost its holder: a submit takes seconds
# (media uploads included, a few minutes at worst), never a quarter of an hour.
STALE_AFTER = 15 * 60.0
_KEY_RE = re.compile(r"^[0-9a-f]{16,128}\Z")

Status = Literal["active", "done", "failed", "released"]
Verdict = Literal["mine", "follow", "wait", "orphaned", "done", "refused", "free"]


def new_run_id() -> str:
    """A run's id: unique across machines, sortable by start time."""
    return f"{int(time.time()):x}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    run_id: str

    @classmethod
    def here(cls, run_id: str | None = None) -> Owner:
        return cls(socket.gethostname(), os.getpid(), run_id or new_run_id())

    def __str__(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host})"


@dataclass(frozen=True)
class ClaimRecord:
    key: str
    provider: str
    model: str
    owner: Owner
    created_at: str
    updated_at: str
    status: Status = "active"
    task_id: str | None = None
    submitted_at: str | None = None
    attempts: int = 0
    error: str | None = None
    permanent: bool = False
    output_sha256: str | None = None
    previous: dict[str, Any] | None = None
    version: int = CLAIM_VERSION
    wire: dict[str, str] | None = None  # the fingerprint of the body the holder is about to POST
    tasks: tuple[str, ...] = ()  # every task id recorded on this key, oldest first

    def to_bytes(self) -> bytes:
        doc = asdict(self)
        doc["tasks"] = list(self.tasks)
        doc["version"] = CLAIM_VERSION  # what this kling-render writes (a newer claim is never read)
        return (json.dumps(mask_json(doc), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> ClaimRecord:
        """Raises ValueError unless ``data`` is a claim record; NewerClaim when a newer kling-render
        wrote it."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ValueError("not JSON") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("owner"), dict):
            raise ValueError("not a claim")
        version = raw.get("version", CLAIM_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"bad version {str(version)[:20]!r}")
        if version > CLAIM_VERSION:
            raise NewerClaim(version)
        task_id = raw.get("task_id")
        if task_id is not None and not valid_task_id(task_id):
            raise ValueError(f"its task id {shown_id(task_id)} is not a usable id")
        try:
            owner = Owner(str(raw["owner"]["host"]), int(raw["owner"]["pid"]), str(raw["owner"]["run_id"]))
            record = cls(
                key=str(raw["key"]),
                provider=str(raw["provider"]),
                model=str(raw["model"]),
                owner=owner,
                created_at=str(raw["created_at"]),
                updated_at=str(raw["updated_at"]),
                status=raw.get("status", "active"),
                task_id=_opt_str(raw.get("task_id")),
                submitted_at=_opt_str(raw.get("submitted_at")),
                attempts=int(raw.get("attempts", 0)),
                error=_opt_str(raw.get("error")),
                permanent=bool(raw.get("permanent", False)),
                output_sha256=_opt_str(raw.get("output_sha256")),
                previous=raw.get("previous") if isinstance(raw.get("previous"), dict) else None,
                version=int(raw.get("version", CLAIM_VERSION)),
                wire=_wire(raw.get("wire")),
                tasks=tuple(t for t in raw.get("tasks") or () if valid_task_id(t)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"a field is missing or wrong ({exc})") from None
        if record.status not in STATUSES:
            raise ValueError(f"unknown status {record.status!r}")
        datetime.fromisoformat(record.updated_at)  # ValueError when it is not a time
        return record


class NewerClaim(ValueError):
    """The claim was written by a newer kling-render (its ``version``)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"version {version}")
        self.version = version


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _wire(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True)
class Claim:
    """A claim as read or written: its record, the ETag a compare-and-swap must match, and when it
    was last written in the store's time (its Last-Modified; None for a claim this run just wrote)."""

    record: ClaimRecord
    etag: str | None
    modified: float | None = None

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def task_id(self) -> str | None:
        return self.record.task_id


@dataclass(frozen=True)
class Won:
    """This run's write took effect: ``claim`` is the claim as it now is (with its new ETag)."""

    claim: Claim


@dataclass(frozen=True)
class Lost:
    """Another run wrote first: ``current`` is the claim as it now is (None if it has vanished)."""

    current: Claim | None


def stale_after() -> float:
    """How long an active claim without a task id may stay unchanged before its holder counts as
    gone: STALE_AFTER, or ``KLING_RENDER_CLAIM_STALE`` (tests)."""
    return env.claim_stale_override() or STALE_AFTER


def judge(
    claim: Claim,
    me: Owner,
    *,
    now: float,
    stale_after: float = STALE_AFTER,
    alive: Callable[[int], bool] = pid_alive,
) -> Verdict:
    """What a run should do about a claim it did not just create:

    - ``mine``: this run holds it (active, same run id);
    - ``follow``: active with a task id: poll that task and download its clip; never submit;
    - ``wait``: active without a task id, the holder may be submitting right now: look again later;
    - ``orphaned``: active without a task id, and the holder is gone (its pid is dead on this
      host, or the claim has not changed for ``stale_after`` seconds of the store's time ``now``):
      like an ``unknown`` shot, a paid task
      may exist: reconcile through the provider's task list, never resubmit blindly;
    - ``done``: the clip is (or was) on the remote: pull it; if it is not there, take over;
    - ``refused``: failed for good (a permanent cause): fail the shot without paying, unless the
      user asks for a retry, which takes over;
    - ``free``: released, or failed for a passing reason: take it over and submit.
    """
    record = claim.record
    if record.status == "done":
        return "done"
    if record.status == "failed":
        return "refused" if record.permanent else "free"
    if record.status == "released":
        return "free"
    if record.owner.run_id == me.run_id:
        return "mine"
    if record.task_id:
        return "follow"
    if holder_gone(claim, me, now=now, stale_after=stale_after, alive=alive):
        return "orphaned"
    return "wait"


def holder_gone(
    claim: Claim,
    me: Owner,
    *,
    now: float,
    stale_after: float = STALE_AFTER,
    alive: Callable[[int], bool] = pid_alive,
) -> bool:
    """Whether the run holding ``claim`` is gone: its pid is dead on this host, or the claim has not
    changed for ``stale_after`` seconds (a submit takes seconds, and a holder records each task).
    The age is the store's time ``now`` less the claim's Last-Modified: no writer's clock counts."""
    record = claim.record
    if record.owner.run_id == me.run_id:
        return False
    if claim.modified is not None and now - claim.modified > stale_after:
        return True
    return record.owner.host == me.host and not alive(record.owner.pid)


def age(claim: Claim, now: float) -> float | None:
    """Seconds of the store's time since ``claim`` was last written (None: not known)."""
    return None if claim.modified is None else max(0.0, now - claim.modified)


@dataclass
class Claims:
    """The claims of one remote, written on behalf of ``owner`` (this run)."""

    store: RemoteStore
    owner: Owner
    clock: Callable[[], str] = field(default=now_iso)

    @staticmethod
    def path(key: str) -> str:
        if not _KEY_RE.match(key):
            raise ValueError(f"bad shot key {key!r}")
        return f"claims/{key}"

    async def read(self, key: str) -> Claim | None:
        stored = await self.store.read(self.path(key))
        if stored is None:
            return None
        return Claim(self._parse(key, stored.data), stored.etag, stored.modified)

    async def now(self) -> float:
        """The store's current time: what a claim's age is measured against."""
        return await self.store.now()

    async def judge(self, claim: Claim) -> Verdict:
        """:func:`judge` by the store's time (read only when the verdict depends on it)."""
        return judge(claim, self.owner, now=await self._now_for(claim), stale_after=stale_after())

    async def holder_gone(self, claim: Claim) -> bool:
        """:func:`holder_gone` by the store's time."""
        return holder_gone(claim, self.owner, now=await self._now_for(claim), stale_after=stale_after())

    async def _now_for(self, claim: Claim) -> float:
        record = claim.record
        if record.status != "active" or record.owner.run_id == self.owner.run_id or claim.modified is None:
            return 0.0  # the verdict does not depend on the claim's age
        return await self.store.now()

    async def acquire(
        self,
        key: str,
        *,
        provider: str,
        model: str,
        wire: dict[str, str] | None = None,
        task_id: str | None = None,
    ) -> Won | Lost:
        """Create the claim for ``key`` (create-only). Lost: someone holds or held it (see :func:`judge`).
        ``wire``: the fingerprint of the body about to be sent; ``task_id``: a task this run already has."""
        stamp = self.clock()
        record = ClaimRecord(
            key, provider, model, self.owner, created_at=stamp, updated_at=stamp, wire=wire,
            task_id=task_id, submitted_at=stamp if task_id else None, attempts=1 if task_id else 0,
            tasks=(task_id,) if task_id else (),
        )  # fmt: skip
        return await self._write(key, record, None)

    async def submitting(self, claim: Claim, wire: dict[str, str] | None) -> Won | Lost:
        """Before this run, which holds ``claim``, submits another task for its key (the last one
        failed): no task id until the new one is known, and the new body's fingerprint."""
        stamp = self.clock()
        new = replace(claim.record, status="active", task_id=None, submitted_at=None, wire=wire, updated_at=stamp)
        return await self._write(claim.key, new, claim)

    async def take_over(
        self, old: Claim, *, wire: dict[str, str] | None = None, task_id: str | None = None
    ) -> Won | Lost:
        """Replace a free, orphaned (once reconciled) or refused-but-retried claim with an active one
        of this run; the paid-task count carries over and the old claim is kept in ``previous``.
        ``wire``: the fingerprint of the body this run is about to send; ``task_id``: the task this
        run takes on (found in the provider's task list, or already polled here)."""
        stamp = self.clock()
        prev = old.record
        new_task = task_id is not None and task_id not in prev.tasks
        record = replace(
            prev,
            owner=self.owner,
            status="active",
            task_id=task_id,
            submitted_at=stamp if task_id else None,
            attempts=prev.attempts + (1 if new_task else 0),
            tasks=(*prev.tasks, task_id) if new_task and task_id else prev.tasks,
            wire=wire,
            error=None,
            permanent=False,
            output_sha256=None,
            created_at=stamp,
            updated_at=stamp,
            previous={
                "owner": asdict(prev.owner),
                "status": prev.status,
                "task_id": prev.task_id,
                "error": prev.error,
                "updated_at": prev.updated_at,
            },
        )
        return await self._write(old.key, record, old)

    async def record_task(self, claim: Claim, task_id: str, *, submitted_at: str | None = None) -> Won | Lost:
        """Record the paid task of the claim (compare-and-swap). Lost: the claim changed meanwhile
        (taken over as orphaned): the task is paid anyway; keep polling it, and let the clip
        record's create-only write decide whose clip the remote keeps."""
        record = claim.record
        known = task_id == record.task_id or task_id in record.tasks
        new = replace(
            record,
            task_id=task_id,
            submitted_at=submitted_at or self.clock(),
            attempts=record.attempts + (0 if known else 1),
            tasks=record.tasks if task_id in record.tasks else (*record.tasks, task_id),
            updated_at=self.clock(),
        )
        return await self._write(claim.key, new, claim)

    async def finish(
        self,
        claim: Claim,
        status: Literal["done", "failed", "released"],
        *,
        error: str | None = None,
        permanent: bool = False,
        output_sha256: str | None = None,
    ) -> Won | Lost:
        """Close the claim: ``done`` (the clip is on the remote), ``failed`` (``permanent``: the same
        inputs fail the same way, so no machine pays again until they change) or ``released``
        (nothing was submitted: budget stop, refusal). Anyone may finish a claim it followed."""
        new = replace(
            claim.record,
            status=status,
            error=error,
            permanent=permanent and status == "failed",
            output_sha256=output_sha256,
            updated_at=self.clock(),
        )
        return await self._write(claim.key, new, claim)

    async def _write(self, key: str, record: ClaimRecord, old: Claim | None) -> Won | Lost:
        expect = None if old is None else old.etag
        if old is not None and expect is None:
            raise ValueError("a claim without an ETag cannot be updated; read it again")
        outcome = await self.store.write(self.path(key), record.to_bytes(), expect_etag=expect)
        if isinstance(outcome, Written):
            return Won(Claim(record, outcome.etag))
        current = outcome.current
        return Lost(None if current is None else Claim(self._parse(key, current.data), current.etag, current.modified))

    def _parse(self, key: str, data: bytes) -> ClaimRecord:
        try:
            record = ClaimRecord.from_bytes(data)
        except NewerClaim as exc:
            raise RemoteVersionError(
                f"the claim {self.path(key)} on the remote {self.store.url} has schema version {exc.version}, "
                f"newer than this kling-render understands ({CLAIM_VERSION}): it is neither used nor taken over, "
                "and nothing is paid for its shot; upgrade kling-render"
            ) from None
        except ValueError as exc:
            raise RemoteIntegrityError(
                f"the claim {self.path(key)} on the remote {self.store.url} is damaged ({exc}); "
                "check who is rendering this shot, then delete the claim"
            ) from None
        if record.key != key:
            raise RemoteIntegrityError(f"the claim {self.path(key)} on the remote {self.store.url} names another key")
        return record
