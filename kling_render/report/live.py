"""Live progress on a terminal (rich): the run's bars, drawn from the same events and tally as
the plain log (progress.py), which this module only adds bars to."""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

from kling_render.report.progress import TERMINAL_KINDS, Event, Tally, duration_text, progress_tail


class RichSink:
    """Live progress on a terminal: one bar for the run (finished/total, spend, ETA), one line per
    shot in flight (its step and how long it has been at it), and a bar for the stitch in percent
    of ffmpeg's ``-progress`` with its ETA. Lines printed above the bars carry the clock time and
    the finished count in order, as the plain log does; the bars are erased when the run ends
    (transient), so no stale frame is left in the scrollback. Before the first clip lands the ETA
    says so rather than guessing from cached shots."""

    MAX_SHOT_LINES = 8  # shots in flight shown one per line; the rest are counted on the run bar

    def __init__(self, stream: IO[str] | None = None, *, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console if console is not None else Console(file=stream if stream is not None else sys.stderr)
        self.tally = Tally()
        self._lock = threading.Lock()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            _eta_column(self.tally),
            console=self.console,
            transient=True,
            # rich's own refresh thread would draw while another thread prints, each moving the
            # cursor by what it last saw: a frame is left in the scrollback. Every draw here holds
            # the sink's lock instead: events draw at once, a ticker keeps the clocks moving.
            auto_refresh=False,
        )
        self._overall: Any = None
        self._stitch: Any = None
        self._shots: dict[str, Any] = {}
        self._stop = threading.Event()
        self.progress.start()
        self._ticker = threading.Thread(target=self._tick, name="kling-render-progress", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self.progress.refresh()
                except Exception:  # a closed terminal: progress is best effort
                    return

    def _print(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _run_fields(self) -> tuple[str, str]:
        """The run bar's count (``4/12``) and info (spend, shots in flight without a line)."""
        t = self.tally
        hidden = max(0, len(t.in_flight) - self.MAX_SHOT_LINES)
        info = [f"spent ${t.spent:.4f}"] if t.spent else []
        info += [f"+{hidden} more in flight"] if hidden else []
        return (f"{t.finished}/{t.total}" if t.total else f"{t.finished}"), " · ".join(info)

    def emit(self, event: Event) -> None:
        with self._lock:  # events come from the run's threads: one at a time, counted in order
            self._emit(event)
            self.progress.refresh()

    def _emit(self, event: Event) -> None:
        p = self.progress
        self.tally.observe(event)
        if event.kind == "start":
            count, info = self._run_fields()
            self._overall = p.add_task("render", total=event.total or None, kind="run", count=count, info=info)
            return
        if event.kind == "stitch-progress":
            step = str(event.extra.get("step", "stitching"))
            fraction = min(1.0, max(0.0, float(event.extra.get("fraction", 0))))
            if self._stitch is None:
                self._stitch = p.add_task(f"stitch: {step}", total=100, kind="stitch", count="0%", info="")
            p.update(self._stitch, description=f"stitch: {step}", completed=100 * fraction, count=f"{fraction:.0%}")
            return
        if event.kind in ("stitched", "stitch-skipped") and self._stitch is not None:
            p.remove_task(self._stitch)
            self._stitch = None
        if event.shot_id is None:
            if event.message and event.kind != "stitching":
                self._print(event.body())
            return
        task = self._shots.get(event.shot_id)
        if task is None and event.kind not in TERMINAL_KINDS:
            visible = sum(1 for t in p.tasks if t.visible and t.fields.get("kind") == "shot") < self.MAX_SHOT_LINES
            task = p.add_task(f"  {event.shot_id}", total=None, kind="shot", count="", info="", visible=visible)
            self._shots[event.shot_id] = task
        if task is not None:
            label = event.status if event.kind == "polling" else event.kind
            p.update(task, description=f"  {event.shot_id}: {label}")
        if event.kind in TERMINAL_KINDS:
            if task is not None:
                p.remove_task(task)
                del self._shots[event.shot_id]
                self._reveal_next()
            if event.kind != "skipped-cached":
                tail = progress_tail(self.tally)
                self._print(f"[{self.tally.finished}/{self.tally.total or event.total}] {event.body()}"
                            + (f" · {tail}" if tail else ""))  # fmt: skip
        if self._overall is not None:
            count, info = self._run_fields()
            p.update(self._overall, completed=self.tally.finished, count=count, info=info)

    def _reveal_next(self) -> None:
        """A shot line freed: show the next shot in flight that had no line."""
        hidden = {t.id for t in self.progress.tasks if not t.visible}
        for task_id in self._shots.values():
            if task_id in hidden:
                self.progress.update(task_id, visible=True)
                return

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.progress.stop()
        self._ticker.join(timeout=5)


def _eta_column(tally: Tally) -> Any:
    """The ETA from the run's own tally (rich's guesses from the bar's speed): for the run, from the
    pace of clips that landed, "eta after the first clip" before one has; for the stitch, from
    ffmpeg's progress; nothing on a shot's line."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            kind = task.fields.get("kind")
            if kind == "stitch":
                eta = tally.eta() if tally.stitch is not None else None
                return Text(f"eta {duration_text(eta)}" if eta is not None else "")
            if kind != "run" or (tally.total and tally.finished >= tally.total):
                return Text("")
            if tally.worked == 0:
                return Text("eta after the first clip")
            eta = tally.eta()
            return Text(f"eta {duration_text(eta)}" if eta is not None else "")

    return EtaColumn()


__all__ = ["RichSink"]
