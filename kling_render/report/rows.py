"""Text renderings of a rows: project for people: the plan by row (table and Markdown) and the
status by row. Each row's cost counts the clips only it uses; clips several rows share are
listed once, priced once; the total is both (report_text renders projects without rows)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from kling_render.catalog.catalog import usd
from kling_render.plan.model import Plan, PlannedShot, RowPlan, RowsPlan
from kling_render.report import markdown
from kling_render.report.cells import (
    budget_line,
    counts_text,
    inputs_markdown,
    plan_footer,
    prompt_lines,
    shot_cells,
    text_table,
    where,
)


def _rows(plan: Plan) -> RowsPlan:
    assert plan.rows is not None
    return plan.rows


def _changes(row: RowPlan) -> str:
    return " · ".join(f"{kind} {n}" for kind, n in row.changes.items()) or "-"


def _shared_mark(p: PlannedShot, shared: set[str]) -> str:
    return " (shared)" if p.job.key in shared else ""


def _headline(plan: Plan, rows: RowsPlan) -> str:
    per_row = {len(r.shots) for r in rows.rows}
    shots = f"{per_row.pop()} shots" if len(per_row) == 1 else "shots"
    return (
        f"{plan.project.name} ({where(plan.provider, plan.remote)}): {len(rows.rows)} row(s) × {shots} "
        f"from {rows.table} (key: {rows.key_column}); {rows.clips} distinct clip(s)"
    )


def _totals(plan: Plan, rows: RowsPlan) -> str:
    own = sum((r.cost for r in rows.rows), Fraction(0))
    clips = {p.job.key for p in plan.to_render}
    cached = rows.clips - len(clips)
    return (
        f"total ${usd(plan.total_cost):.4f} = rows ${usd(own):.4f} + shared ${usd(rows.shared_cost):.4f}; "
        f"to render {len(clips)} clip(s) ${usd(plan.to_render_cost):.4f}; cached {cached}"
    )


def plan_table(plan: Plan) -> str:
    rows = _rows(plan)
    shared = {c.first.job.key for c in rows.shared}
    lines = [_headline(plan, rows), ""]
    if rows.shared:
        table = text_table(
            ["shared shot", "model", "dur", "sound", "cost", "status", "rows"],
            [
                [
                    c.names,
                    c.first.shot.model.id,
                    f"{c.first.shot.duration}s",
                    "yes" if c.first.shot.sound else "no",
                    f"${usd(c.first.cost):.4f}",
                    c.first.status,
                    _row_list(c.rows),
                ]
                for c in rows.shared
            ],
            right=(2, 4),
        )
        lines += ["shared by several rows (priced once):", table, ""]
    summary = text_table(
        ["row", "line", "own clips", "cost", "to render", "vs lock", "cut"],
        [
            [
                r.key,
                str(r.line),
                str(len(r.own)),
                f"${usd(r.cost):.4f}",
                f"${usd(r.to_render_cost):.4f}",
                _changes(r),
                _relative(plan, r) + (f" (re-stitch: {', '.join(r.restitch)})" if r.restitch else ""),
            ]
            for r in rows.rows
        ],
        right=(1, 2, 3, 4),
    )
    lines += ["cost per row (its own clips):", summary, ""]
    detail: list[list[str]] = []
    for r in rows.rows:
        for n, p in enumerate(r.shots):
            detail.append([r.key if n == 0 else "", p.shot.name + _shared_mark(p, shared), *shot_cells(p)])
    lines += [
        "shots by row:",
        text_table(["row", "shot", "model", "dur", "sound", "cost", "status", "vs lock"], detail, right=(3, 5)),
        "",
    ]
    for shot_id in plan.removed:
        lines.append(f"removed since the lock: {shot_id}")
    prompts = prompt_lines(plan, markdown=False)
    if prompts:
        lines += [*prompts, ""]
    lines.append(_totals(plan, rows))
    lines += plan_footer(plan)
    return "\n".join(lines)


def plan_markdown(plan: Plan) -> str:
    """A pull-request comment: cost per row, the shared clips priced once, the total; every shot
    in a collapsed table."""
    rows = _rows(plan)
    shared = {c.first.job.key for c in rows.shared}
    budget = budget_line(plan)
    clips = {p.job.key for p in plan.to_render}
    own = sum((r.cost for r in rows.rows), Fraction(0))
    out = [*markdown.markers(plan),
           f"### kling-render plan: `{plan.project.name}` ({plan.provider}), {len(rows.rows)} row(s) from "
           f"`{rows.table}`{markdown.where_suffix(plan)}", ""]  # fmt: skip
    if plan.over_budget and budget:
        out += [f"> **{budget}**", ""]
    out += [
        f"**To render:** {len(clips)} clip(s), **${usd(plan.to_render_cost):.4f}** · cached {rows.clips - len(clips)}",
        "",
        f"**vs lock:** {counts_text(plan)}",
        "",
        f"**Project cost:** ${usd(plan.total_cost):.4f} = rows ${usd(own):.4f} + shared "
        f"${usd(rows.shared_cost):.4f} {markdown.cost_text(plan)}",
    ]
    if budget and not plan.over_budget:
        out += ["", f"**Budget:** {budget}"]
    out += [
        "",
        "| row | own clips | cost | to render | vs lock | cut |",
        "|---|---:|---:|---:|---|---|",
        *(
            f"| `{r.key}` | {len(r.own)} | ${usd(r.cost):.4f} | ${usd(r.to_render_cost):.4f} | {_changes(r)} "
            f"| {_code(_relative(plan, r))}{' re-stitch: ' + ', '.join(r.restitch) if r.restitch else ''} |"
            for r in rows.rows
        ),
        "",
    ]
    if rows.shared:
        out += [
            "**Shared by several rows (priced once):**",
            "",
            "| shot | model | duration | sound | cost | status | rows |",
            "|---|---|---:|---|---:|---|---|",
            *(
                f"| `{c.names}` | {c.first.shot.model.id} | {c.first.shot.duration}s "
                f"| {'yes' if c.first.shot.sound else 'no'} | ${usd(c.first.cost):.4f} | {c.first.status} "
                f"| {_row_list(c.rows)} |"
                for c in rows.shared
            ),
            "",
        ]
    out += [
        f"<details><summary>Shots by row ({len(plan.shots)})</summary>",
        "",
        "| row | shot | model | duration | sound | cost | status | vs lock |",
        "|---|---|---|---:|---|---:|---|---|",
        *(
            f"| `{p.shot.row}` | `{p.shot.name}`{_shared_mark(p, shared)} | {p.shot.model.id} | {p.shot.duration}s "
            f"| {'yes' if p.shot.sound else 'no'} | ${usd(p.cost):.4f} | {p.status} | {p.change_label} |"
            for r in rows.rows
            for p in r.shots
        ),
        *(f"| | `{sid}` | | | | | | removed |" for sid in plan.removed),
        "",
        "</details>",
        "",
    ]
    prompts = prompt_lines(plan, markdown=True)
    return "\n".join([*out, *inputs_markdown(plan), *([*prompts, ""] if prompts else [])])


def _row_list(keys: Sequence[str], most: int = 4) -> str:
    shown = ", ".join(keys[:most])
    return f"{len(keys)}: {shown}" + (", …" if len(keys) > most else "")


def _code(text: str) -> str:
    """``text`` as a Markdown code span in a table cell: a path rendered from a row may hold any
    character, and a ``|`` or a backtick must not end the cell or the span."""
    text = text.replace("|", "\\|").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _relative(plan: Plan, row: RowPlan) -> str:
    import os

    return os.path.relpath(row.output, plan.project.root)


def status_table(doc: dict[str, Any]) -> str:
    """``status`` of a rows: project: a line per row, then every shot under its row."""
    summary = text_table(
        ["row", "done", "failed", "other", "spent", "cut"],
        [
            [
                r["key"],
                f"{r['counts'].get('done', 0)}/{len(r['shots'])}",
                str(r["counts"].get("failed", 0)),
                str(sum(n for k, n in r["counts"].items() if k not in ("done", "failed"))),
                f"${r['spent_usd']:.4f}",
                r["cut"],
            ]
            for r in doc["rows"]
        ],
        right=(1, 2, 3, 4),
    )
    detail: list[list[str]] = []
    for r in doc["rows"]:
        for n, s in enumerate(r["shots"]):
            detail.append(
                [
                    r["key"] if n == 0 else "",
                    s["shot"] + (" (shared)" if s.get("shared") else ""),
                    s["status"] + (" (changed since)" if s.get("stale") else ""),
                    "yes" if s["cached"] else "no",
                    s["task_id"] or "-",
                    str(s["attempts"]),
                    s["error"] or "",
                ]
            )
    table = text_table(["row", "shot", "status", "cached", "task", "tries", "error"], detail, right=(5,))
    counts = ", ".join(f"{n} {k}" for k, n in sorted(doc["counts"].items()))
    cuts = sum(1 for r in doc["rows"] if r["final_cut"])
    return (
        f"{doc['project']} ({where(doc['provider'], doc.get('remote'))}): {len(doc['rows'])} row(s); {counts}; "
        f"{cuts} cut(s) made\n\n"
        f"{summary}\n\n{table}"
    )




def cut_lines(cuts: Sequence[dict[str, Any]]) -> list[str]:
    """One line per row's cut (``render`` and ``stitch`` print them on stderr)."""
    lines = []
    for cut in cuts:
        if cut["made"]:
            lines.append(f"cut {cut['row']}{' (up to date)' if cut['up_to_date'] else ''}: {cut['path']}")
        elif cut.get("error"):
            lines.append(f"row {cut['row']}: not stitched: {cut['error']}")
        else:
            lines.append(f"row {cut['row']}: not stitched, no clip yet for {', '.join(cut['missing'])}")
    return lines


__all__ = ["cut_lines", "plan_markdown", "plan_table", "status_table"]
