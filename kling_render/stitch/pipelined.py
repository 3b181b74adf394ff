"""The pipelined stitch (issue 20 item 4): segments encoded while the provider still works.

A re-encoded cut is one segment per clip (stitch/plan.py); a segment needs only its clip, and the
next clip's head when it ends in a transition. So while the paid steps run, each time a clip step
ends, :class:`SegmentPipeline` plans the cut again from what exists now (the clips not made yet are
:class:`~kling_render.stitch.graph.PendingClip` with their expected durations) and encodes every
segment that has become ready, in threads of its own (the event loop keeps polling),
each under one of the run's CPU slots (the semaphore the frame extraction shares). Results go to
the segment store under the keys the final stitch computes, so the stitch that follows the run
finds them and encodes only what is missing: the last clips' segments, the audio and the join.

A cut that may still turn out a stream copy (:func:`may_stream_copy`) has no segments; there the
one full decode of each clip (:func:`~kling_render.stitch.steps.decode_once`, memoized by digest)
is what is done ahead, so the stitch only joins.

Nothing here decides anything about a clip or money:

- a segment planned on a guessed duration that turns out wrong, or whose clip is replaced later
  (a failure, a quarantine), has another key than the final plan's: it is simply not used;
- a failed encode is dropped (``blame=False``: no culprit search, no quarantine): the final stitch
  encodes that segment again and applies the usual rules to a clip that does not decode;
- when the run ends (:meth:`SegmentPipeline.finish`), encodes still queued are left to the stitch
  (which runs them in parallel with the audio pass) and running encodes are awaited, so no segment
  is encoded twice at once; a running decode (a stream-copy cut) goes on in its thread while the
  stitch copies, and the stitch waits for it rather than decoding that clip again
  (:func:`~kling_render.stitch.steps.decode_once`); :meth:`SegmentPipeline.abort` (Ctrl-C, an
  error) also kills the running ffmpegs through their progress callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kling_render.stitch import WORK_PREFIX
from kling_render.stitch.cut import can_stream_copy
from kling_render.stitch.graph import AudioSettings, CutClip, OutputSettings, PendingClip
from kling_render.stitch.plan import CutPlan, SegmentStep
from kling_render.stitch.steps import decode_once, encode_segment, plan
from kling_render.store.segments import SegmentSource, SegmentStore

__all__ = ["CutInputs", "PipelineSummary", "SegmentNotice", "SegmentPipeline", "may_stream_copy"]


@dataclass(frozen=True)
class CutInputs:
    """The cut as far as it is known now: its clips in cut order (pending ones included) and its
    settings, as the final stitch will plan it."""

    clips: tuple[CutClip | PendingClip, ...]
    output: OutputSettings
    audio: AudioSettings | None
    music_sha256: str | None = None


@dataclass(frozen=True)
class SegmentNotice:
    """What became of one segment the pipeline took on."""

    shot_id: str
    key: str
    how: str  # "encoded", "stored" (already there), "pulled" (from the source), "claimed" (a shard:
    # another shard makes it), "decoded" (a clip of a
    # stream-copy cut: its key is "decode:<sha256>"), "failed", "stopped"
    seconds: float  # wall time of the step
    error: str | None = None


@dataclass(frozen=True)
class PipelineSummary:
    encoded: int  # segments encoded (or clips decoded) here while the clips were made
    found: int  # in the store or pulled from the source meanwhile
    failed: int  # encodes that failed (left to the stitch)
    left: int  # queued when the run ended (left to the stitch)


def may_stream_copy(inputs: CutInputs) -> bool:
    """Whether the cut may still turn out a stream copy (then it has no segments to encode): no
    clip so far needs re-encoding and no pending shot is trimmed or blended into."""
    existing = [c for c in inputs.clips if isinstance(c, CutClip)]
    for i, clip in enumerate(inputs.clips):
        if isinstance(clip, PendingClip):
            if clip.trim_start != 0 or clip.trim_end is not None:
                return False
            if i > 0 and clip.transition != "cut" and clip.transition_duration > 0:
                return False
    if not existing:
        return inputs.audio is None or (inputs.audio.music is None and not inputs.audio.normalize)
    return can_stream_copy(existing, inputs.output, inputs.audio)


class _Stopped(Exception):
    """Raised in an encode's progress callback to kill its ffmpeg (the run was aborted)."""


Notify = Callable[[SegmentNotice], None]
Report = Callable[[str, float], None]


@dataclass(frozen=True)
class _Job:
    key: str  # what it makes (a segment's key, or "decode:<clip sha256>"): each is taken on once
    shot_id: str
    run: Callable[[Report], str]  # does it (in a thread); says how: "encoded", "stored", ...
    detach: bool = False  # when the run ends, left running (a decode: the stitch waits for it there)


class SegmentPipeline:
    """Makes the segments of a cut as their clips appear (see the module docstring).

    ``inputs`` is called (in a worker thread) after each clip step ends and returns the cut as it
    is now, or None when there is nothing to plan. ``cpu`` is the run's CPU slots; at most
    ``workers`` jobs are queued on it at a time, so a frame extraction waiting for a slot waits
    behind a bounded number of them. Create and use it on the run's event loop."""

    def __init__(
        self,
        inputs: Callable[[], CutInputs | None],
        store: SegmentStore,
        cpu: asyncio.Semaphore,
        *,
        workers: int,
        source: SegmentSource | None = None,
        notify: Notify | None = None,
        decode: bool = True,
        claim: Callable[[str], bool] | None = None,
    ) -> None:
        self.inputs = inputs
        self.decode = decode  # a stream-copy cut's clips decoded ahead (not on a shard: its memo is its own)
        self.claim = claim  # a shard's: whether this machine encodes a segment (another shard's claim: no)
        self.store = store
        self.cpu = cpu
        self.workers = max(1, workers)
        self.source = source
        self.notify = notify
        self.notices: list[SegmentNotice] = []
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._taken: set[str] = set()  # keys queued, running or done
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: dict[asyncio.Task[object] | None, _Job] = {}  # workers running a job in a thread
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="segment")
        self._detached: set[str] = set()  # decodes still running in their threads when the run ended
        self._planner: asyncio.Task[None] | None = None
        self._dirty = False
        self._closing = False  # finish or abort: nothing more is taken on or started
        self._stop = threading.Event()  # kills running ffmpegs (abort only)
        self._left = 0

    # -- fed by the run ------------------------------------------------------------------------

    def clip_ended(self) -> None:
        """A clip step ended (made, cached, failed): plan again, soon, off the event loop."""
        if self._closing:
            return
        self._dirty = True
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._work()) for _ in range(self.workers)]
        if self._planner is None or self._planner.done():
            self._planner = asyncio.ensure_future(self._plan_loop())

    async def settled(self) -> None:
        """Everything the clips so far allow is done (planned, then made or failed)."""
        while self._planner is not None and not self._planner.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._planner)
        await self._queue.join()

    async def finish(self) -> PipelineSummary:
        """The run ended: what is still queued is left to the stitch, running jobs finish."""
        await self._close()
        return self.summary()

    async def abort(self) -> None:
        """The run failed or was interrupted: running encodes are killed, nothing more starts."""
        self._stop.set()
        await self._close()

    def summary(self) -> PipelineSummary:
        hows = [n.how for n in self.notices]
        return PipelineSummary(
            hows.count("encoded") + hows.count("decoded"),
            hows.count("stored") + hows.count("pulled"),
            hows.count("failed"),
            self._left,
        )

    # -- inside --------------------------------------------------------------------------------

    def _closed(self) -> bool:
        return self._closing

    async def _close(self) -> None:
        self._closing = True  # what is not running yet is left to the stitch (it runs beside the audio)
        if self._planner is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._planner  # a plan in a thread cannot be cancelled: it ends by itself
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                self._left += 1
            self._queue.task_done()
        for task in self._tasks:
            job = self._busy.get(task)
            if job is not None and not (job.detach and not self._stop.is_set()):
                self._queue.put_nowait(None)  # it ends once its job is done
            else:
                if job is not None:
                    self._detached.add(job.key)
                # Waiting for work or for a CPU slot; or running a decode, which goes on in its thread
                # beside the stitch's copy (the stitch waits for it: steps.decode_once).
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._threads.shutdown(wait=False)

    async def _plan_loop(self) -> None:
        while self._dirty and not self._closing:
            self._dirty = False
            try:
                ready = await asyncio.to_thread(self._ready)
            except Exception:  # the cut cannot be planned now (a clip being replaced): the stitch will
                continue
            for job in ready:
                if job.key in self._taken:
                    continue
                self._taken.add(job.key)
                if self._closed():  # the run ended while this was planned
                    self._left += 1
                else:
                    self._queue.put_nowait(job)

    def _ready(self) -> list[_Job]:
        """What can be made now and is not made yet (in a worker thread)."""
        inputs = self.inputs()
        if inputs is None:
            return []
        if may_stream_copy(inputs):
            if not self.decode:
                return []
            memo = self.store.cache.probes
            return [
                _Job(f"decode:{clip.sha256}", clip.shot_id, self._decoder(clip), detach=True)
                for clip in inputs.clips
                if isinstance(clip, CutClip)
                and clip.sha256
                and f"decode:{clip.sha256}" not in self._taken
                and not memo.decodes(clip.sha256)
            ]
        cut = plan(inputs.clips, inputs.output, inputs.audio, music_sha256=inputs.music_sha256)
        return [
            _Job(step.key, step.shot_id, self._encoder(cut, step))
            for step in cut.parts
            if step.key is not None and step.key not in self._taken and self.store.entry(step.key) is None
        ]

    def _encoder(self, cut: CutPlan, step: SegmentStep) -> Callable[[Report], str]:
        def run(report: Report) -> str:
            if self.claim is not None and step.key is not None and not self.claim(step.key):
                return "claimed"  # another shard makes it: nothing to pull or encode here
            with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-") as work:
                done = encode_segment(cut, step, self.store, Path(work), source=self.source, report=report, blame=False)
            return done.how

        return run

    def _decoder(self, clip: CutClip) -> Callable[[Report], str]:
        def run(_report: Report) -> str:
            decode_once(clip, self.store, blame=False)
            return "decoded"

        return run

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if job is None:
                    return
                await self._one(job)
            except asyncio.CancelledError:  # closed while it waited for a slot: left to the stitch
                if job is not None and job.key not in self._detached:
                    self._left += 1
                raise
            finally:
                self._queue.task_done()

    async def _one(self, job: _Job) -> None:
        if self._closing:
            self._left += 1
            return
        async with self.cpu:
            if self._closed():  # the run ended while this waited for a slot
                self._left += 1
                return
            me = asyncio.current_task()
            self._busy[me] = job
            try:
                notice = await asyncio.wrap_future(self._threads.submit(self._do, job))
            finally:
                self._busy.pop(me, None)
        self.notices.append(notice)
        if self.notify is not None:
            with contextlib.suppress(Exception):  # a broken event sink never stops the work
                self.notify(notice)

    def _do(self, job: _Job) -> SegmentNotice:
        started = time.monotonic()

        def report(_step: str, _fraction: float) -> None:
            if self._stop.is_set():
                raise _Stopped

        def notice(how: str, error: str | None = None) -> SegmentNotice:
            return SegmentNotice(job.shot_id, job.key, how, round(time.monotonic() - started, 3), error)

        if self._stop.is_set():
            return notice("stopped")
        try:
            return notice(job.run(report))
        except _Stopped:
            return notice("stopped")
        except Exception as exc:  # anything: the stitch does it again and judges
            return notice("failed", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
