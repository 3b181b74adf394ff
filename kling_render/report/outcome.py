"""What `render` and `stitch` say when they end: the closing JSON document and the lines on stderr.

Pure: each function takes the command's result and returns text or a document; cli.py prints it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kling_render.errors import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from kling_render.app.cut import StitchOutcome
    from kling_render.app.options import RenderResult
    from kling_render.project.project import Project

__all__ = ["render_finished", "render_lines", "stitch_document"]


def render_finished(project: Project, result: RenderResult) -> dict[str, Any]:
    """The last JSON line of `render --json`: the exit code, the run report and the cut(s)."""
    return {
        "event": "finished",
        "exit_code": result.exit_code,
        **result.report,
        "final_cut": str(result.final_cut) if result.final_cut else None,
        "final_cut_up_to_date": result.up_to_date,
        **({"cuts": result.cuts} if project.rows is not None else {}),
    }


def render_lines(project: Project, result: RenderResult) -> list[str]:
    """What `render` says on stderr when it ends: the shots by status and the money spent, the
    shots that failed or warn, the cut(s), and why it stopped."""
    report = result.report
    shots = report.get("shots", [])
    counts: dict[str, int] = {}
    for shot in shots:
        counts[shot["status"]] = counts.get(shot["status"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    spent = f"spent ${report.get('spent_usd', 0):.4f}"
    if report.get("refunded_usd"):
        spent += f" (${report['refunded_usd']:.4f} of failed tasks refunded)"
    if report.get("uncertain_usd"):
        spent += f" (and up to ${report['uncertain_usd']:.4f} on submits that got no answer)"
    lines = [f"{project.name}: {summary}; {spent}"]
    if report.get("account_stopped"):
        lines.append(f"error: {report['account_stopped']} (no more submits this run)")
    for shot in shots:
        if shot["status"] in ("failed", "unknown") and shot.get("error"):
            lines.append(f"  {shot['id']}: {shot['status']}: {shot['error']}")
        if shot.get("warning"):
            lines.append(f"  {shot['id']}: warning: {shot['warning']}")
    if result.final_cut:
        lines.append(f"final cut{' up to date' if result.up_to_date else ''}: {result.final_cut}")
    if project.rows is not None:
        from kling_render.report import rows as report_rows

        lines += report_rows.cut_lines(result.cuts)
    if result.message:
        lines.append(f"error: {result.message}")
    if result.exit_code == EXIT_INTERRUPTED:
        lines.append("interrupted: state saved; run the same command again to resume")
    return lines


def stitch_document(project: Project, provider: str, outcome: StitchOutcome) -> dict[str, Any]:
    """`stitch --json` of one cut: where it is, whether it was kept, what it is and what was encoded."""
    cut = outcome.cut
    return {
        "project": project.name,
        "provider": provider,
        "final_cut": str(outcome.path),
        "up_to_date": outcome.up_to_date,
        "duration": round(cut.duration, 4),
        "frames": cut.frames,
        "fps": cut.fps,
        "stream_copy": cut.stream_copy,
        "sha256": cut.sha256,
        "size": cut.size,
        **outcome.steps,
    }
