"""Issue 23, item 14: progress on a terminal. Lines above the bars carry the clock time and count
finished shots in order; the stitch bar is in percent; a shot in flight shows no ``0/?``; the ETA
says "after the first clip" before one has landed; nothing of the bars stays in the scrollback.

A small terminal model (cursor up, erase line, carriage return) replays what was written, so the
tests look at the screen a person would see, once through rich's Console forced to be a terminal,
and once through the real CLI on a pseudo-terminal.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from e2e_cli import EXAMPLE, base_env
from rich.console import Console

from kling_render.report.live import RichSink
from kling_render.report.progress import Event

STAMP = r"\d\d:\d\d:\d\d "
ESCAPE = re.compile(r"\x1b\[(\??)([\d;]*)([A-Za-z])")


def screen(raw: str) -> list[str]:
    """The lines left on a terminal (scrollback included) after ``raw`` was written to it."""
    lines = [""]
    row = col = 0
    i = 0
    while i < len(raw):
        m = ESCAPE.match(raw, i)
        if m:
            private, number, op = m.groups()
            if not private and op == "A":
                row = max(0, row - int(number or 1))
            elif not private and op == "K":  # erase in line: to its end (0), or all of it (2)
                lines[row] = "" if number == "2" else lines[row][:col]
            i = m.end()
            continue
        ch = raw[i]
        if ch == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append("")
        elif ch == "\r":
            col = 0
        elif ch >= " ":
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1 :]
            col += 1
        i += 1
    return [line.rstrip() for line in lines if line.strip()]


def test_the_live_display_counts_in_order_with_clock_times_and_leaves_no_bars() -> None:
    out = io.StringIO()
    sink = RichSink(console=Console(file=out, force_terminal=True, width=110, color_system=None))
    sink.emit(Event("start", total=4))
    sink.emit(Event("skipped-cached", shot_id="a", index=1, total=4))
    for sid, n in (("d", 4), ("b", 2), ("c", 3)):
        sink.emit(Event("submitted", shot_id=sid, index=n, total=4, task_id=f"t-{sid}", cost_usd=0.25))
    sink.progress.refresh()
    before = out.getvalue()
    # a shot in flight has no count; only cached shots finished: no guess at the ETA yet
    assert "0/?" not in before and "eta after the first clip" in before, before
    # shots finish in another order than their position in the project
    sink.emit(Event("done", shot_id="d", index=4, total=4, cost_usd=0.25))
    sink.emit(Event("failed", shot_id="b", index=2, total=4, message="moderation"))
    sink.emit(Event("done", shot_id="c", index=3, total=4, cost_usd=0.25))
    sink.emit(Event("stitching", message="4 clips -> final.mp4"))
    for fraction in (0.1, 0.44):
        sink.emit(Event("stitch-progress", extra={"step": "encoding", "fraction": fraction}))
        sink.progress.refresh()
    sink.emit(Event("stitched", message="final.mp4 (12.00 s, 288 frames, re-encoded)"))
    sink.close()
    raw = out.getvalue()
    assert "44%" in raw and "/1000" not in raw and "0/?" not in raw
    lines = screen(raw)
    assert not any("━" in line for line in lines), lines  # no frame of a bar left behind
    assert all(re.match(STAMP, line) for line in lines), lines
    counted = [line for line in lines if "] " in line]
    assert [re.search(r"\[(\d)/4\]", line).group(1) for line in counted] == ["2", "3", "4"], lines  # type: ignore[union-attr]
    assert re.fullmatch(STAMP + r"\[2/4\] d: done \(\$0\.2500\) · spent \$0\.7500 · eta \d+s", counted[0]), counted
    assert lines[-1].endswith("stitched: final.mp4 (12.00 s, 288 frames, re-encoded)")


def test_many_shots_in_flight_get_a_bounded_number_of_lines() -> None:
    out = io.StringIO()
    sink = RichSink(console=Console(file=out, force_terminal=True, width=100, height=40, color_system=None))
    sink.emit(Event("start", total=30))
    for n in range(30):
        sink.emit(Event("submitted", shot_id=f"s{n:02d}", index=n + 1, total=30, task_id=f"t{n}"))
    shown = [t for t in sink.progress.tasks if t.visible and t.fields.get("kind") == "shot"]
    assert len(shown) == RichSink.MAX_SHOT_LINES
    sink.progress.refresh()
    assert f"+{30 - RichSink.MAX_SHOT_LINES} more in flight" in out.getvalue()
    sink.emit(Event("done", shot_id="s00", index=1, total=30))
    shown = [t for t in sink.progress.tasks if t.visible and t.fields.get("kind") == "shot"]
    assert len(shown) == RichSink.MAX_SHOT_LINES  # the next shot took the freed line
    sink.close()


PROJECT = """\
version: 1
name: tty
provider: local
defaults: {model: kling-video-o3-std/image-to-video, duration: 3}
shots:
  - {id: one, prompt: "a mug", image: images/mug.png}
  - {id: two, prompt: "the mug, full", image: images/mug-full.png, transition: {type: fade, duration: 0.5}}
  - {id: three, prompt: "the mug again", image: images/mug-side.png}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
"""


def run_on_a_terminal(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run ``args`` with stdin/stdout/stderr on a pseudo-terminal; its exit code and all it wrote."""
    main, child = pty.openpty()
    os.set_blocking(main, False)
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: every process holding the terminal has closed it
                    data = b""
                if not data:
                    break  # readable but nothing to read: the end (select would say ready forever)
                chunks.append(data)
                continue
            if proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_the_cli_on_a_pseudo_terminal(tmp_path: Path) -> None:
    root = tmp_path / "tty"
    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(PROJECT)
    env = base_env(KLING_RENDER_CACHE=str(tmp_path / "cache"), TERM="xterm-256color", COLUMNS="110", LINES="30")
    code, raw = run_on_a_terminal([sys.executable, "-m", "kling_render", "render"], root, env)
    assert code == 0, raw
    assert "0/?" not in raw and "/1000" not in raw
    lines = screen(raw.replace("\r\n", "\n"))
    assert not any("━" in line for line in lines), lines
    counted = [line for line in lines if re.match(STAMP + r"\[\d/3\] ", line)]
    assert [line.split("]")[0][-3:] for line in counted] == ["1/3", "2/3", "3/3"], lines
    assert any(re.match(STAMP + "stitched:", line) for line in lines), lines
    assert lines[-1].startswith("final cut: ") or lines[-1].startswith("tty: "), lines
