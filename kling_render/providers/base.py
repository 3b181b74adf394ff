"""The provider seam. The runner drives every provider through these four calls.

Contract:
- ``submit`` returns the task id. It raises SubmitRefusedError only when the server
  certainly created nothing (429/503 after the provider's own retries), and
  SubmitUncertainError when a paid task may exist (no answer, 500/502/504). It never
  re-sends a POST that may have reached the server.
- ``poll`` returns a TaskResult; transient failures (429, 5xx, dropped connections)
  are retried inside with backoff honouring Retry-After, then TransientError.
- ``poll`` raises TaskGoneError when the provider does not know the task (404).
- ``download`` writes the output to ``dest`` (a temp path chosen by the runner) and
  raises DownloadError when it cannot (not http(s), over the size cap), OutputGoneError
  when the URL answers 404/410 (expired).
- Nothing a provider raises or logs contains the API key.
"""

from __future__ import annotations

import abc
from pathlib import Path

from kling_render.jobs import Job, TaskResult

MAX_DOWNLOAD_BYTES = 2 * 1024**3  # 2 GiB: far above any 15 s clip, low enough to stop a runaway


class Provider(abc.ABC):
    name: str = ""
    default_concurrency: int = 3
    charges: bool = True  # False for a free provider: an `unknown` submit is simply sent again
    # Seconds the provider keeps a task and its output; None: for as long as the task is known.
    # Past it, a task or output that answers "not found" is given up and the shot re-submitted
    # by the next run, instead of being polled again forever.
    output_retention: float | None = None

    @abc.abstractmethod
    async def submit(self, job: Job) -> str: ...

    @abc.abstractmethod
    async def poll(self, task_id: str) -> TaskResult: ...

    @abc.abstractmethod
    async def download(self, url: str, dest: Path) -> None: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and subprocesses."""
