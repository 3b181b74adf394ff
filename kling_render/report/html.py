"""The HTML report: one self-contained page with a contact sheet of every shot and the final cut.

Self-contained means it needs no network when viewed: inline CSS, no fonts or scripts, every
frame a base64 JPEG ``data:`` URI. The final cut is embedded the same way when it is smaller
than ``EMBED_VIDEO_MAX_BYTES``; a larger one is referenced by its path relative to the report,
so it plays only while the report stays beside the project's renders.

Each shot's clip is playable in its card (embedded while small, else linked from the clip
cache), and the final cut carries a check against its stitch manifest: a cut that no longer
matches the project's clips and settings, or that was made from another provider's clips, is
flagged, and the totals give the cut's real length (frames / fps from the stitch).

This module is pure (data in, HTML out); ``report_collect`` does the reading, the ffmpeg frame
grabs and the checks, and ``collect.write_report`` writes the page.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from kling_render.report import inputs_html
from kling_render.report.inputs_html import StillCard, TakeCard

if TYPE_CHECKING:
    pass

__all__ = [
    "EMBED_CLIPS_TOTAL_BYTES",
    "EMBED_CLIP_MAX_BYTES",
    "EMBED_VIDEO_MAX_BYTES",
    "THUMB_WIDTH",
    "CutCheck",
    "Frames",
    "ReportData",
    "ShotCard",
    "StillCard",
    "TakeCard",
    "VideoSource",
    "render_html",
    "video_source",
]

EMBED_VIDEO_MAX_BYTES = 50 * 1024 * 1024
# Each shot's clip is embedded too when it is small (local animatics, short clips), up to a total,
# so the page stays a reasonable size; bigger ones are linked by their path in the clip cache.
EMBED_CLIP_MAX_BYTES = 8 * 1024 * 1024
EMBED_CLIPS_TOTAL_BYTES = 64 * 1024 * 1024
THUMB_WIDTH = 320
STATUS_LABELS = {
    "done": "done",
    "pending": "pending",
    "submitting": "submitting",
    "submitted": "rendering",
    "failed": "failed",
    "unknown": "unknown",
}


@dataclass(frozen=True)
class Frames:
    """First and last frame of a clip as JPEG bytes (None when the clip could not be read)."""

    first: bytes | None
    last: bytes | None
    error: str | None = None


@dataclass(frozen=True)
class ShotCard:
    """Everything one card shows; built from the plan, the state file, the lock and the cache."""

    id: str
    index: int
    model: str
    duration: int
    sound: bool
    prompt: str
    negative_prompt: str | None
    price_usd: float
    spent_usd: float
    status: str
    task_id: str | None
    submitted_at: str | None
    finished_at: str | None
    error: str | None
    transition: str
    trim: str | None
    frames: Frames | None  # None: no clip in the cache yet
    clip: VideoSource | None = None  # the shot's own clip, playable in the card
    # Inputs the local provider could not fetch (URLs), drawn as a grey slate in its animatic.
    placeholders: tuple[str, ...] = ()
    takes: tuple[TakeCard, ...] = ()  # a shot with several takes: each, side by side (inputs_html)


@dataclass(frozen=True)
class VideoSource:
    """Where the page's <video> finds the final cut: a data: URI or a path relative to the report."""

    src: str
    embedded: bool
    size: int


@dataclass(frozen=True)
class CutCheck:
    """Whether the final cut is the one the project makes now, and its real length."""

    state: str  # "current" | "stale" | "unverified" (no stitch record for this file)
    reasons: tuple[str, ...] = ()
    frames: int | None = None
    fps: float | None = None
    duration: float | None = None
    measured: bool = False  # the length was probed from the file, not taken from the stitch record
    stitched_at: str | None = None


@dataclass(frozen=True)
class ReportData:
    project: str
    project_file: str
    provider: str
    generated_at: str
    aspect: tuple[int, int]  # output width, height: the shape of pending placeholders
    shots: Sequence[ShotCard]
    final_cut: VideoSource | None
    final_cut_name: str
    poster: bytes | None = None  # the cut's first frame (JPEG), shown before it plays
    cut_check: CutCheck | None = None
    stills: tuple[StillCard, ...] = ()  # the project's stills, shown before the shots


# -- pure: data -> HTML ------------------------------------------------------------------------


def video_source(data: bytes | None, path: Path, report_dir: Path, *, size: int) -> VideoSource:
    """Embed ``data`` when given (the caller read a small file), else point at ``path`` relatively."""
    if data is not None:
        return VideoSource("data:video/mp4;base64," + base64.b64encode(data).decode("ascii"), True, size)
    rel = os.path.relpath(path, report_dir)
    return VideoSource(quote(Path(rel).as_posix()), False, size)


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _money(value: float) -> str:
    return f"${value:.4f}" if value else "$0"


def clock(iso: str | None) -> str:
    """``2026-11-21T19:33:03+00:00`` -> ``2026-11-21 19:33:03``; other text as it is."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _elapsed(start: str | None, end: str | None) -> str | None:
    if not start or not end:
        return None
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (ValueError, TypeError):
        return None
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _frame(jpeg: bytes | None, label: str, shot_id: str) -> str:
    caption = f'<figcaption>{escape(label)}</figcaption>'
    if jpeg is None:
        return f'<figure class="frame missing"><div class="ph">no frame</div>{caption}</figure>'
    alt = escape(f"{shot_id}: {label}")
    return f'<figure class="frame"><img src="{_data_uri(jpeg)}" alt="{alt}">{caption}</figure>'


def _frames_html(card: ShotCard) -> str:
    if card.frames is None:
        label = STATUS_LABELS.get(card.status, card.status)
        return (
            f'<div class="frames pending"><div class="ph">{escape(label)}'
            "<small>no clip yet</small></div></div>"
        )
    parts = [_frame(card.frames.first, "first frame", card.id), _frame(card.frames.last, "last frame", card.id)]
    note = ""
    if card.frames.error:
        note = f'<p class="err">frames: {escape(card.frames.error)}</p>'
    return f'<div class="frames">{"".join(parts)}</div>{note}'


def _row(name: str, value: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<dt>{escape(name)}</dt><dd{attr}>{escape(value)}</dd>"


def _card_html(card: ShotCard, project_file: str = "the project file") -> str:
    status = escape(card.status)
    rows = [
        _row("model", card.model, "mono"),
        _row("duration", f"{card.duration} s" + (f" · trim {card.trim}" if card.trim else "")),
        _row("sound", "yes" if card.sound else "no"),
        _row("cost", f"{_money(card.price_usd)} list · {_money(card.spent_usd)} spent"),
        _row("task", card.task_id or "-", "mono"),
        _row("submitted", clock(card.submitted_at)),
        _row(
            "finished",
            clock(card.finished_at)
            + (f" ({took})" if (took := _elapsed(card.submitted_at, card.finished_at)) else ""),
        ),
        _row("transition in", card.transition),
    ]
    negative = ""
    if card.negative_prompt:
        negative = f'<p class="neg"><span>negative</span> {escape(card.negative_prompt)}</p>'
    error = f'<p class="err">{escape(card.error)}</p>' if card.error else ""
    if card.placeholders:
        inputs = ", ".join(card.placeholders)
        error += (
            f'<p class="warn">placeholder: {escape(inputs)} is a URL, which the local provider does not '
            "fetch: its animatic shows a grey slate there, not the picture</p>"
        )
    clip = ""
    if card.clip is not None:
        how = "" if card.clip.embedded else " (linked from the clip cache)"
        clip = (
            f'<details class="clip"><summary>play clip{escape(how)}</summary>'
            f'<video controls preload="none" src="{escape(card.clip.src)}"></video></details>'
        )
    return (
        f'<article class="card" id="shot-{escape(card.id)}" data-shot="{escape(card.id)}" '
        f'data-status="{status}">'
        f'<header><span class="num">{card.index + 1:02d}</span>'
        f'<h2>{escape(card.id)}</h2><span class="pill s-{status}">{status}</span></header>'
        f"{_frames_html(card)}{clip}{inputs_html.takes_html(card.id, card.takes, project_file)}"
        f'<blockquote class="prompt">{escape(card.prompt) or "<em>no prompt</em>"}</blockquote>'
        f"{negative}{error}"
        f'<dl>{"".join(rows)}</dl>'
        "</article>"
    )


def _final_cut_html(data: ReportData) -> str:
    name = escape(data.final_cut_name)
    if data.final_cut is None:
        return f'<section class="cut"><h2>Final cut</h2><p class="muted">{name}: not stitched yet</p></section>'
    size_mb = data.final_cut.size / (1024 * 1024)
    how = (
        "embedded in this page"
        if data.final_cut.embedded
        else f"linked, not embedded (over {EMBED_VIDEO_MAX_BYTES // (1024 * 1024)} MB): "
        "keep the report beside the renders"
    )
    poster = f' poster="{_data_uri(data.poster)}"' if data.poster else ""
    return (
        '<section class="cut"><h2>Final cut</h2>'
        f"{_check_html(data.cut_check)}"
        f'<video controls preload="metadata"{poster} src="{escape(data.final_cut.src)}"></video>'
        f'<p class="muted">{name} · {size_mb:.1f} MB · {escape(how)}</p></section>'
    )


def _check_html(check: CutCheck | None) -> str:
    if check is None:
        return ""
    if check.state == "current":
        when = f" (stitched {clock(check.stitched_at)} UTC)" if check.stitched_at else ""
        return f'<p class="ok" data-cut="current">up to date: made from the clips and settings shown below{when}</p>'
    if check.state == "stale":
        items = "".join(f"<li>{escape(r)}</li>" for r in check.reasons)
        return (
            '<div class="stale" data-cut="stale"><b>Stale: this cut is not the one the project makes now.</b>'
            f"<ul>{items}</ul>Run <code>kling-render stitch</code> to make it again.</div>"
        )
    return (
        '<div class="stale" data-cut="unverified"><b>Unverified: no stitch record matches this file</b> '
        "(made by hand, by an older kling-render, or changed since); it may not match the shots below.</div>"
    )


def _cut_length(check: CutCheck | None) -> str:
    if check is None or check.duration is None:
        return "not stitched"
    text = f"{check.duration:.2f} s"
    if check.frames is not None and check.fps:
        text += f" · {check.frames} frames @ {check.fps:g} fps"
    return text + (" (probed)" if check.measured else "")


def _totals(shots: Sequence[ShotCard], check: CutCheck | None = None) -> list[tuple[str, str]]:
    counts: dict[str, int] = {}
    for card in shots:
        counts[card.status] = counts.get(card.status, 0) + 1
    return [
        ("shots", str(len(shots))),
        ("status", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "-"),
        ("final cut", _cut_length(check)),
        ("generated", f"{sum(c.duration for c in shots)} s of clips"),
        ("list price", _money(sum(c.price_usd for c in shots))),
        ("spent", _money(sum(c.spent_usd for c in shots))),
    ]


CSS = """
:root{--bg:#f4f5f7;--card:#fff;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;--accent:#3d5afe}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.top{background:#161b26;color:#f2f4f7;padding:28px 32px 22px}
.top h1{margin:0 0 4px;font-size:26px;font-weight:650;letter-spacing:-.01em}
.top .sub{color:#98a2b3;font-size:13px}
.totals{display:flex;flex-wrap:wrap;gap:10px;margin-top:18px}
.totals div{background:#232a38;border-radius:8px;padding:8px 14px;min-width:110px}
.totals b{display:block;font-size:17px;font-weight:600;color:#fff}
.totals span{font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:#98a2b3}
main{padding:24px 32px 40px;max-width:1800px}
.cut{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 18px;margin-bottom:24px}
.cut h2,.sheet>h2{margin:0 0 10px;font-size:16px}
.cut video{display:block;width:100%;max-width:720px;border-radius:8px;background:#000}
.muted{color:var(--muted);margin:8px 0 0;font-size:12.5px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 16px 12px;
 box-shadow:0 1px 2px rgba(16,24,40,.05)}
.card header{display:flex;align-items:center;gap:10px;margin-bottom:10px}
.card h2{margin:0;font-size:16px;font-weight:600;flex:1;overflow-wrap:anywhere}
.num{font:600 12px/1 ui-monospace,Menlo,Consolas,monospace;color:var(--muted)}
.pill{font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.05em;border-radius:999px;
 padding:3px 9px;background:#eaecf0;color:#344054}
.s-done{background:#dcfae6;color:#067647}.s-failed{background:#fee4e2;color:#b42318}
.s-unknown{background:#fef0c7;color:#b54708}.s-submitted,.s-submitting{background:#e0eaff;color:#3538cd}
.frames{display:grid;grid-template-columns:1fr 1fr;gap:8px}
.frame{margin:0}
.frame img{display:block;width:100%;border-radius:6px;background:#0b0d12}
.frame figcaption{font-size:11px;color:var(--muted);margin-top:3px}
.ph{display:flex;flex-direction:column;align-items:center;justify-content:center;gap:2px;
 aspect-ratio:var(--aspect);border-radius:6px;border:2px dashed #d0d5dd;background:#f9fafb;
 color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.06em;font-size:12px}
.ph small{font-weight:400;text-transform:none;letter-spacing:0}
.frames.pending{display:block}
.frames.pending .ph{aspect-ratio:calc(var(--aspect) * 2)}
.prompt{margin:12px 0 8px;padding:8px 12px;border-left:3px solid var(--accent);background:#f5f7ff;
 border-radius:0 6px 6px 0;font-size:13.5px;white-space:pre-wrap;overflow-wrap:anywhere}
.neg{margin:0 0 8px;font-size:12.5px;color:var(--muted)}
.neg span{font-weight:600;text-transform:uppercase;font-size:10.5px;letter-spacing:.06em}
.err{margin:6px 0;color:#b42318;font-size:12.5px;overflow-wrap:anywhere}
.warn{margin:6px 0;color:#b54708;background:#fffaeb;border-radius:6px;padding:4px 8px;font-size:12.5px}
.ok{margin:0 0 10px;color:#067647;font-size:13px}
.stale{margin:0 0 10px;padding:10px 14px;border-radius:8px;background:#fef3f2;border:1px solid #fda29b;
 color:#b42318;font-size:13px}
.stale ul{margin:6px 0;padding-left:20px}
.clip{margin:8px 0 0;font-size:12.5px;color:var(--muted)}
.clip video{display:block;width:100%;margin-top:6px;border-radius:6px;background:#000}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 12px;margin:8px 0 0;font-size:12.5px}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
footer{color:var(--muted);font-size:12px;padding:0 32px 28px}
"""


def render_html(data: ReportData) -> str:
    """The whole page as one string; every user-supplied text is escaped."""
    width, height = data.aspect
    totals = "".join(
        f"<div><b>{escape(v)}</b><span>{escape(k)}</span></div>" for k, v in _totals(data.shots, data.cut_check)
    )
    cards = "".join(_card_html(card, data.project_file) for card in data.shots)
    note = ""
    if data.provider == "local":
        note = " · local animatics are free; list prices show what wavespeed would charge"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(data.project)} · kling-render report</title>"
        f"<style>{CSS}{inputs_html.CSS}:root{{--aspect:{width}/{height}}}</style></head>\n"
        "<body>"
        f'<header class="top"><h1>{escape(data.project)}</h1>'
        f'<div class="sub">{escape(data.project_file)} · provider <b>{escape(data.provider)}</b>'
        f" · generated {escape(clock(data.generated_at))} UTC{escape(note)}</div>"
        f'<div class="totals">{totals}</div></header>\n'
        f"<main>{_final_cut_html(data)}{inputs_html.stills_html(data.stills)}"
        f'<section class="sheet"><h2>Shots</h2><div class="grid">{cards}</div></section></main>\n'
        "<footer>kling-render report · self-contained: frames and (when small) the final cut are "
        "embedded in this file</footer>"
        "</body></html>\n"
    )
