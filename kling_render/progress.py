"""Progress of a render as events, shown on stderr: live bars on a terminal, plain lines otherwise.

Nothing here writes to stdout. ``JsonLinesSink`` writes one JSON object per event (after a
``{"version": 1, ...}`` header line) for machine consumers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

EVENT_KINDS = (
    "start",  # the run begins: total = shots in this run
    "skipped-cached",
    "submitting",
    "submitted",
    "polling",  # the provider reported a new task status
    "downloaded",
    "retry",  # a task failed and is submitted again
    "reconciled",  # an unknown submit was found in the provider's task list (adopted), or proved absent
    "done",
    "failed",
    "unknown",
    "budget-stop",
    "account-stop",  # the account cannot run tasks (key rejected, no balance): no more submits
    "finish",  # the run ends: message = summary
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

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"event": self.kind}
        for name in ("shot_id", "index", "total", "task_id", "status", "cost_usd", "message"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        doc.update(self.extra)
        return doc

    def text(self) -> str:
        """One plain line: ``[3/12] intro: submitted (task abc123)``."""
        if self.shot_id is None:
            return f"{self.kind}: {self.message}" if self.message else self.kind
        detail = {
            "submitted": f"task {self.task_id}" if self.task_id else None,
            "polling": f"task {self.task_id} is {self.status}",
            "done": f"${self.cost_usd:.4f}" if self.cost_usd else None,
        }.get(self.kind)
        parts = [p for p in (detail, self.message) if p]
        tail = f" ({'; '.join(parts)})" if parts else ""
        return f"[{self.index}/{self.total}] {self.shot_id}: {self.kind}{tail}"


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


class PlainSink:
    """One line per event; ``polling`` only when the task status changes."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr

    def emit(self, event: Event) -> None:
        if event.kind == "start":
            return
        self.stream.write(event.text() + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class JsonLinesSink:
    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._write({"version": JSON_EVENTS_VERSION, "stream": "kling-render events"})

    def _write(self, doc: dict[str, Any]) -> None:
        self.stream.write(json.dumps(doc, sort_keys=True) + "\n")
        self.stream.flush()

    def emit(self, event: Event) -> None:
        self._write(event.to_json())

    def close(self) -> None:
        pass


class RichSink:
    """Live progress on a terminal: one bar for the run, one line per shot in flight."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream if stream is not None else sys.stderr)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._overall: Any = None
        self._shots: dict[str, Any] = {}
        self.progress.start()

    def emit(self, event: Event) -> None:
        p = self.progress
        if event.kind == "start":
            self._overall = p.add_task("render", total=event.total or None)
            return
        if event.shot_id is None:
            if event.message:
                p.console.print(event.text())
            return
        task = self._shots.get(event.shot_id)
        if task is None:
            task = p.add_task(f"  {event.shot_id}", total=None)
            self._shots[event.shot_id] = task
        label = event.status if event.kind == "polling" else event.kind
        p.update(task, description=f"  {event.shot_id}: {label}")
        if event.kind in TERMINAL_KINDS:
            p.remove_task(task)
            del self._shots[event.shot_id]
            if event.kind != "skipped-cached":
                p.console.print(event.text())
            if self._overall is not None:
                p.advance(self._overall)

    def close(self) -> None:
        self.progress.stop()


def make_sink(*, json_lines: bool = False, stream: IO[str] | None = None) -> EventSink:
    """JSON lines if asked, live bars when ``stream`` (default stderr) is a terminal, else plain lines."""
    out = stream if stream is not None else sys.stderr
    if json_lines:
        return JsonLinesSink(out)
    if out.isatty():
        return RichSink(out)
    return PlainSink(out)
