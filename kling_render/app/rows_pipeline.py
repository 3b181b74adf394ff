"""render / stitch / status of a rows: project: one cut per row (pipeline.py does the rest).

A row is stitched once its own clips exist, whatever the other rows did: a row whose shot failed
(or was not rendered: ``--only``, a budget stop) is skipped and named, the others get their cut,
and the exit code still says something failed. The next ``render`` resumes per row: the rows
whose clips are cached cost nothing (their cuts are up to date), the failed row's shots are
submitted again as the runner's rules allow.

Each row's cut has its own stitch manifest (``.kling-render/<file>/rows/<key>/stitch.json``) and
its cut settings in the lock file under ``cut.rows.<key>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kling_render.errors import EXIT_INTERRUPTED, FFmpegError, MissingClipsError, StateError, StitchError
from kling_render.plan.inputs import step_names
from kling_render.project.project import Project
from kling_render.project.rows import ProjectRow, row_view
from kling_render.report.progress import Event, EventSink
from kling_render.report.sinks import make_sink
from kling_render.store.cache import ClipCache

if TYPE_CHECKING:
    from kling_render.app.cut import StitchOutcome
    from kling_render.app.options import RenderOptions, RenderResult
    from kling_render.records.lockfile import LockFile
    from kling_render.store.remote.connect import Remote


class RowSink:
    """Every event of one row's stitch, with ``row`` in it (JSON lines show it; plain lines name the file)."""

    def __init__(self, sink: EventSink, key: str) -> None:
        self.sink, self.key = sink, key

    def emit(self, event: Event) -> None:
        self.sink.emit(replace(event, extra={"row": self.key, **event.extra}))

    def close(self) -> None:
        pass


@dataclass
class RowCut:
    """One row's cut, or why it was not made."""

    key: str
    path: Path
    outcome: StitchOutcome | None = None
    missing: list[str] = field(default_factory=list)  # shots without a clip
    error: str | None = None  # the stitch failed

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"row": self.key, "path": str(self.path)}
        if self.outcome is not None:
            cut = self.outcome.cut
            doc.update(made=True, up_to_date=self.outcome.up_to_date, duration=round(cut.duration, 4),
                       frames=cut.frames, fps=cut.fps, stream_copy=cut.stream_copy, sha256=cut.sha256,
                       size=cut.size)  # fmt: skip
        else:
            doc.update(made=False, missing=self.missing, error=self.error)
        return doc


def stitch_each(
    project: Project,
    rows: list[ProjectRow],
    provider: str,
    cache: ClipCache,
    sink: EventSink,
    *,
    force: bool,
    lock: LockFile,
    reported: int | None = None,
    remote: Remote | None = None,
) -> list[RowCut]:
    """Stitch each row whose clips are all cached (the caller holds the run lock); the others are skipped, named.
    With ``remote``, segments other machines encoded are pulled, and the ones encoded here pushed.

    Each row reports the clips of its own shots quarantined since ``reported`` (by the pulls and the
    lock's checks before the stitches, or by an earlier row's), so a row without a cut says why."""
    from kling_render.app.cut import make_cut

    since = len(cache.quarantined) if reported is None else reported
    cuts = []
    for row in rows:
        view = row_view(project, row)
        cut = RowCut(row.key, row.output.path)
        row_sink = RowSink(sink, row.key)
        try:
            cut.outcome = make_cut(
                view, provider, cache, row_sink, force=force, lock=lock, reported=since, remote=remote
            )
        except MissingClipsError as exc:
            cut.missing = list(exc.shot_ids)
            row_sink.emit(Event("stitch-skipped", message=f"row {row.key}: not stitched, no clip yet for "
                                                         f"{', '.join(exc.shot_ids)}"))  # fmt: skip
        except (FFmpegError, StitchError, StateError) as exc:  # this row's cut only: the next rows still get theirs
            cut.error = str(exc)
            row_sink.emit(Event("stitch-skipped", message=f"row {row.key}: the stitch failed: {exc}"))
        cuts.append(cut)
    return cuts


def finish_rows(
    project: Project,
    opts: RenderOptions,
    result: RenderResult,
    cache: ClipCache,
    sink: EventSink,
    lock: LockFile,
    remote: Remote | None = None,
) -> RenderResult:
    """After the run: prune the lock (a full, successful render), then a cut per planned row."""
    assert project.rows is not None
    if result.exit_code == 0 and not opts.only and opts.shard is None:
        gone = lock.prune(step_names(project), rows=[row.key for row in project.rows])
        if gone:
            sink.emit(Event("lock-pruned", message=f"removed from {lock.path.name}: {', '.join(gone)}",
                            extra={"removed": gone}))  # fmt: skip
    if opts.no_stitch or opts.shard is not None or result.exit_code == EXIT_INTERRUPTED:  # shards: a later `stitch`
        return result
    planned = {p.shot.row for p in result.plan.shots}
    rows = [row for row in project.rows if row.key in planned]
    cuts = stitch_each(project, rows, result.plan.provider, cache, sink, force=opts.force, lock=lock, remote=remote)
    result.cuts = [cut.to_json() for cut in cuts]
    broken = [cut for cut in cuts if cut.error is not None]
    # A full render that succeeded made every clip: a row still missing one lost it (quarantined).
    lost = [cut for cut in cuts if cut.missing and result.exit_code == 0 and not opts.only]
    if (broken or lost) and result.exit_code == 0:
        result.exit_code = 1
        said = [f"row {c.key}: {c.error}" for c in broken]
        said += [f"row {c.key}: no clip for {', '.join(c.missing)}" for c in lost]
        result.message = "; ".join(said)
    return result


def stitch_rows(
    project: Project,
    provider: str | None,
    rows: list[ProjectRow],
    *,
    stream: IO[str] | None = None,
    json_events: bool = False,
    force: bool = False,
    lock_timeout: float = 0.0,
) -> list[RowCut]:
    """``stitch`` of a rows: project: each (selected) row from cached clips; rows lacking a clip are named."""
    from kling_render.app.commands import on_provider
    from kling_render.app.cut import gather_clips
    from kling_render.records.state import StateStore
    from kling_render.store.remote.sync import open_for

    project = on_provider(project, provider)
    rows = [r for r in project.rows or [] if r.key in {row.key for row in rows}]
    name = project.provider
    cache = ClipCache.for_project(project.path)
    remote = open_for(project.remote, project.display)  # exit 2 on a bad remote, before anything is read
    sink = make_sink(json_lines=json_events, stream=stream)
    try:
        with StateStore.for_project(project.path, name, lock_timeout=lock_timeout):
            # The selected rows' clips from the remote (a shard matrix rendered them elsewhere), as `stitch` does.
            since = len(cache.quarantined)
            chosen = replace(project, shots=[s for row in rows for s in row.shots])
            lock = gather_clips(chosen, name, cache, sink, remote)
            return stitch_each(project, rows, name, cache, sink, force=force, lock=lock, reported=since, remote=remote)
    finally:
        sink.close()


def status_rows(project: Project, provider: str | None, rows: list[ProjectRow]) -> dict[str, Any]:
    """``status`` by row: each row's shots, counts, spend and cut (up to date, stale or not made)."""
    from kling_render.app.commands import on_provider
    from kling_render.app.cut import cut_freshness
    from kling_render.app.status import status
    from kling_render.plan.inputs import cut_keys

    project = on_provider(project, provider)
    wanted = {row.key for row in rows}
    rows = [r for r in project.rows or [] if r.key in wanted]
    stills = [s for s in project.stills if s.row is None or s.row in wanted]  # the project's and these rows'
    chosen = replace(project, rows=rows, shots=[s for row in rows for s in row.shots], stills=stills)
    doc = status(chosen, None)
    by_id = {s["id"]: s for s in doc["shots"]}
    users: dict[str, set[str]] = {}
    keys = cut_keys(project, project.provider)  # each key names its provider: one clip, one key
    for shot in project.shots:  # shared with another row of the table, selected or not
        users.setdefault(keys[shot.id], set()).add(shot.row or "")
    grouped = []
    for row in rows:
        shots = []
        for shot in row.shots:
            entry = by_id[shot.id]
            entry.update(row=row.key, shot=shot.name, shared=len(users[keys[shot.id]]) > 1)
            shots.append(entry)
        counts: dict[str, int] = {}
        for entry in shots:
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        fresh = cut_freshness(row_view(project, row), doc["provider"], hash_cut=False)
        exists = row.output.path.is_file()
        cut = _cut_text(project, row, exists, fresh.up_to_date, fresh.reasons)
        grouped.append(
            {
                "key": row.key,
                "line": row.line,
                "output": str(row.output.path),
                "final_cut": str(row.output.path) if exists else None,
                "cut_up_to_date": exists and fresh.up_to_date,
                "cut": cut,
                "counts": counts,
                "spent_usd": round(sum(e["cost_usd"] - e.get("refunded_usd", 0.0) for e in shots), 4),
                "shots": shots,
            }
        )
    doc["rows"] = grouped
    doc["final_cut"] = None
    return doc


def _cut_text(project: Project, row: ProjectRow, exists: bool, fresh: bool, reasons: list[str]) -> str:
    import os

    name = os.path.relpath(row.output.path, project.root)
    if not exists:
        return f"{name}: not made"
    if fresh:
        return name
    return f"{name}: stale ({'; '.join(reasons[:2])})"




def status_of(project: Project, provider: str | None, rows: list[ProjectRow]) -> dict[str, Any]:
    """`status`: the shots' states, by row in a rows: project (``rows``: the rows asked for)."""
    if project.rows is None:
        from kling_render.app.status import status

        return status(project, provider)
    return status_rows(project, provider, rows)


__all__ = ["RowCut", "RowSink", "finish_rows", "status_of", "status_rows", "stitch_each", "stitch_rows"]
