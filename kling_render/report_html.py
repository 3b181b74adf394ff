"""The HTML report: one self-contained page with a contact sheet of every shot and the final cut.

Self-contained means it needs no network when viewed: inline CSS, no fonts or scripts, every
frame a base64 JPEG ``data:`` URI. The final cut is embedded the same way when it is smaller
than ``EMBED_VIDEO_MAX_BYTES``; a larger one is referenced by its path relative to the report,
so it plays only while the report stays beside the project's renders.

``build_report`` and ``render_html`` are pure (data in, data out); ``collect`` and
``write_report`` do the reading, the ffmpeg frame grabs and the writing.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from html import escape
from pathlib import Path
from urllib.parse import quote

from kling_render.catalog import usd
from kling_render.errors import FFmpegError
from kling_render.project import Project

__all__ = [
    "EMBED_VIDEO_MAX_BYTES",
    "THUMB_WIDTH",
    "Frames",
    "ReportData",
    "ShotCard",
    "VideoSource",
    "default_report_path",
    "extract_frames",
    "extract_poster",
    "render_html",
    "video_source",
    "write_report",
]

EMBED_VIDEO_MAX_BYTES = 50 * 1024 * 1024
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


@dataclass(frozen=True)
class VideoSource:
    """Where the page's <video> finds the final cut: a data: URI or a path relative to the report."""

    src: str
    embedded: bool
    size: int


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


def _clock(iso: str | None) -> str:
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


def _card_html(card: ShotCard) -> str:
    status = escape(card.status)
    rows = [
        _row("model", card.model, "mono"),
        _row("duration", f"{card.duration} s" + (f" · trim {card.trim}" if card.trim else "")),
        _row("sound", "yes" if card.sound else "no"),
        _row("cost", f"{_money(card.price_usd)} list · {_money(card.spent_usd)} spent"),
        _row("task", card.task_id or "-", "mono"),
        _row("submitted", _clock(card.submitted_at)),
        _row(
            "finished",
            _clock(card.finished_at)
            + (f" ({took})" if (took := _elapsed(card.submitted_at, card.finished_at)) else ""),
        ),
        _row("transition in", card.transition),
    ]
    negative = ""
    if card.negative_prompt:
        negative = f'<p class="neg"><span>negative</span> {escape(card.negative_prompt)}</p>'
    error = f'<p class="err">{escape(card.error)}</p>' if card.error else ""
    return (
        f'<article class="card" id="shot-{escape(card.id)}" data-shot="{escape(card.id)}" '
        f'data-status="{status}">'
        f'<header><span class="num">{card.index + 1:02d}</span>'
        f'<h2>{escape(card.id)}</h2><span class="pill s-{status}">{status}</span></header>'
        f"{_frames_html(card)}"
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
        f'<video controls preload="metadata"{poster} src="{escape(data.final_cut.src)}"></video>'
        f'<p class="muted">{name} · {size_mb:.1f} MB · {escape(how)}</p></section>'
    )


def _totals(shots: Sequence[ShotCard]) -> list[tuple[str, str]]:
    counts: dict[str, int] = {}
    for card in shots:
        counts[card.status] = counts.get(card.status, 0) + 1
    return [
        ("shots", str(len(shots))),
        ("status", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "-"),
        ("seconds", f"{sum(c.duration for c in shots)} s"),
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
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 12px;margin:8px 0 0;font-size:12.5px}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
footer{color:var(--muted);font-size:12px;padding:0 32px 28px}
"""


def render_html(data: ReportData) -> str:
    """The whole page as one string; every user-supplied text is escaped."""
    width, height = data.aspect
    totals = "".join(f"<div><b>{escape(v)}</b><span>{escape(k)}</span></div>" for k, v in _totals(data.shots))
    cards = "".join(_card_html(card) for card in data.shots)
    note = ""
    if data.provider == "local":
        note = " · local animatics are free; list prices show what wavespeed would charge"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(data.project)} · kling-render report</title>"
        f"<style>{CSS}:root{{--aspect:{width}/{height}}}</style></head>\n"
        "<body>"
        f'<header class="top"><h1>{escape(data.project)}</h1>'
        f'<div class="sub">{escape(data.project_file)} · provider <b>{escape(data.provider)}</b>'
        f" · generated {escape(_clock(data.generated_at))} UTC{escape(note)}</div>"
        f'<div class="totals">{totals}</div></header>\n'
        f"<main>{_final_cut_html(data)}"
        f'<section class="sheet"><h2>Shots</h2><div class="grid">{cards}</div></section></main>\n'
        "<footer>kling-render report · self-contained: frames and (when small) the final cut are "
        "embedded in this file</footer>"
        "</body></html>\n"
    )


# -- I/O: collecting the data ------------------------------------------------------------------


def default_report_path(project: Project) -> Path:
    """``<project dir>/renders/<project stem>-report.html``."""
    return project.root / "renders" / f"{project.stem}-report.html"


def extract_poster(video: Path, width: int = 2 * THUMB_WIDTH) -> bytes | None:
    """The first frame of ``video`` as a JPEG, or None when ffmpeg cannot read it."""
    from kling_render import ffmpeg

    with tempfile.TemporaryDirectory(prefix="kling-report-") as tmp:
        poster = Path(tmp) / "poster.jpg"
        args = ["-i", "file:" + str(video), "-frames:v", "1", "-vf", f"scale={width}:-2", "-q:v", "4"]
        try:
            ffmpeg.run([*args, "file:" + str(poster)], f"reading the first frame of {video.name}", timeout=120)
        except FFmpegError:
            return None
        return poster.read_bytes() if poster.is_file() else None


def extract_frames(clip: Path, width: int = THUMB_WIDTH) -> Frames:
    """First and last frame of ``clip`` as small JPEGs, with one ffmpeg run."""
    from kling_render import ffmpeg

    source = "file:" + str(clip)
    scale = f"scale={width}:-2"
    with tempfile.TemporaryDirectory(prefix="kling-report-") as tmp:
        first, last = Path(tmp) / "first.jpg", Path(tmp) / "last.jpg"
        args = [
            "-i", source,
            # Seek to half a second before the end; -update keeps overwriting, leaving the last frame.
            "-sseof", "-0.5", "-i", source,
            "-map", "0:v:0", "-frames:v", "1", "-vf", scale, "-q:v", "4", "file:" + str(first),
            "-map", "1:v:0", "-update", "1", "-vf", scale, "-q:v", "4", "file:" + str(last),
        ]  # fmt: skip
        try:
            ffmpeg.run(args, f"reading frames of {clip.name}", timeout=120)
        except FFmpegError as exc:
            return Frames(None, None, str(exc).strip().splitlines()[-1] if str(exc).strip() else "ffmpeg failed")
        return Frames(
            first.read_bytes() if first.is_file() else None,
            last.read_bytes() if last.is_file() else None,
        )


def _trim_text(start: float, end: float | None) -> str | None:
    if start == 0 and end is None:
        return None
    return f"{start:g}–{end:g} s" if end is not None else f"from {start:g} s"


def build_cards(
    project: Project,
    prices: Mapping[str, Fraction],
    status_docs: Mapping[str, Mapping[str, object]],
    timings: Mapping[str, tuple[str | None, str | None]],
    spent: Mapping[str, float],
    frames: Mapping[str, Frames],
) -> list[ShotCard]:
    """One card per shot, in project order, from data already read."""
    cards = []
    for shot in project.shots:
        doc = status_docs.get(shot.id, {})
        negative = shot.params.get("negative_prompt")
        submitted, finished = timings.get(shot.id, (None, None))
        task = doc.get("task_id")
        error = doc.get("error")
        cards.append(
            ShotCard(
                id=shot.id,
                index=shot.index,
                model=shot.model.id,
                duration=shot.duration,
                sound=shot.sound,
                prompt=shot.prompt,
                negative_prompt=negative if isinstance(negative, str) else None,
                price_usd=usd(prices.get(shot.id, Fraction(0))),
                spent_usd=spent.get(shot.id, 0.0),
                status=str(doc.get("status", "pending")),
                task_id=task if isinstance(task, str) else None,
                submitted_at=submitted,
                finished_at=finished,
                error=error if isinstance(error, str) else None,
                transition=(
                    shot.transition.type
                    if shot.transition.type == "cut"
                    else f"{shot.transition.type} {shot.transition.duration:g} s"
                ),
                trim=_trim_text(shot.trim.start, shot.trim.end),
                frames=frames.get(shot.id),
            )
        )
    return cards


def collect(project: Project, provider: str | None, report_dir: Path) -> ReportData:
    """Read the plan, state, lock and cache of ``project`` and grab every cached clip's frames."""
    from kling_render import pipeline
    from kling_render.cache import ClipCache
    from kling_render.commands import plan_for
    from kling_render.lockfile import read_lock
    from kling_render.state import StateStore, read_state

    plan = plan_for(project, provider, None)
    status = pipeline.status(project, plan.provider)
    docs = {doc["id"]: doc for doc in status["shots"]}
    recorded = read_state(StateStore.for_project(project.path).path)
    lock = read_lock(project.lock_path)
    cache = ClipCache.for_project(project.path)
    timings: dict[str, tuple[str | None, str | None]] = {}
    spent: dict[str, float] = {}
    frames: dict[str, Frames] = {}
    for planned in plan.shots:
        sid, key = planned.id, planned.job.key
        rec = recorded.get(sid)
        if rec is not None and rec.key == key:
            timings[sid] = (rec.submitted_at, rec.finished_at)
            spent[sid] = rec.cost_usd - rec.refunded_usd  # failed tasks are refunded
        entry = lock.get(sid)
        if entry is not None and entry.key == key:
            spent[sid] = max(spent.get(sid, 0.0), entry.cost_usd)
            if entry.task_id and not docs.get(sid, {}).get("task_id"):
                docs[sid] = {**docs.get(sid, {}), "task_id": entry.task_id}
        clip = cache.get(plan.provider, key)
        if clip is not None:
            frames[sid] = extract_frames(clip.path)
    out = project.output
    final: VideoSource | None = None
    poster = None
    if out.path.is_file():
        size = out.path.stat().st_size
        data = out.path.read_bytes() if size < EMBED_VIDEO_MAX_BYTES else None
        final = video_source(data, out.path, report_dir, size=size)
        poster = extract_poster(out.path)
    return ReportData(
        project=project.name,
        project_file=project.display,
        provider=plan.provider,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        aspect=(out.width, out.height),
        shots=build_cards(project, {p.id: p.cost for p in plan.shots}, docs, timings, spent, frames),
        final_cut=final,
        final_cut_name=os.path.relpath(out.path, project.root),
        poster=poster,
    )


def write_report(project: Project, provider: str | None, dest: Path | None = None) -> Path:
    """Write the self-contained HTML report of ``project`` and return its path.

    ``dest`` defaults to ``<project dir>/renders/<stem>-report.html``; the write is atomic.
    Each shot's first and last frame are embedded as JPEG data: URIs; shots without a cached
    clip are pending placeholders. The final cut (``output.path``) is embedded as a data: URI
    when under ``EMBED_VIDEO_MAX_BYTES`` (50 MB), else referenced by its path relative to the
    report, so a large cut plays only while the report stays where it was written.
    """
    from kling_render.fsutil import atomic_write_text

    target = (dest if dest is not None else default_report_path(project)).resolve()
    data = collect(project, provider, target.parent)
    atomic_write_text(target, render_html(data))
    return target
