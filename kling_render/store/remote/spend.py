"""What a project has spent, across every machine that renders it (SPEC §6: the budget is per
project, not per process).

``spend/<plan id>.json`` on the remote holds the money held by each paid submit of one version of
the project (the plan id: the sha256 of every step key of the whole project, so the shards of one
CI run, and a re-run of it, share one record; an edit starts a new one)::

    {"version": 1, "plan": "<plan id>", "total_usd": 0.84,
     "holds": {"<hold id>": 0.28, ...}, "updated_at": "..."}

A hold is added by compare-and-swap before the POST it pays for, and only while the total stays
within the budget: two machines racing for the last dollars cannot both win. A hold is released
(again by compare-and-swap) when its submit certainly created nothing or its task failed and was
refunded; a lost answer keeps its hold until the task list settles it, as the local budget does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kling_render.errors import RemoteIntegrityError
from kling_render.store.remote.store import Lost, RemoteStore, Stored, Written

__all__ = ["SPEND_VERSION", "RemoteSpend", "SpendRecord"]

SPEND_VERSION = 1
ROUNDS = 20  # lost compare-and-swaps in a row before a hold counts as contested
EPSILON = 1e-9
_ID_RE = re.compile(r"^[0-9a-f]{16,128}\Z")
_HOLD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,200}\Z")


@dataclass(frozen=True)
class SpendRecord:
    plan: str
    holds: Mapping[str, float] = field(default_factory=dict)
    updated_at: str = ""

    @property
    def total_usd(self) -> float:
        return round(sum(self.holds.values()), 6)

    def to_bytes(self) -> bytes:
        doc = {
            "version": SPEND_VERSION,
            "plan": self.plan,
            "total_usd": self.total_usd,
            "holds": dict(sorted(self.holds.items())),
            "updated_at": self.updated_at,
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> SpendRecord:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("no version")
        if version > SPEND_VERSION:
            raise ValueError(
                f"it was written by a newer kling-render (spend record version {version}; this one reads "
                f"{SPEND_VERSION}): upgrade kling-render"
            )
        holds = doc.get("holds")
        if not isinstance(holds, dict) or not all(
            isinstance(k, str) and _HOLD_RE.match(k) and _finite(v) for k, v in holds.items()
        ):
            raise ValueError("holds is not an object of finite amounts")
        plan = doc.get("plan")
        if not isinstance(plan, str):
            raise ValueError("no plan id")
        return cls(plan, {k: float(v) for k, v in holds.items()}, str(doc.get("updated_at") or ""))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e12


@dataclass(frozen=True)
class RemoteSpend:
    """The spend record of one plan id on one remote."""

    store: RemoteStore
    plan: str
    clock: Callable[[], str]

    def __post_init__(self) -> None:
        if not _ID_RE.match(self.plan):
            raise ValueError(f"bad plan id {self.plan!r}")

    @property
    def path(self) -> str:
        return f"spend/{self.plan}.json"

    async def total(self) -> float:
        """What every machine holds for this plan now."""
        stored = await self.store.read(self.path)
        return 0.0 if stored is None else self._parse(stored).total_usd

    async def hold(self, hold_id: str, cost: float, budget: float) -> bool:
        """Add ``cost`` under ``hold_id`` unless the total would pass ``budget``: True when held
        (also when it already was), False when the budget has no room for it."""
        return await self._change(hold_id, cost, budget)

    async def release(self, hold_id: str) -> None:
        """Remove ``hold_id`` (its submit created nothing, or its task was refunded)."""
        await self._change(hold_id, None, None)

    async def _change(self, hold_id: str, cost: float | None, budget: float | None) -> bool:
        if not _HOLD_RE.match(hold_id):
            raise ValueError(f"bad hold id {hold_id!r}")
        stored = await self.store.read(self.path)
        for _ in range(ROUNDS):
            record = SpendRecord(self.plan) if stored is None else self._parse(stored)
            holds = dict(record.holds)
            if cost is None:
                if hold_id not in holds:
                    return True
                del holds[hold_id]
            else:
                if hold_id in holds:
                    return True
                if budget is not None and record.total_usd + cost > budget + EPSILON:
                    return False
                holds[hold_id] = round(cost, 6)
            new = SpendRecord(self.plan, holds, self.clock())
            outcome = await self.store.write(
                self.path, new.to_bytes(), expect_etag=None if stored is None else stored.etag
            )
            if isinstance(outcome, Written):
                return True
            assert isinstance(outcome, Lost)
            stored = outcome.current
        raise RemoteIntegrityError(
            f"the spend record {self.path} on the remote {self.store.url} kept changing under this run; "
            "nothing was submitted"
        )

    def _parse(self, stored: Stored) -> SpendRecord:
        try:
            record = SpendRecord.from_bytes(stored.data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RemoteIntegrityError(
                f"the spend record {self.path} on the remote {self.store.url} cannot be used ({exc})"
            ) from None
        if record.plan != self.plan:
            raise RemoteIntegrityError(
                f"the spend record {self.path} on the remote {self.store.url} names another plan"
            )
        return record
