"""A ``rows:`` project expanded: the whole project resolved once per row of its table (SPEC §3).

Each row's templates see ``row.<column>``; its shots are identified as ``<key>/<shot id>`` (state,
lock, events), and keep their plain id for templates (``shot.id``), so a shot that does not use
the row renders the same wire parameters, hence the same key, in every row: one clip, generated
once and used by every cut. Each row has its own output (``output.path`` rendered with the row)
and audio.

Checked here, beyond what one cut checks: every row's ``output.path`` is safe (outputs.py: not the
project, lock, data file, any row's input, state or cache) and distinct from every other row's,
compared as the files they name, so no cut ever overwrites another.

Problems found while resolving rows are reported once when every row has them (a broken template)
and per row otherwise, with the row's key and line; a column a template uses that the table lacks
is reported at the table's header line.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from kling_render.errors import Issue, ProjectError, UsageError
from kling_render.project.document import DocPath, Document
from kling_render.project.generated import Still, in_row
from kling_render.project.media import MediaProblem, resolve_inside
from kling_render.project.project import (
    AudioSpec,
    OutputSpec,
    Project,
    ProjectRow,
    Shot,
    display_path,
    input_files,
    missing_file,
)
from kling_render.project.table import CSV_SUFFIXES, LIST_SUFFIXES, Row, Table, known_columns, read_table
from kling_render.project.template_limits import Budget
from kling_render.project.templates import Labelled, ProjectTemplates, ShotTemplates
from kling_render.suggest import did_you_mean, with_hint

MAX_ROW_ISSUES = 50  # per-row problems listed before "and N more"
# The templates of a rows: project render once per row. Their budget (template_limits) grows with
# the rows, up to these factors: a 1,000-row table of ordinary prompts fits, and a hostile one
# still stops within about half a minute of CPU.
BUDGET_ROWS = 20
BUDGET_SECONDS_ROWS = 3
_UNDEFINED_ROW = re.compile(r"'row\.(.+?)' is undefined")
_IN_SNIPPET = re.compile(r"in prompts\.([^:]+): ")


class Resolving(Protocol):
    """What a rows: expansion needs of the project loader's resolver (loader.Resolver): it resolves
    the project once per row by setting the row in the templates and resolving one cut."""

    path: Path
    root: Path
    doc: Document
    data: dict[str, Any]
    vars: dict[str, Any]
    issues: list[Issue]
    templates: ProjectTemplates
    stills: list[Still]
    output_text: str | None

    def add(self, path: DocPath, message: str, line_path: DocPath | None = None) -> None: ...

    def render_text(self, context: ShotTemplates, source: str, path: DocPath, line_path: DocPath | None) -> str: ...

    def cut(
        self, skip: set[str], name: str, *, check_output: bool = True
    ) -> tuple[list[Shot], OutputSpec, AudioSpec | None]: ...


def expand_rows(
    resolver: Resolving, skip: set[str], name: str
) -> tuple[list[Shot], OutputSpec, AudioSpec | None, list[ProjectRow], Table | None]:
    """Resolve the project once per row; problems go to ``resolver.issues``."""
    table = _table(resolver)
    default = OutputSpec(path=resolver.root / "renders" / f"{name}.mp4")
    if table is None:
        return [], default, None, [], None
    if "row" in resolver.vars:
        resolver.add(("vars", "row"), "'row' is reserved for the row's values in a rows: project; rename the variable")
    factor = min(len(table.rows), BUDGET_ROWS)
    resolver.templates.budget = Budget(
        steps=500_000 * factor, chars=50_000_000 * factor, seconds=10.0 * min(len(table.rows), BUDGET_SECONDS_ROWS)
    )
    rows: list[ProjectRow] = []
    stills: list[Still] = []
    texts: dict[str, str | None] = {}
    found: list[tuple[Row, list[Issue]]] = []
    for row in table.rows:
        resolver.templates.row = Labelled("row", **row.values)
        before = len(resolver.issues)
        shots, output, audio = resolver.cut(skip, name, check_output=False)
        found.append((row, resolver.issues[before:]))
        del resolver.issues[before:]
        texts[row.key] = resolver.output_text
        # Ids and the generated inputs they name are the row's: a still or shot that does not use
        # the row still has the same key in every row (its inputs are the same), so it is made once.
        ids = [
            replace(shot, id=f"{row.key}/{shot.id}", row=row.key, params=in_row(shot.params, row.key))
            for shot in shots
        ]
        stills.extend(
            replace(still, id=f"{row.key}/{still.id}", row=row.key, params=in_row(still.params, row.key))
            for still in resolver.stills
        )
        rows.append(ProjectRow(row.key, row.line, ids, output, audio))
    resolver.templates.row = None
    problems = _row_issues(found, table, len(table.rows))
    resolver.issues.extend(problems)
    resolver.issues.extend(_output_issues(resolver, table, rows, texts))
    shots = [shot for row in rows for shot in row.shots]
    resolver.stills = stills
    return shots, rows[0].output, rows[0].audio, rows, table


def _table(resolver: Resolving) -> Table | None:
    spec = resolver.data["rows"]
    source, key = str(spec["from"]), str(spec["key"])
    try:
        path = resolve_inside(resolver.root, source)
    except MediaProblem as exc:
        resolver.add(("rows", "from"), str(exc))
        return None
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + LIST_SUFFIXES:
        resolver.add(("rows", "from"), f"{source}: the data file must be .csv, or a .yaml, .yml or .json list")
        return None

    if not path.exists():
        resolver.add(("rows", "from"), missing_file(resolver.root, source))
        return None

    try:
        return read_table(path, display_path(path), key)
    except ProjectError as exc:
        resolver.issues.extend(exc.issues)
        return None


def _row_issues(found: list[tuple[Row, list[Issue]]], table: Table, count: int) -> list[Issue]:
    """Issues every row has, once as they are; the others per row, naming it; a missing column at
    the table's header (or at the row, when other rows have it)."""
    seen = Counter(issue for _, issues in found for issue in set(issues))
    out: list[Issue] = []
    per_row: list[Issue] = []
    columns: set[str] = set()
    for row, issues in found:
        for issue in issues:
            missing = _UNDEFINED_ROW.search(issue.message)
            at = f"{issue.file}:{issue.line}"
            snippet = _IN_SNIPPET.match(issue.message)
            if snippet is not None:
                used_by = f"used by prompts.{snippet.group(1)} at {at} (in {issue.path})"
            else:
                used_by = f"used by {issue.path} at {at}" if issue.path else f"used at {at}"
            if missing is not None and missing.group(1) not in table.columns:
                column = missing.group(1)
                if column not in columns:
                    columns.add(column)
                    out.append(Issue(table.display, table.header_line, column,
                                     f"no such column, {used_by} ({known_columns(column, table)})"))  # fmt: skip
            elif missing is not None:
                no_value = f"row {row.key!r} has no value, {used_by}"
                per_row.append(Issue(table.display, row.line, missing.group(1), no_value))
            elif count > 1 and seen[issue] == count:
                out.append(issue)
            else:
                per_row.append(replace(issue, message=f"{issue.message} (row {row.key!r}, {table.where(row)})"))
    unique = list(dict.fromkeys(per_row))
    if len(unique) > MAX_ROW_ISSUES:
        extra = len(unique) - MAX_ROW_ISSUES
        unique = [*unique[:MAX_ROW_ISSUES], Issue(table.display, 0, "", f"and {extra} more problem(s) in other rows")]
    return list(dict.fromkeys(out)) + unique


def _output_issues(
    resolver: Resolving, table: Table, rows: list[ProjectRow], texts: dict[str, str | None]
) -> list[Issue]:
    """Every row's cut is safe to write (outputs.py) and a file of its own."""
    from kling_render.app.outputs import Guard, protected_for
    from kling_render.records.lockfile import lock_path_for

    inputs = input_files([shot for row in rows for shot in row.shots], None)
    inputs += [(row.audio.music, f"the music of row {row.key}") for row in rows if row.audio and row.audio.music]
    inputs.append((table.path, "the rows data file (rows.from)"))
    guard = Guard(protected_for(resolver.path, lock_path_for(resolver.path), inputs))
    by_row = {row.key: row for row in table.rows}
    issues: list[Issue] = []
    owners: dict[str, list[str]] = {}
    for row in rows:
        text = texts.get(row.key)
        if text is None:
            continue
        problem = guard.problem(os.path.join(resolver.root, text))
        if problem is not None:
            where = table.where(by_row[row.key])
            issues.append(resolver.doc.issue(("output", "path"), f"{text}: {problem} (row {row.key!r}, {where})"))
            continue
        folded = os.path.normcase(os.path.realpath(row.output.path)).casefold()
        owners.setdefault(folded, []).append(row.key)
    for keys in owners.values():
        if len(keys) < 2:
            continue
        shown = ", ".join(f"{k!r} ({table.where(by_row[k])})" for k in keys[:3]) + (
            f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        )
        issues.append(
            resolver.doc.issue(
                ("output", "path"),
                f"{texts[keys[0]]} is the same file for {len(keys)} rows: {shown}; every row's cut needs its own "
                f"file, so output.path must use the row's key, e.g. renders/{{{{ row.{table.key_column} }}}}.mp4",
            )
        )
    if not issues:
        issues += _key_probe(resolver, table, texts)
    return issues


# output.path must follow the whole key: rendered with the key changed at its end and at its
# start, a row's path must change both times. This refuses a path made only of other columns
# (even when their values happen to differ today: the next row may repeat one) and one that uses
# only part of the key (row.sku[:3], truncate). A transform that keeps all of the key but could
# still merge two keys (replace('-', '')) is caught by the collision check above on the real
# table, at every validate/plan/render. row.sku|lower is safe: keys differing only in case are
# already refused as duplicates (rows.py).
_PROBES = ("{}-zz9", "zz9-{}")


def _key_probe(resolver: Resolving, table: Table, texts: dict[str, str | None]) -> list[Issue]:
    """Rows whose output.path does not change with their key; one issue naming the first."""
    raw = str(resolver.data.get("output", {}).get("path", f"renders/{resolver.data['name']}.mp4"))
    same: list[Row] = []
    before = len(resolver.issues)
    try:
        for row in table.rows:
            text = texts.get(row.key)
            if text is None:
                continue
            for probe in _PROBES:
                values = dict(row.values)
                values[table.key_column] = probe.format(row.key)
                resolver.templates.row = Labelled("row", **values)
                other = resolver.render_text(resolver.templates.for_cut(), raw, ("output", "path"), None)
                if other and _same_file(other, text):
                    same.append(row)
                    break
    finally:
        del resolver.issues[before:]  # a template that cannot take another key says nothing here
        resolver.templates.row = None
    if not same:
        return []
    more = f", and {len(same) - 1} more row(s)" if len(same) > 1 else ""
    return [
        resolver.doc.issue(
            ("output", "path"),
            f"{texts[same[0].key]} does not change with the row's key (row {same[0].key!r}, "
            f"{table.where(same[0])}{more}): every row's cut needs its own file, so output.path must use all "
            f"of the key, e.g. renders/{{{{ row.{table.key_column} }}}}.mp4",
        )
    ]


def _same_file(a: str, b: str) -> bool:
    return os.path.normcase(os.path.normpath(a)).casefold() == os.path.normcase(os.path.normpath(b)).casefold()


# -- views and selections --------------------------------------------------------------------


def row_view(project: Project, row: ProjectRow) -> Project:
    """The project as one row's cut: its shots, output and audio (for stitch, status, report)."""
    stills = [still for still in project.stills if still.row == row.key]
    return replace(
        project, shots=row.shots, stills=stills, output=row.output, audio=row.audio, rows=None, row_key=row.key
    )


def select_rows(project: Project, keys: list[str] | None) -> list[ProjectRow]:
    """The rows ``--row`` names (all when None); a key the table lacks is a usage error."""
    rows = project.rows
    if rows is None:
        if keys:
            raise UsageError(f"--row: {project.display} has no rows: table")
        return []
    if not keys:
        return list(rows)
    import difflib

    by_key = {row.key: row for row in rows}
    folded = {row.key.casefold(): row.key for row in rows}
    unknown = []
    chosen: dict[str, ProjectRow] = {}
    for key in keys:
        real = key if key in by_key else folded.get(key.casefold())
        if real is None:
            unknown.append(key)
        else:
            chosen[real] = by_key[real]
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(by_key), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"{len(rows)} rows, e.g. {', '.join(list(by_key)[:3])}"
        table = project.table.display if project.table is not None else "the table"
        raise UsageError(f"--row: no row {', '.join(repr(k) for k in unknown)} in {table} ({hint})")
    return [row for row in rows if row.key in chosen]


def only_ids(project: Project, rows: list[str] | None, only: list[str] | None) -> list[str] | None:
    """``--row`` and ``--only`` as the shot ids to work on (``<key>/<shot id>``), None for all.

    In a rows: project ``--only`` names shots as the project file does (``intro``), in every
    selected row, or one row's shot as ``<key>/<shot id>``."""
    if project.rows is None:
        select_rows(project, rows)  # --row without rows: is a usage error
        return only
    if not rows and not only:
        return None
    chosen = select_rows(project, rows)
    names = {shot.name for row in project.rows for shot in row.shots}
    wanted: list[str] = []
    for item in only or []:
        if "/" in item:
            wanted.append(item)
        elif item not in names:
            hint = did_you_mean(item, names)
            raise UsageError(with_hint(f"--only: no shot named {item} in {project.display}", hint))
    plain = {item for item in only or [] if "/" not in item}
    ids = [
        shot.id for row in chosen for shot in row.shots if not only or shot.name in plain or shot.id in wanted
    ]
    known = {shot.id for shot in project.shots}
    unknown = [item for item in wanted if item not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known)
        raise UsageError(with_hint(f"--only: no shot {', '.join(unknown)} in {project.display}", hint))
    return ids


__all__ = ["ProjectRow", "expand_rows", "only_ids", "row_view", "select_rows"]
