"""The provider seam. The runner drives every provider through these calls.

Contract:
- ``prepare`` returns the body the submit will send (uploads done; nothing is created). The
  account (money.py) records its fingerprint before the POST, so a lost answer can later be
  matched against the task list, and issues a :class:`~kling_render.money.Reservation` for it.
- ``send`` is the one paid request: it POSTs the reservation's body once and returns the task id.
  It cannot be called without a reservation, and only the account makes one.
- A submit raises SubmitRefusedError only when the server certainly created nothing (429
  after the provider's own retries, or a request that never left this machine),
  SubmitRejectedError when the server refused it (4xx: nothing created), AccountError when
  the account cannot run tasks (401/403/402, balance: the run stops submitting), and
  SubmitUncertainError when a paid task may exist (5xx, no answer, no usable id). It never
  re-sends a POST that may have reached the server.
- ``poll`` returns a TaskResult; transient failures (429, 5xx, dropped connections)
  are retried inside with backoff honouring Retry-After, then TransientError. A failed
  task carries its code and its cause (permanent, transient, unclassified).
- ``poll`` raises TaskGoneError when the provider does not know the task (404).
- ``cancel`` (optional, best effort) drops a task still queued; the run asks it on an interrupt only
  for tasks last seen queued, and counts the task as never created only when it answers True.
- ``list_tasks`` (when ``lists_tasks``) returns the provider's tasks of a model created in a
  time window, newest first, with their inputs when the provider records them.
- ``download`` writes the output to ``dest`` (a temp path chosen by the runner) and
  raises DownloadError when it cannot (not http(s), over the size cap, stalled), OutputGoneError
  when the URL answers 404/410 (expired).
- Task ids returned or listed match ``jobs.TASK_ID``; nothing a provider raises or logs
  contains the API key.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kling_render.jobs import Job, ListedTask, MediaRef, TaskResult
from kling_render.money import Reservation

MAX_DOWNLOAD_BYTES = 2 * 1024**3  # 2 GiB: far above any 15 s clip, low enough to stop a runaway


class Provider(abc.ABC):
    name: str = ""
    default_concurrency: int = 2
    charges: bool = True  # False for a free provider: an `unknown` submit is simply sent again
    # Seconds the provider keeps a task and its output; None: for as long as the task is known.
    # Past it, a task or output that answers "not found" is given up and the shot re-submitted
    # by the next run, instead of being polled again forever.
    output_retention: float | None = None
    lists_tasks: bool = False  # True when ``list_tasks`` can find a task whose submit answer was lost

    async def prepare(self, job: Job) -> Mapping[str, Any]:
        """The body a submit of ``job`` sends. Default: the params, media as their key values."""
        return {name: _plain(value) for name, value in job.params.items()}

    @abc.abstractmethod
    async def send(self, reservation: Reservation) -> str:
        """POST ``reservation.use()`` (the body ``prepare`` made) once; the task id."""

    @abc.abstractmethod
    async def poll(self, task_id: str) -> TaskResult: ...

    @abc.abstractmethod
    async def download(self, url: str, dest: Path) -> None: ...

    async def list_tasks(self, model: str, created_after: float, created_before: float) -> list[ListedTask]:
        """Tasks of ``model`` created in the window (epoch seconds), newest first."""
        raise NotImplementedError(f"{self.name} cannot list its tasks")

    async def cancel(self, task_id: str) -> bool:
        """Ask the provider to drop a task that has not started; True only when it confirms the task
        was removed before it ran (nothing created, nothing charged). Default: not supported."""
        return False

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and subprocesses."""


def _plain(value: Any) -> Any:
    if isinstance(value, MediaRef):
        return value.key_value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
