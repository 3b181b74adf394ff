"""Progress of a render as events, shown on stderr: live bars on a terminal, plain lines otherwise.

Nothing here writes to stdout unless asked. ``JsonLinesSink`` writes one JSON object per event
(after a ``{"version": 1, ...}`` header line) for machine consumers.

Every sink keeps a :class:`Tally` of the run: shots finished in order, money spent so far, what is
in flight, and an ETA (from the pace of the shots that finished, or of the stitch's ffmpeg
``-progress``). Plain lines carry a clock time and the finished count, and a heartbeat line
(every ``KLING_RENDER_HEARTBEAT`` seconds, 30 by default) says what is still going on while a
long poll or a long encode prints nothing else, so a CI log never looks frozen.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Protocol

from kling_render.report.jsonout import json_text

EVENT_KINDS = (
    "start",  # the run begins: total = shots in this run
    "skipped-cached",
    "quarantined",  # a cached clip did not match its sha256: moved aside, the shot renders again
    "submitting",
    "submitted",
    "polling",  # the provider reported a new task status
    "downloaded",
    "retry",  # a task failed and is submitted again
    "reconciled",  # an unknown submit was found in the provider's task list (adopted), or proved absent
    "cancelled",  # interrupted: a task still queued was dropped by the provider before it ran (not paid)
    "done",
    "failed",
    "unknown",
    "budget-stop",
    # the shared remote (KLING_RENDER_REMOTE)
    "pulled",  # the shot's clip came from the remote (sha256-checked): not generated here
    "pushed",  # a clip made or cached here went to the remote
    "push-conflict",  # the remote already held another clip for the key: that one is kept and used
    "replaced",  # the clip cached here differed from the remote's (the team's clip): set aside, replaced
    "claimed",  # this run holds the shot's claim: it pays for the shot
    "following",  # another run holds the claim and its task id: that task is polled and its clip used
    "waiting",  # another run holds the claim and is submitting: wait for its task id or its clip
    "account-stop",  # the account cannot run tasks (key rejected, no balance): no more submits
    "finish",  # the run ends: message = summary
    "lock-pruned",  # a full render dropped shots no longer in the project from the lock file
    "stitching",  # the final cut is being made
    "stitch-progress",  # extra: step ("measuring loudness", "encoding", "joining"), fraction 0..1
    "stitched",  # extra: path, duration, frames, stream_copy, up_to_date (true: kept, not re-encoded)
    "stitch-skipped",  # a partial render: some shots have no clip yet
    "segments",  # a shard encoded the segments its clips allow: extra: ready, encoded (app/segments.py)
    "segment",  # one segment made while the clips are generated (the pipelined stitch): extra: segment_of, key, how
    "warning",  # something the stitch worked around (a segment not pulled or pushed): message says what
    "heartbeat",  # nothing else happened for a while: what is still going on
)
TERMINAL_KINDS = frozenset({"skipped-cached", "done", "failed", "unknown", "budget-stop", "account-stop"})
JSON_EVENTS_VERSION = 1


@dataclass(frozen=True)
class Event:
    kind: str
    shot_id: str | None = None
    index: int = 0  # 1-based position in this run
    total: int = 0
    task_id: str | None = None
    status: str | None = None  # the provider's task status, for ``polling``
    cost_usd: float | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)  # when it happened (epoch seconds)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"event": self.kind}
        for name in ("shot_id", "index", "total", "task_id", "status", "cost_usd", "message"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        doc.update(self.extra)
        doc["ts"] = datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds")
        return doc

    def body(self) -> str:
        """The event without a position: ``intro: submitted (task abc123)``."""
        if self.shot_id is None:
            return f"{self.kind}: {self.message}" if self.message else self.kind
        detail = {
            "submitted": f"task {self.task_id}" if self.task_id else None,
            "polling": f"task {self.task_id} is {self.status}",
            "done": f"${self.cost_usd:.4f}" if self.cost_usd else None,
        }.get(self.kind)
        parts = [p for p in (detail, self.message) if p]
        tail = f" ({'; '.join(parts)})" if parts else ""
        return f"{self.shot_id}: {self.kind}{tail}"

    def text(self) -> str:
        """One plain line: ``[3/12] intro: submitted (task abc123)`` (position in the run; none for
        an event outside a run's steps, e.g. a pull before a stitch)."""
        if self.shot_id is None or not self.total:
            return self.body()
        return f"[{self.index}/{self.total}] {self.body()}"


def duration_text(seconds: float) -> str:
    """``45s``, ``3m05s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Tally:
    """What a run has done so far, from its events: finished count, spend, in flight, ETA."""

    def __init__(self) -> None:
        self.total = 0
        self.finished = 0
        self.spent = 0.0
        self.started = time.monotonic()
        self.worked = 0  # finished shots that were not simply cached: they set the pace
        self.in_flight: dict[str, tuple[str, float]] = {}  # shot -> (what it is doing, since)
        self.stitch: tuple[str, float, float] | None = None  # (step, fraction, step started)

    def observe(self, event: Event) -> None:
        now = time.monotonic()
        if event.kind == "start":
            self.total, self.started = event.total, now
        elif event.total and not self.total:
            self.total = event.total
        if event.kind == "submitted" and event.cost_usd:
            self.spent += event.cost_usd
        if event.shot_id is not None:
            if event.kind in TERMINAL_KINDS:
                self.finished += 1
                self.worked += event.kind != "skipped-cached"
                self.in_flight.pop(event.shot_id, None)
            else:
                label = event.status if event.kind == "polling" and event.status else event.kind
                since = self.in_flight.get(event.shot_id, (label, now))[1] if event.kind == "polling" else now
                self.in_flight[event.shot_id] = (label, since)
        if event.kind == "stitch-progress":
            step = str(event.extra.get("step", event.message or "stitching"))
            fraction = float(event.extra.get("fraction", 0.0))
            started = self.stitch[2] if self.stitch is not None and self.stitch[0] == step else now
            self.stitch = (step, fraction, started)
        elif event.kind in ("stitched", "stitch-skipped"):
            self.stitch = None

    def eta(self) -> float | None:
        """Seconds left: the stitch's from its progress, the render's from the pace of finished shots."""
        now = time.monotonic()
        if self.stitch is not None:
            _, fraction, started = self.stitch
            if fraction <= 0.02:
                return None
            return (now - started) * (1 - fraction) / fraction
        left = self.total - self.finished
        if left <= 0 or self.worked == 0:
            return None
        return (now - self.started) / self.worked * left

    def summary(self) -> str:
        """``4/12 finished · spent $0.7700 · eta 1m20s`` (the parts that are known)."""
        parts = []
        if self.total:
            parts.append(f"{self.finished}/{self.total} finished")
        if self.spent:
            parts.append(f"spent ${self.spent:.4f}")
        eta = self.eta()
        if eta is not None:
            parts.append(f"eta {duration_text(eta)}")
        return " · ".join(parts)

    def heartbeat(self) -> str:
        """What is still going on, for a line when nothing else was printed for a while."""
        now = time.monotonic()
        if self.stitch is not None:
            step, fraction, _ = self.stitch
            eta = self.eta()
            return f"still stitching: {step} {fraction:.0%}" + (f" · eta {duration_text(eta)}" if eta else "")
        busy = sorted(self.in_flight.items(), key=lambda kv: kv[1][1])
        shown = [f"{sid}: {label} for {duration_text(now - since)}" for sid, (label, since) in busy[:3]]
        if len(busy) > 3:
            shown.append(f"+{len(busy) - 3} more")
        text = "still working"
        if busy:
            text += f": {len(busy)} in flight ({'; '.join(shown)})"
        tail = self.summary()
        return f"{text} · {tail}" if tail else text


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class NullSink:
    def emit(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


class ListSink:
    """Keeps every event (tests, and callers that summarise afterwards)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass

    def kinds(self, shot_id: str | None = None) -> list[str]:
        return [e.kind for e in self.events if shot_id is None or e.shot_id == shot_id]


class _Heartbeat:
    """A daemon thread that calls ``beat`` when nothing was written for ``interval`` seconds."""

    def __init__(self, interval: float, beat: Any, lock: threading.Lock) -> None:
        self.interval = interval
        self.last = time.monotonic()
        self._beat = beat
        self._lock = lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kling-render-heartbeat", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        self.last = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(max(0.01, self.last + self.interval - time.monotonic())):
            with self._lock:
                if time.monotonic() - self.last >= self.interval:
                    try:
                        self._beat()
                    except Exception:  # a closed stream: progress is best effort
                        return
                    self.last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _heartbeat_interval(value: float | None) -> float:
    if value is not None:
        return value
    from kling_render import env

    return env.heartbeat_seconds()


class PlainSink:
    """One line per event, with the clock time and the count of finished shots; ``polling`` only
    when the task status changes; stitch progress only in heartbeat lines."""

    def __init__(self, stream: IO[str] | None = None, *, heartbeat: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tally = Tally()
        self._lock = threading.Lock()
        self._heartbeat = _Heartbeat(_heartbeat_interval(heartbeat), self._beat, self._lock)

    def _line(self, text: str) -> None:
        self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        self.stream.flush()
        self._heartbeat.wrote()

    def _beat(self) -> None:
        self._line(self.tally.heartbeat())

    def emit(self, event: Event) -> None:
        with self._lock:
            self.tally.observe(event)
            if event.kind in ("start", "stitch-progress"):
                return
            if event.shot_id is None:
                self._line(event.body())
                return
            tally = self.tally
            line = f"[{tally.finished}/{tally.total or event.total}] {event.body()}"
            if event.kind in TERMINAL_KINDS and (summary := progress_tail(tally)):
                line += f" · {summary}"
            self._line(line)

    def close(self) -> None:
        self._heartbeat.stop()


def progress_tail(tally: Tally) -> str:
    parts = []
    if tally.spent:
        parts.append(f"spent ${tally.spent:.4f}")
    eta = tally.eta()
    if eta is not None and tally.finished < tally.total:
        parts.append(f"eta {duration_text(eta)}")
    return " · ".join(parts)


class JsonLinesSink:
    """One JSON object per event. Besides the event's own fields each carries ``ts`` and, for
    shot events, the running ``finished``, ``spent_usd`` and ``eta_seconds``; stitch progress
    comes every 5 %; a ``heartbeat`` event comes when nothing else did for a while."""

    def __init__(self, stream: IO[str] | None = None, *, heartbeat: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tally = Tally()
        self._lock = threading.Lock()
        self._last_fraction: tuple[str, float] | None = None
        self._write({"version": JSON_EVENTS_VERSION, "stream": "kling-render events"})
        self._heartbeat = _Heartbeat(_heartbeat_interval(heartbeat), self._beat, self._lock)

    def _write(self, doc: dict[str, Any]) -> None:
        self.stream.write(json_text(doc, sort_keys=True) + "\n")
        self.stream.flush()
        if hasattr(self, "_heartbeat"):
            self._heartbeat.wrote()

    def _beat(self) -> None:
        event = Event("heartbeat", message=self.tally.heartbeat(), total=self.tally.total)
        doc = event.to_json()
        doc.update(self._running())
        doc["in_flight"] = sorted(self.tally.in_flight)
        self._write(doc)

    def _running(self) -> dict[str, Any]:
        eta = self.tally.eta()
        return {
            "finished": self.tally.finished,
            "spent_usd": round(self.tally.spent, 4),
            "eta_seconds": None if eta is None else round(eta, 1),
        }

    def emit(self, event: Event) -> None:
        with self._lock:
            self.tally.observe(event)
            if event.kind == "stitch-progress":
                step, fraction = str(event.extra.get("step")), float(event.extra.get("fraction", 0.0))
                last = self._last_fraction
                if last is not None and last[0] == step and fraction < 1.0 and fraction - last[1] < 0.05:
                    return
                self._last_fraction = (step, fraction)
            doc = event.to_json()
            if event.shot_id is not None or event.kind in ("stitch-progress", "finish"):
                doc.update(self._running())
            self._write(doc)

    def close(self) -> None:
        self._heartbeat.stop()
