"""The report's I/O: reads the plan, state, lock, cache and stitch manifest of a project, grabs
frames with ffmpeg, and hands plain data to :mod:`kling_render.report.html` to draw."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

from kling_render.catalog.catalog import usd
from kling_render.errors import FFmpegError, StateError
from kling_render.fsutil import atomic_write_text
from kling_render.project.project import Project
from kling_render.report.html import (
    EMBED_CLIP_MAX_BYTES,
    EMBED_CLIPS_TOTAL_BYTES,
    EMBED_VIDEO_MAX_BYTES,
    THUMB_WIDTH,
    CutCheck,
    Frames,
    ReportData,
    ShotCard,
    VideoSource,
    render_html,
    video_source,
)

__all__ = [
    "build_cards",
    "check_cut",
    "collect",
    "default_report_path",
    "extract_frames",
    "extract_poster",
    "url_inputs",
    "write_report",
]


def default_report_path(project: Project) -> Path:
    """``<project dir>/renders/<label>-report.html``, the label as the lock file's (the stem of a
    ``.yaml`` file, else its full name: ``p.yaml`` and ``p.yml`` get a report each)."""
    from kling_render.records.lockfile import project_label

    return project.root / "renders" / f"{project_label(project.path)}-report.html"


def extract_poster(video: Path, width: int = 2 * THUMB_WIDTH) -> bytes | None:
    """The first frame of ``video`` as a JPEG, or None when ffmpeg cannot read it."""
    from kling_render.media import ffmpeg

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
    from kling_render.media import ffmpeg

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
    clips: Mapping[str, VideoSource] | None = None,
    provider: str = "",
) -> list[ShotCard]:
    """One card per shot, in project order, from data already read."""
    clips = clips or {}
    cards = []
    for shot in project.shots:
        doc = status_docs.get(shot.id, {})
        negative = shot.params.get("negative_prompt")
        submitted, finished = timings.get(shot.id, (None, None))
        task = doc.get("task_id")
        error = doc.get("error")
        cards.append(
            ShotCard(
                id=shot.name,  # a row's page names its shots as the project file does
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
                clip=clips.get(shot.id),
                placeholders=url_inputs(shot.params) if provider == "local" else (),
            )
        )
    return cards


def url_inputs(params: Mapping[str, object]) -> tuple[str, ...]:
    """The media inputs given as URLs (``image``, ``images[1]``...): the local provider draws a slate."""
    from kling_render.jobs import MediaRef

    found = []
    for name, value in params.items():
        refs = value if isinstance(value, list) else [value]
        for i, ref in enumerate(refs):
            if isinstance(ref, MediaRef) and ref.path is None and ref.url:
                found.append(f"{name}[{i}]" if isinstance(value, list) else name)
    return tuple(found)


def collect(project: Project, provider: str | None, report_dir: Path) -> ReportData:
    """Read the plan, state, lock and cache of ``project`` and grab every cached clip's frames."""
    from kling_render.app import status as app_status
    from kling_render.app.commands import on_provider, plan_for
    from kling_render.records.lockfile import read_lock
    from kling_render.records.state import read_project_state
    from kling_render.store.cache import ClipCache

    project = on_provider(project, provider)
    plan = plan_for(project, None, None)
    status = app_status.status(project, None)
    docs = {doc["id"]: doc for doc in status["shots"]}
    states = {where: read_project_state(project.path, where) for where in {p.provider for p in plan.shots}}
    lock = read_lock(project.lock_path)
    cache = ClipCache.for_project(project.path)
    timings: dict[str, tuple[str | None, str | None]] = {}
    spent: dict[str, float] = {}
    frames: dict[str, Frames] = {}
    clips: dict[str, VideoSource] = {}
    budget = [EMBED_CLIPS_TOTAL_BYTES]
    for planned in plan.shots:
        sid, key = planned.id, planned.job.key
        rec = states[planned.provider].get(sid)
        if rec is not None and rec.key == key:
            timings[sid] = (rec.submitted_at, rec.finished_at)
            spent[sid] = rec.cost_usd - rec.refunded_usd  # failed tasks are refunded
        entry = lock.get(sid)
        if entry is not None and entry.key == key:
            spent[sid] = max(spent.get(sid, 0.0), entry.cost_usd)
            if entry.task_id and not docs.get(sid, {}).get("task_id"):
                docs[sid] = {**docs.get(sid, {}), "task_id": entry.task_id}
        clip = cache.use(planned.provider, key)  # only a clip that matches its sha256 is shown
        if clip is not None:
            frames[sid] = extract_frames(clip.path)
            clips[sid] = _clip_source(clip.path, report_dir, budget)
    out = project.output
    final: VideoSource | None = None
    poster = None
    check = None
    if out.path.is_file():
        size = out.path.stat().st_size
        data = out.path.read_bytes() if size < EMBED_VIDEO_MAX_BYTES else None
        final = video_source(data, out.path, report_dir, size=size)
        poster = extract_poster(out.path)
        check = check_cut(project, plan.provider, data)
    return ReportData(
        project=project.name,
        project_file=project.display,
        provider=plan.provider,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        aspect=(out.width, out.height),
        shots=build_cards(
            project, {p.id: p.cost for p in plan.shots}, docs, timings, spent, frames, clips, plan.provider
        ),
        final_cut=final,
        final_cut_name=os.path.relpath(out.path, project.root),
        poster=poster,
        cut_check=check,
    )


def _clip_source(path: Path, report_dir: Path, budget: list[int]) -> VideoSource:
    """A shot's clip embedded while it is small and the page's clip budget lasts, else linked."""
    size = path.stat().st_size
    if size <= EMBED_CLIP_MAX_BYTES and size <= budget[0]:
        budget[0] -= size
        return video_source(path.read_bytes(), path, report_dir, size=size)
    return video_source(None, path, report_dir, size=size)


def check_cut(project: Project, provider: str, data: bytes | None) -> CutCheck:
    """Compare the final cut on disk with the stitch manifest and the project as it is now.

    The length is the stitch's own (frames / fps) when the file is the one it recorded, else it
    is probed from the file. ``data`` is the cut's bytes when they were read already."""
    import hashlib

    from kling_render.app import cut as app_cut
    from kling_render.fsutil import sha256_file
    from kling_render.media.probe import probe

    path = project.output.path
    fresh = app_cut.cut_freshness(project, provider, hash_cut=False)
    recorded = fresh.manifest
    digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    if recorded is not None and recorded.cut.sha256 == digest:
        cut = recorded.cut
        state = "current" if fresh.up_to_date else "stale"
        return CutCheck(state, tuple(fresh.reasons), cut.frames, cut.fps, cut.duration, False, recorded.stitched_at)
    try:
        info = probe(path)
    except FFmpegError:
        return CutCheck("unverified")
    fps = float(info.fps) if info.fps else None
    frames = round(info.duration * fps) if fps else None
    return CutCheck("unverified", (), frames, fps, info.duration, True)


def write_report(project: Project, provider: str | None, dest: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of ``project`` and return its path.

    ``dest`` defaults to ``<project dir>/renders/<stem>-report.html``; the write is atomic.
    Each shot's first and last frame are embedded as JPEG data: URIs, and its clip when small;
    shots without a cached clip are pending placeholders. The final cut (``output.path``) is
    embedded as a data: URI when under ``EMBED_VIDEO_MAX_BYTES`` (50 MB), else referenced by its
    path relative to the report, so a large cut plays only while the report stays where it was
    written. The cut is checked against its stitch manifest: a stale one is flagged.
    """
    from kling_render.app.commands import safe_output

    option = "--out" if dest is not None else "the default report path"
    target = safe_output(project, dest if dest is not None else default_report_path(project), option).resolve()
    data = collect(project, provider, target.parent)
    try:
        atomic_write_text(target, render_html(data))
    except OSError as exc:
        raise StateError(f"cannot write the report {target}: {exc.strerror or exc}") from None
    return target
