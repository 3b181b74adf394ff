"""Provider tests send paid requests through the one door: an account of a throwaway run."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kling_render.jobs import Job
from kling_render.media.check import CheckedClip
from kling_render.money import Account, Reservation
from kling_render.providers.base import Provider
from kling_render.records.state import StateStore
from kling_render.run.context import Run
from kling_render.run.report import RunOptions
from kling_render.store.cache import ClipCache


async def reserve(provider: Provider, job: Job) -> Reservation:
    """A reservation for one submit of ``job`` (its own state file: any number per job)."""
    root = Path(tempfile.mkdtemp(prefix="money-kit-"))
    state = StateStore(root / "state.json").open()
    run = Run(provider, state=state, cache=ClipCache(root / "cache"), options=RunOptions(), verify=_no_check)
    run.add([job])
    account = Account(run, charges=provider.charges)
    body = await provider.prepare(job)  # its errors reach the test as the provider raised them

    async def prepared() -> Mapping[str, Any]:
        return body

    res = await account.reserve(job, prepared)
    state.close()
    assert isinstance(res, Reservation), res
    return res


async def submit(provider: Provider, job: Job) -> str:
    """Prepare, reserve and send one paid request of ``job``: its task id."""
    return await provider.send(await reserve(provider, job))


def _no_check(path: Path) -> CheckedClip:
    raise AssertionError("nothing is downloaded here")
