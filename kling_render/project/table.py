"""The table behind ``rows: {from: FILE, key: COLUMN}``: one cut of the project per row (SPEC §3).

``from`` is a CSV file (RFC 4180, read by the ``csv`` module: UTF-8, a header row, every record
as many fields as the header; a byte-order mark is allowed; blank records and records of empty
fields only, which spreadsheets write below the data, are skipped) or a YAML/JSON list of mappings, inside
the project directory. It is read like the project file itself: a regular file of at most
``MAX_DATA_BYTES`` (a FIFO or a device is refused from its ``stat``, never opened). Values are
text, exactly as written: a CSV has nothing else, and in YAML/JSON every scalar is kept as its
source text (``NO`` stays ``NO``, ``1.50`` stays ``1.50``; a null is ""), so a template prints what
the file says. A list or mapping as a value is an error.

The key column names every row: its values are unique, non-empty and usable in file names and
ids (``KEY_RULE``), compared without regard to case (two keys that differ only in case would
name one file on macOS and Windows). A row's shots are identified as ``<key>/<shot id>`` in
state, lock and events, never by the row's position, so reordering or inserting rows changes
nothing that was rendered.

Bounds: at most ``MAX_ROWS`` rows, ``MAX_COLUMNS`` columns, ``MAX_CELLS`` cells and
``MAX_CELL_CHARS`` characters a value. Every problem is an Issue naming the data file, the line
and the column; reading stops at the first bound passed.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kling_render.errors import Issue, ProjectError

MAX_DATA_BYTES = 16 * 1024 * 1024  # as the project file
MAX_ROWS = 10_000
MAX_COLUMNS = 256
MAX_CELLS = 1_000_000
MAX_CELL_CHARS = 100_000  # one value; a template's text is at most this too
CSV_SUFFIXES = (".csv",)
LIST_SUFFIXES = (".yaml", ".yml", ".json")

KEY_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?\Z")
KEY_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
# Names Windows keeps for devices, with any extension: a cut named con.mp4 cannot be written there.
_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)


@dataclass(frozen=True)
class Row:
    """One row: its key, the line it starts on in the data file, and its values by column."""

    key: str
    line: int
    values: Mapping[str, str]


@dataclass(frozen=True)
class Table:
    path: Path
    display: str  # how messages name the data file
    key_column: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    header_line: int = 1  # where the column names are (a YAML/JSON list: its first line)

    def where(self, row: Row) -> str:
        return f"{self.display}:{row.line}"


def key_problem(value: str) -> str | None:
    """Why ``value`` cannot be a row key, or None."""
    if value == "":
        return "empty key (every row needs one)"
    if not KEY_PATTERN.match(value):
        shown = value if len(value) <= 70 else value[:67] + "..."
        return f"key {shown!r} cannot name files and shots: use {KEY_RULE}"
    if value.split(".", 1)[0].lower() in _DEVICE_NAMES:
        return f"key {value!r} is a device name on Windows (no file may be called that): choose another"
    return None


class _Reader:
    """Collects a table's issues; ``stop`` ends the read at a bound."""

    def __init__(self, display: str, key_column: str) -> None:
        self.display = display
        self.key_column = key_column
        self.issues: list[Issue] = []

    def add(self, line: int, column: str, message: str) -> None:
        self.issues.append(Issue(self.display, line, column, message))

    def columns_ok(self, names: Sequence[str], line: int) -> bool:
        ok = True
        seen: dict[str, int] = {}
        if len(names) > MAX_COLUMNS:
            self.add(line, "", f"{len(names):,} columns (a table may have at most {MAX_COLUMNS})")
            return False
        for n, name in enumerate(names, 1):
            if name == "":
                self.add(line, "", f"column {n} has no name (the first row names the columns)")
                ok = False
            elif name != name.strip():
                self.add(line, repr(name), "the column name has spaces around it (in CSV a space after a comma "
                                           "is part of the field): remove them")  # fmt: skip
                ok = False
            elif name in seen:
                self.add(line, name, f"duplicate column name (first is column {seen[name]})")
                ok = False
            seen.setdefault(name, n)
        if self.key_column not in seen and ok:
            self.add(line, self.key_column, f"no such column for rows.key ({_known(self.key_column, names)})")
            ok = False
        return ok

    def rows_ok(self, rows: list[Row], cells: int, line: int) -> bool:
        if len(rows) > MAX_ROWS:
            self.add(line, "", f"more than {MAX_ROWS:,} rows (a table may have at most that; split it into projects)")
            return False
        if cells > MAX_CELLS:
            self.add(line, "", f"more than {MAX_CELLS:,} values (a table may have at most that)")
            return False
        return True

    def value_ok(self, line: int, column: str, value: str) -> bool:
        if len(value) > MAX_CELL_CHARS:
            self.add(line, column, f"the value is {len(value):,} characters (at most {MAX_CELL_CHARS:,})")
            return False
        if "\x00" in value:
            self.add(line, column, "the value contains a NUL character")
            return False
        return True

    def keys(self, rows: Sequence[Row]) -> None:
        """Every key valid, and unique without regard to case."""
        first: dict[str, Row] = {}
        for row in rows:
            problem = key_problem(row.key)
            if problem is not None:
                self.add(row.line, self.key_column, problem)
                continue
            folded = row.key.casefold()
            earlier = first.get(folded)
            if earlier is None:
                first[folded] = row
            elif earlier.key == row.key:
                self.add(row.line, self.key_column, f"duplicate key {row.key!r} (first on line {earlier.line})")
            else:
                self.add(
                    row.line,
                    self.key_column,
                    f"duplicate key {row.key!r} (first on line {earlier.line} as {earlier.key!r}: keys name "
                    "files, so they must differ in more than case)",
                )


def _known(name: str, names: Sequence[str]) -> str:
    same = [n for n in names if n.casefold() == name.casefold()]  # column names are case-sensitive
    near = same or difflib.get_close_matches(name, list(names), n=1)
    listed = ", ".join(names) or "none"
    return f"the columns are {listed}" + (f"; did you mean {near[0]!r}?" if near else "")


def known_columns(name: str, table: Table) -> str:
    """``the columns are a, b; did you mean 'c'?`` for a column a template asked for."""
    return _known(name, table.columns)


def read_table(path: Path, display: str, key_column: str) -> Table:
    """The table in ``path`` (checked: see the module docstring); a ProjectError lists its problems."""
    from kling_render.project.document import read_bounded

    raw = read_bounded(path, display, MAX_DATA_BYTES, what="a rows data file", must_be="rows: needs a data file")
    reader = _Reader(display, key_column)
    text = _decode(raw, reader)
    table: Table | None = None
    if text is not None:
        read = _read_csv if path.suffix.lower() in CSV_SUFFIXES else _read_list
        table = read(text, path, reader)
    if table is not None:
        reader.keys(table.rows)
    if reader.issues or table is None:
        raise ProjectError(reader.issues or [Issue(display, 0, "", "no rows could be read")])
    return table


def _decode(raw: bytes, reader: _Reader) -> str | None:
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Excel writes one) is not part of the data
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        reader.add(line, "", f"not UTF-8 text: {exc.reason} at byte {exc.start} (save the file as UTF-8)")
        return None
    if not text.strip():
        reader.add(1, "", "the file is empty (the first row names the columns)")
        return None
    return text


def _read_csv(text: str, path: Path, reader: _Reader) -> Table | None:
    records = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 1
    rows: list[Row] = []
    cells = 0
    ok = True
    line = 1
    end = 0  # the last line of the last record read
    try:
        for record in records:
            line, end = end + 1, records.line_num  # the record spans lines line..end
            if not any(record):  # a blank line, or one of empty fields (",,,": spreadsheets write them)
                continue
            if header is None:
                header, header_line = record, line
                if not reader.columns_ok(header, line):
                    return None
                continue
            if len(record) != len(header):
                more = "; quote values that contain commas" if len(record) > len(header) else ""
                reader.add(line, "", f"{len(record)} fields, but the header has {len(header)}{more}")
                ok = False
                continue
            cells += len(record)
            values = {}
            for name, value in zip(header, record, strict=True):
                ok = reader.value_ok(line, name, value) and ok
                values[name] = value
            rows.append(Row(values[reader.key_column], line, values))
            if not reader.rows_ok(rows, cells, line):
                return None
    except csv.Error as exc:
        where = records.line_num or line
        if "field larger than field limit" in str(exc):  # the csv module stops before MAX_CELL_CHARS can
            limit = csv.field_size_limit()
            reader.add(end + 1, "", f"a value is over {limit:,} characters (at most {MAX_CELL_CHARS:,})")
            return None
        reader.add(where, "", f"invalid CSV: {exc} (RFC 4180: fields with commas, quotes or line breaks are quoted, "
                              'and a quote inside one is doubled: "")')  # fmt: skip
        return None
    if header is None:
        reader.add(1, "", "no header row (the first row names the columns)")
        return None
    if not ok:
        return None
    if not rows:
        reader.add(header_line, "", "no rows below the header")
        return None
    return Table(path, reader.display, reader.key_column, tuple(header), tuple(rows), header_line)


def _read_list(text: str, path: Path, reader: _Reader) -> Table | None:
    from kling_render.project.document import format_path, parse_document

    doc = parse_document(text, reader.display, scalars_as_text=True)
    data: Any = doc.data
    if not isinstance(data, list) or not data:
        reader.add(1, "", "a rows data file in YAML or JSON is a non-empty list of mappings (one per row)")
        return None
    columns: dict[str, None] = {}
    rows: list[Row] = []
    cells = 0
    ok = True
    for index, item in enumerate(data):
        line = doc.line((index,))
        if not isinstance(item, dict):
            reader.add(line, f"[{index}]", "each row is a mapping of column names to values")
            ok = False
            continue
        values: dict[str, str] = {}
        for name, value in item.items():
            where = format_path((index, name))
            if not isinstance(value, str):
                kind = "a list" if isinstance(value, list) else "a mapping"
                reader.add(doc.line((index, name)), where, f"{kind} is not text (a row's values are text)")
                ok = False
                continue
            ok = reader.value_ok(doc.line((index, name)), where, value) and ok
            values[name] = value
            columns.setdefault(name, None)
        cells += len(item)
        if reader.key_column not in item:
            reader.add(line, f"[{index}]", f"no {reader.key_column} (rows.key: every row needs its key)")
            ok = False
            continue
        rows.append(Row(values.get(reader.key_column, ""), line, values))
        if len(columns) > MAX_COLUMNS or not reader.rows_ok(rows, cells, line):
            if len(columns) > MAX_COLUMNS:
                reader.add(line, "", f"more than {MAX_COLUMNS} different columns")
            return None
    if not ok:
        return None
    names = list(columns)
    if not reader.columns_ok(names, doc.line((0,))):
        return None
    return Table(path, reader.display, reader.key_column, tuple(names), tuple(rows), doc.line((0,)))


__all__ = [
    "KEY_RULE",
    "MAX_CELLS",
    "MAX_CELL_CHARS",
    "MAX_ROWS",
    "Row",
    "Table",
    "key_problem",
    "known_columns",
    "read_table",
]
