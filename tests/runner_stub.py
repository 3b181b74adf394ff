"""A scripted in-process provider for runner tests, and a few job/clip helpers.

``StubProvider`` implements the seam with tasks kept in memory (or, with ``journal``, in a
directory so that several processes share the same "server": used by the crash harness).
Per shot, ``script`` lists what each submit does: ``ok``, ``uncertain`` (raise
SubmitUncertainError after creating a task), ``lost`` (raise it without creating one),
``refused``, ``fail`` (the task ends failed, no code), ``fail:<code>`` (failed with WaveSpeed's
code, classified as WaveSpeed classifies it), ``empty`` (completed without an output), ``bad``
(the output is not a video), ``wrong-duration`` (2 s too long), ``poll-error``,
``download-error``. Unscripted submits are ``ok``. ``list_tasks`` lists every task with its
inputs (``list_inputs = False`` leaves them out).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

from mediagen import make_clip

from kling_render.errors import DownloadError, SubmitRefusedError, SubmitUncertainError, TransientError
from kling_render.fsutil import atomic_write_text
from kling_render.jobs import Job, ListedTask, TaskResult
from kling_render.money import Reservation
from kling_render.providers.base import Provider
from kling_render.providers.wavespeed.client import failure_cause

CLIP_DURATION = 1


def make_job(
    shot_id: str, *, take: int = 1, cost: float = 0.1, duration: int = CLIP_DURATION, index: int = 0
) -> Job:
    key = hashlib.sha256(f"{shot_id}:{take}:{duration}".encode()).hexdigest()
    return Job(
        shot_id=shot_id,
        model="kling-v3.0-std/image-to-video",
        params={"prompt": f"shot {shot_id}", "duration": duration},
        duration=duration,
        sound=False,
        aspect_ratio=None,
        key=key,
        cost_usd=cost,
        index=index,
        prompt=f"shot {shot_id}",
    )


def clip_source(directory: Path, duration: int = CLIP_DURATION) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"source-{duration}s.mp4"
    if not path.exists():
        make_clip(path, duration=duration, width=64, height=36, audio=False)
    return path


class StubProvider(Provider):
    name = "stub"
    default_concurrency = 3
    lists_tasks = True

    def __init__(
        self,
        sources: Path,
        *,
        polls_to_complete: int = 1,
        script: dict[str, list[str]] | None = None,
        journal: Path | None = None,
        kill_at: str | None = None,
    ) -> None:
        self.sources = sources
        self.polls_to_complete = polls_to_complete
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.journal = journal
        self.kill_at = kill_at  # "<point>:<shot id>" -> SIGKILL this process there
        self.tasks: dict[str, dict[str, object]] = {}
        self.submits: Counter[str] = Counter()  # per shot id
        self.polls: Counter[str] = Counter()  # per task id
        self.gates: dict[str, asyncio.Event] = {}  # shot id -> poll waits until set
        self.submit_gates: dict[str, asyncio.Event] = {}  # shot id -> submit waits until set
        self.entered: dict[str, asyncio.Event] = {}  # shot id -> set when a submit or poll waits at a gate
        self.closed = False
        self.list_inputs = True
        self.listings = 0
        if journal is not None:
            journal.mkdir(parents=True, exist_ok=True)

    # -- shared task records (journal mode) ----------------------------------------------------

    def _save(self, task_id: str) -> None:
        if self.journal is not None:
            # atomic, like a real service's database: a killed client never tears a task record
            atomic_write_text(self.journal / f"{task_id}.json", json.dumps(self.tasks[task_id]))

    def _load(self, task_id: str) -> dict[str, object]:
        if task_id not in self.tasks and self.journal is not None:
            self.tasks[task_id] = json.loads((self.journal / f"{task_id}.json").read_text())
        return self.tasks[task_id]

    def _maybe_die(self, point: str, shot_id: str) -> None:
        if self.kill_at == f"{point}:{shot_id}":
            os.kill(os.getpid(), signal.SIGKILL)

    def journal_submits(self) -> Counter[str]:
        assert self.journal is not None
        counts: Counter[str] = Counter()
        for path in self.journal.glob("t*.json"):
            counts[str(json.loads(path.read_text())["shot"])] += 1
        return counts

    # -- the seam ----------------------------------------------------------------------------

    async def send(self, reservation: Reservation) -> str:
        job, body = reservation.job, reservation.use()
        await asyncio.sleep(0)
        gate = self.submit_gates.get(job.shot_id)
        if gate is not None:
            self.entered.setdefault(job.shot_id, asyncio.Event()).set()
            await gate.wait()
        plan = self.script.get(job.shot_id, [])
        behaviour = plan.pop(0) if plan else "ok"
        if behaviour == "refused":
            raise SubmitRefusedError("429 Too Many Requests (stub)")
        if behaviour == "lost":
            raise SubmitUncertainError("no answer to the submit (stub, nothing created)")
        self.submits[job.shot_id] += 1
        n = (
            sum(self.submits.values())
            if self.journal is None
            else len(list(self.journal.glob("t*.json"))) + 1
        )
        task_id = f"t{n:03d}-{job.shot_id}-{os.getpid()}"
        self.tasks[task_id] = {
            "shot": job.shot_id,
            "behaviour": behaviour,
            "duration": job.duration,
            "polls": 0,
            "model": job.wire_model,  # the path a task is listed under, as WaveSpeed does
            "created_at": time.time(),
            "body": json.loads(json.dumps(dict(body))),
        }
        self._save(task_id)
        self._maybe_die("submit", job.shot_id)  # the task exists, the client never hears of it
        if behaviour == "uncertain":
            raise SubmitUncertainError("no answer to the submit (stub)")
        return task_id

    async def poll(self, task_id: str) -> TaskResult:
        task = self._load(task_id)
        shot = str(task["shot"])
        gate = self.gates.get(shot)
        if gate is not None:
            self.entered.setdefault(shot, asyncio.Event()).set()
            await gate.wait()
        self._maybe_die("poll", shot)
        self.polls[task_id] += 1
        task["polls"] = int(str(task["polls"])) + 1
        self._save(task_id)
        if task["behaviour"] == "poll-error":
            raise TransientError("502 Bad Gateway (stub, after retries)")
        if int(str(task["polls"])) < self.polls_to_complete:
            return TaskResult("processing")
        behaviour = str(task["behaviour"])
        if behaviour == "fail" or behaviour.startswith("fail:"):
            code = int(behaviour.split(":")[1]) if ":" in behaviour else None
            return TaskResult(
                "failed",
                error="content moderation (stub)",
                code=None if code is None else str(code),
                cause=failure_cause("failed", code),
            )
        if behaviour == "empty":
            return TaskResult("completed", error="completed without an output URL")
        return TaskResult("completed", output_url=f"stub://{task_id}")

    async def list_tasks(self, model: str, created_after: float, created_before: float) -> list[ListedTask]:
        self.listings += 1
        if self.journal is not None:
            for path in self.journal.glob("t*.json"):
                self._load(path.stem)
        found = [
            ListedTask(
                task_id,
                "processing",
                float(str(task["created_at"])),
                task["body"] if self.list_inputs else None,  # type: ignore[arg-type]
            )
            for task_id, task in self.tasks.items()
            if task.get("model") == model and created_after <= float(str(task["created_at"])) <= created_before
        ]
        return sorted(found, key=lambda t: t.created_at or 0.0, reverse=True)

    async def download(self, url: str, dest: Path) -> None:
        task_id = url.removeprefix("stub://")
        task = self._load(task_id)
        shot = str(task["shot"])
        behaviour = task["behaviour"]
        if behaviour == "download-error":
            raise DownloadError("404 output expired (stub)")
        if behaviour == "bad":
            dest.write_bytes(b"not a video at all" * 100)
            return
        duration = int(str(task["duration"]))
        src = clip_source(self.sources, duration + 2 if behaviour == "wrong-duration" else duration)
        if self.kill_at == f"download:{shot}":
            data = src.read_bytes()
            with dest.open("wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.to_thread(shutil.copyfile, src, dest)

    async def aclose(self) -> None:
        self.closed = True
