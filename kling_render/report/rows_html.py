"""``report`` of a rows: project: one page per row, and an index page that links them.

One page per row rather than one page for all: each page is the ordinary report of that row's cut
(its shots' frames and clips, its final cut embedded while small), so a 1,000-row table gives
1,000 pages of normal size instead of one page holding every frame. The index lists every row:
shots done, failures, spend, and whether its cut is made and up to date.

``renders/<stem>-report.html`` is the index and ``renders/<stem>-report/<key>.html`` the pages
(``--out X.html``: ``X.html`` and ``X/<key>.html``). ``--row`` writes only those rows' pages and
leaves the index as it is. Every path is checked before anything is written (outputs.py).
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kling_render.project.project import Project
from kling_render.project.rows import ProjectRow, row_view

INDEX_CSS = """
table{border-collapse:collapse;width:100%;background:var(--card);border-radius:10px;overflow:hidden;
 box-shadow:0 1px 2px rgba(16,24,40,.06)}
th,td{text-align:left;padding:8px 12px;border-bottom:1px solid #eaecf0;font-size:13.5px}
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.05em}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b42318}.good{color:#067647}
"""


def pages_dir(index: Path) -> Path:
    """Where the row pages of ``index`` go: beside it, in a folder named like it."""
    return index.with_suffix("") if index.suffix else index.with_name(index.name + "-rows")


def write_reports(
    project: Project, provider: str | None, rows: list[ProjectRow], out: str | Path | None, *, index: bool
) -> list[Path]:
    """`report`: the project's page, or in a rows: project each asked row's page (and the index
    page when ``index``); the paths written."""
    if project.rows is None:
        from kling_render.report.collect import write_report

        return [write_report(project, provider, out)]
    return write_row_reports(project, provider, rows, out, index=index)


def write_row_reports(
    project: Project, provider: str | None, rows: list[ProjectRow], dest: str | Path | None, *, index: bool
) -> list[Path]:
    """Write a page per row of ``rows`` (and the index when ``index``); return the paths written."""
    from kling_render.app.commands import output_guard, pick_provider, safe_output
    from kling_render.errors import StateError
    from kling_render.fsutil import atomic_write_text
    from kling_render.report.collect import collect, default_report_path
    from kling_render.report.html import render_html

    option = "--out" if dest is not None else "the default report path"
    guard = output_guard(project)
    first = safe_output(project, dest if dest is not None else default_report_path(project), option, guard)
    folder = pages_dir(first)
    pages = {row.key: safe_output(project, folder / f"{row.key}.html", option, guard) for row in rows}
    name = pick_provider(project, provider)
    written = []
    try:
        for row in rows:
            view = replace(row_view(project, row), name=f"{project.name} · {row.key}")
            target = pages[row.key]
            atomic_write_text(target, render_html(collect(view, name, target.parent)))
            written.append(target)
        if index:
            atomic_write_text(first, index_html(project, name, rows, first))
            written.insert(0, first)
    except OSError as exc:
        raise StateError(f"cannot write the report: {exc.strerror or exc}: {exc.filename or ''}") from None
    return written


def index_html(project: Project, provider: str, rows: list[ProjectRow], index: Path) -> str:
    from kling_render.app.rows_pipeline import status_rows
    from kling_render.report.html import CSS, clock

    doc = status_rows(project, provider, rows)
    folder = pages_dir(index)
    lines = []
    made = spent = 0.0
    for r in doc["rows"]:
        page = os.path.relpath(folder / f"{r['key']}.html", index.parent)
        done = r["counts"].get("done", 0)
        failed = r["counts"].get("failed", 0) + r["counts"].get("unknown", 0)
        made += 1 if r["final_cut"] else 0
        spent += r["spent_usd"]
        cut_class = "good" if r["cut_up_to_date"] else "bad"
        lines.append(
            f'<tr><td><a href="{escape(quote(Path(page).as_posix()))}">{escape(r["key"])}</a></td>'
            f'<td class="n">{r["line"]}</td><td class="n">{done}/{len(r["shots"])}</td>'
            f'<td class="n{" bad" if failed else ""}">{failed}</td><td class="n">${r["spent_usd"]:.4f}</td>'
            f'<td class="{cut_class}">{escape(r["cut"])}</td></tr>'
        )
    table = project.table.display if project.table is not None else ""
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    totals: list[tuple[str, Any]] = [
        ("rows", len(doc["rows"])),
        ("cuts made", int(made)),
        ("spent", f"${spent:.4f}"),
    ]
    boxes = "".join(f"<div><b>{escape(str(v))}</b><span>{escape(k)}</span></div>" for k, v in totals)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(project.name)} · rows · kling-render report</title>"
        f"<style>{CSS}{INDEX_CSS}</style></head>\n<body>"
        f'<header class="top"><h1>{escape(project.name)}</h1>'
        f'<div class="sub">{escape(project.display)} · rows from {escape(table)} · provider <b>{escape(provider)}</b>'
        f" · generated {escape(clock(generated))} UTC</div>"
        f'<div class="totals">{boxes}</div></header>\n'
        '<main><section class="sheet"><h2>Rows</h2><table><thead><tr><th>row</th><th>line</th><th>shots done</th>'
        "<th>failed</th><th>spent</th><th>cut</th></tr></thead><tbody>"
        f"{''.join(lines)}</tbody></table></section></main>\n"
        "<footer>kling-render report · one page per row, linked above</footer></body></html>\n"
    )


__all__ = ["index_html", "pages_dir", "write_row_reports"]
