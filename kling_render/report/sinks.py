"""Which progress sink a command writes to: JSON lines, live bars on a terminal, or plain lines."""

from __future__ import annotations

import sys
from typing import IO

from kling_render.report.progress import EventSink, JsonLinesSink, PlainSink

__all__ = ["make_sink"]


def make_sink(*, json_lines: bool = False, stream: IO[str] | None = None) -> EventSink:
    """JSON lines if asked, live bars when ``stream`` (default stderr) is a terminal, else plain lines."""
    out = stream if stream is not None else sys.stderr
    if json_lines:
        return JsonLinesSink(out)
    if out.isatty():
        from kling_render.report.live import RichSink  # rich is imported only for a terminal

        return RichSink(out)
    return PlainSink(out)
