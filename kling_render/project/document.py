"""YAML with line marks: the parsed data plus the line of every node, by document path.

Bounded and JSON-like, whatever the file holds: it must be a regular file of at most
``MAX_FILE_BYTES``; aliases expand to at most ``MAX_NODES`` values in all (a "billion laughs"
file stops early), nesting is at most ``MAX_DEPTH`` deep, a recursive alias is an error, integers
fit in 64 bits (so Python's 4,300-digit conversion limit is never reached), text is encodable
(no lone surrogates from ``"\\ud800"`` escapes), dates stay text, and ``!!binary`` is refused.
Every problem is a located Issue; nothing here raises anything else.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kling_render.errors import Issue, ProjectError

try:  # libyaml is ~10x faster; the pure-Python loader gives the same nodes
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

DocPath = tuple[str | int, ...]

MAX_FILE_BYTES = 16 * 1024 * 1024  # a 10,000-shot project is about 1.5 MB
MAX_NODES = 1_000_000  # values after expanding aliases; 10,000 shots are about 70,000
MAX_DEPTH = 64  # a project is about 6 deep; jsonschema and the builder recurse per level
MAX_INT = 2**63 - 1
_MAX_INT_TEXT = 100  # characters of an integer literal worth parsing at all (0b + 64 digits + _)


def format_path(path: Sequence[str | int]) -> str:
    """``("shots", 2, "duration")`` -> ``shots[2].duration``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.isprintable():  # a key with a line break or control character: one line, quoted
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """A loaded YAML file: ``data``, the 1-based line where each path starts, and the paths of
    numbers that are not finite (``.nan``, ``.inf``, ``1e999``), which the project rejects."""

    file: str
    data: Any
    lines: dict[DocPath, int] = field(default_factory=dict)
    non_finite: list[tuple[DocPath, float]] = field(default_factory=list)

    def line(self, path: Sequence[str | int]) -> int:
        """Line of ``path``, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def issue(self, path: Sequence[str | int], message: str, *, line_path: Sequence[str | int] | None = None) -> Issue:
        """An Issue at ``path``; ``line_path`` points the line elsewhere (e.g. at a default)."""
        return Issue(self.file, self.line(line_path if line_path is not None else path), format_path(path), message)


def load_document(path: Path, display: str | None = None) -> Document:
    """Parse ``path``; an unreadable or oversized file, YAML errors, duplicate keys and an empty
    file are ProjectErrors."""
    name = display or str(path)
    raw = read_bounded(path, name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ProjectError([Issue(name, line, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]) from None
    return parse_document(text, name)


def read_bounded(
    path: Path,
    name: str,
    limit: int = MAX_FILE_BYTES,
    *,
    what: str = "a project file",
    must_be: str = "a project must be a YAML file",
) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes (``what`` and
    ``must_be`` name the kind of file in the messages: a project file, a rows data file).

    A FIFO, a device (``/dev/zero`` behind a symlink) or a directory is refused from its
    ``stat`` and never opened; the open is non-blocking and the size is checked again on the
    open file, so swapping the file in between cannot make the read hang or grow.
    """

    def refuse(message: str) -> ProjectError:
        return ProjectError([Issue(name, 0, "", message)])

    try:
        problem = _not_a_small_file(os.stat(path), limit, what, must_be)
        if problem:
            raise refuse(problem)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        with open(fd, "rb", closefd=True) as fh:
            problem = _not_a_small_file(os.fstat(fh.fileno()), limit, what, must_be)
            if problem:
                raise refuse(problem)
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise refuse("file not found") from None
    except OSError as exc:
        raise refuse(f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise refuse(f"the file is over {limit // (1024 * 1024)} MB; {what} may be at most that")
    return data


def _not_a_small_file(st: os.stat_result, limit: int, what: str, must_be: str) -> str | None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if st.st_size > limit:
            return f"the file is {st.st_size / 1e6:.1f} MB; {what} may be at most {limit // (1024 * 1024)} MB"
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "this")
    return f"{kind} is not a regular file: {must_be} (nothing was read)"


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def parse_document(text: str, name: str, *, scalars_as_text: bool = False) -> Document:
    """Parse YAML ``text`` (``name`` in messages). With ``scalars_as_text`` every scalar is kept as
    the text written (``yes``, ``1.50`` and ``0x1F`` stay text; a null is ""): for data files,
    whose values are text, so YAML 1.1's implicit types never turn ``NO`` into false."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # only the pure-Python composer recurses; libyaml stops at 1,000 levels
            too_deep = f"invalid YAML: nested more than {MAX_DEPTH} levels deep"
            raise ProjectError([Issue(name, 1, "", too_deep)]) from None
        if node is None:
            raise ProjectError([Issue(name, 1, "", "the file is empty (expected a mapping with version: 1)")])
        builder = _Builder(loader, Document(name, None), text, scalars_as_text=scalars_as_text)
        data = None
        with contextlib.suppress(_Stop):  # the issue that stopped the walk is in builder.issues
            data = builder.build(node, ())
        if builder.issues:
            raise ProjectError(builder.issues)
        builder.doc.data = data
    except yaml.MarkedYAMLError as exc:
        raise ProjectError([_yaml_issue(name, text, exc)]) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, only a position
        line = text[: exc.position].count("\n") + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ProjectError([Issue(name, line, "", f"invalid YAML: {exc.reason}", column=column)]) from None
    except yaml.YAMLError as exc:
        raise ProjectError([Issue(name, 0, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return builder.doc


# A value that starts with a Jinja tag, unquoted: `key: {{ x }}`, `- {{ x }}`, `[{{ x }}]`.
_UNQUOTED_JINJA = re.compile(r"(?:^\s*-\s+|:\s+|^\s*|[\[,]\s*)\{[{%#]")
_JINJA_HINT = "values starting with {{ must be quoted"
_CONTEXT_WORDS = {
    "while parsing a block mapping": "in the mapping that starts at",
    "while parsing a block collection": "in the list that starts at",
    "while parsing a flow mapping": "in the {...} that starts at",
    "while parsing a flow sequence": "in the [...] that starts at",
    "while scanning a plain scalar": "in the value that starts at",
}


def _yaml_issue(name: str, text: str, exc: yaml.MarkedYAMLError) -> Issue:
    """One located line at the broken line: where the parser found the problem, except where the
    cause is earlier (a quote or a bracket never closed, a key without its colon), then where that
    began; the other place is named in the message. The ``{{`` hint only when an unquoted ``{{``
    is on the lines involved, the tab hint only at a tab."""
    found = exc.problem_mark or exc.context_mark
    context = exc.context_mark
    lines = text.splitlines()
    at, other = found, context
    where = _CONTEXT_WORDS.get(exc.context or "", f"{exc.context} at" if exc.context else "")
    problem = exc.problem or exc.context or "syntax error"
    block = exc.context in ("while parsing a block mapping", "while parsing a block collection")
    opener = _unclosed_quote(text, found)
    if opener is not None or (context is not None and exc.context == "while scanning a quoted scalar"):
        at, other, block = opener or context, found, False
        problem, where = "a quoted value starts here and its closing quote is missing", "it ran on to"
    elif context is not None and exc.context == "while scanning a simple key":
        at, other = context, found
        problem, where = "a key without its ':' (or a value split over lines)", "the parser gave up at"
    elif context is not None and found is not None and _flow_never_closed(lines, context, found, exc.context or ""):
        at, other = context, found
        bracket = "[" if "sequence" in (exc.context or "") else "{"
        problem, where = f"this {bracket} is never closed ({problem})", "the parser gave up at"
    elif exc.context == "expected a single document in the stream":
        problem, where = "a second document (---): a project is one YAML document", "the first starts at"
    message = f"invalid YAML: {problem}"
    if other is not None and at is not None and (other.line, other.column) != (at.line, at.column):
        message += f" ({where} line {other.line + 1}, column {other.column + 1})"
    if at is not None and found is not None:
        first, last = sorted((at.line, found.line))
        involved = [lines[n] for n in {first, last, *range(first, min(last, first + 3) + 1)} if n < len(lines)]
        if any(_UNQUOTED_JINJA.search(line) for line in involved):
            message += f"; {_JINJA_HINT}"
        elif found.line < len(lines) and "\t" in lines[found.line][: found.column + 1]:
            message += "; indent with spaces, not tabs"
        elif block:
            message += "; check this line's indentation"
        elif problem.startswith("mapping values are not allowed"):
            message += "; quote a value that holds ': ', or check this line's indentation"
    line = at.line + 1 if at is not None else 0
    return Issue(name, line, "", message, column=at.column + 1 if at is not None else 0)


def _unclosed_quote(text: str, found: Any) -> Any:
    """The start mark of a quoted value that ran over lines up to the error's line: a quote left
    open swallows the lines after it until the next quote, and the parser stops just after."""
    if found is None:
        return None
    last = None
    try:
        for token in yaml.scan(text, Loader=_Loader):
            if token.start_mark.index >= found.index:
                break
            last = token
    except yaml.YAMLError:
        pass
    if (
        isinstance(last, yaml.ScalarToken)
        and last.style in ('"', "'")
        and last.start_mark.line < last.end_mark.line
        and last.end_mark.line == found.line
    ):
        return last.start_mark
    return None


def _flow_never_closed(lines: list[str], opened: Any, found: Any, context: str) -> bool:
    """A ``[``/``{`` left open: the parser stops on a later line that is no deeper than the
    opener's (the next key or list item), not inside a collection written over several lines."""
    if "flow" not in context or found.line <= opened.line or found.line >= len(lines):
        return False

    def indent(text: str) -> int:
        return len(text) - len(text.lstrip(" -"))

    return indent(lines[found.line]) <= indent(lines[opened.line])


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_BINARY = "tag:yaml.org,2002:binary"
_NULL = "tag:yaml.org,2002:null"
_BUILDING = -1  # size of a collection whose build has not finished: an alias to it is recursive


class _Stop(Exception):
    """A bound was exceeded: stop walking (the issue is recorded)."""


class _Builder:
    """One walk over the node tree: builds the data, records each path's line, finds duplicate keys,
    and enforces the bounds of the module docstring.

    Strings (nearly every scalar) skip PyYAML's constructor machinery; other scalars use it, so
    ints, floats, booleans and nulls resolve exactly as ``yaml.safe_load`` would. An alias yields
    the object already built for its anchor (shared, not copied) and counts its full size.
    """

    def __init__(self, loader: yaml.SafeLoader, doc: Document, text: str, *, scalars_as_text: bool = False) -> None:
        self.loader = loader
        self.as_text = scalars_as_text
        self.doc = doc
        self.text = text
        self.lines = doc.lines
        self.issues: list[Issue] = []
        self.count = 0  # values so far, aliases expanded
        self.built: dict[int, tuple[Any, int]] = {}  # id(node) -> (object, size)

    def fail(self, node: yaml.Node, path: DocPath, message: str, *, stop: bool = False) -> None:
        mark = node.start_mark
        self.issues.append(Issue(self.doc.file, mark.line + 1, format_path(path), message, column=mark.column + 1))
        if stop:
            raise _Stop

    def build(self, node: yaml.Node, path: DocPath) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            self.count += 1
            if node.tag == _STR and node.value.isascii():
                return node.value
            return self.text_scalar(node, path) if self.as_text else self.scalar(node, path)
        done = self.built.get(id(node))
        if done is not None:  # an alias: its lines were recorded where it was anchored
            value, size = done
            if size == _BUILDING:
                self.fail(node, path, "invalid YAML: a recursive alias (an anchor used inside itself)", stop=True)
            self.count += size
            if self.count > MAX_NODES:
                self.fail(node, path, f"aliases expand to more than {MAX_NODES:,} values", stop=True)
            return value
        if len(path) > MAX_DEPTH:
            mark, where = node.start_mark, format_path(path[:6]) + "..."
            too_deep = f"nested more than {MAX_DEPTH} levels deep"
            self.issues.append(Issue(self.doc.file, mark.line + 1, where, too_deep, column=mark.column + 1))
            raise _Stop
        before = self.count
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(node, path, f"more than {MAX_NODES:,} values (aliases expanded)", stop=True)
        if isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            self.built[id(node)] = (items, _BUILDING)
            items.extend(self.build(item, (*path, i)) for i, item in enumerate(node.value))
            self.built[id(node)] = (items, self.count - before)
            return items
        assert isinstance(node, yaml.MappingNode)
        mapping: dict[Any, Any] = {}
        self.built[id(node)] = (mapping, _BUILDING)
        if not self._jinja_like(node, path):
            self._fill(mapping, node, path)
        self.built[id(node)] = (mapping, self.count - before)
        return mapping

    def _jinja_like(self, node: yaml.Node, path: DocPath) -> bool:
        """An unquoted ``{{ x }}`` is a flow mapping holding a flow mapping: say so, with the fix."""
        start, end = node.start_mark.index, node.end_mark.index
        if not (isinstance(node, yaml.MappingNode) and node.flow_style and self.text.startswith("{{", start)):
            return False
        snippet = self.text[start:end].split("\n", 1)[0][:40]
        self.fail(node, path, f"{snippet} reads as a YAML mapping: {_JINJA_HINT}")
        return True

    def _fill(self, mapping: dict[Any, Any], node: yaml.MappingNode, path: DocPath) -> None:
        merges: list[tuple[yaml.Node, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append((key_node, self.build(value_node, (*path, "<<"))))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                if not self._jinja_like(key_node, path):
                    self.fail(key_node, path, "a list or mapping cannot be a key")
                continue
            if key_node.tag == _STR:
                key = key_node.value
            else:
                key = self.text_scalar(key_node, path) if self.as_text else self.scalar(key_node, path)
            child = (*path, str(key))
            if key in mapping:
                self.fail(key_node, child, "duplicate key")
            mapping[key] = self.build(value_node, child)
            self.lines[child] = key_node.start_mark.line + 1
        for key_node, merged in merges:  # YAML merge keys: explicit keys win, then earlier merges
            sources = merged if isinstance(merged, list) else [merged]
            if not all(isinstance(m, dict) for m in sources):
                self.fail(key_node, path, "<< (merge) takes a mapping or a list of mappings")
                continue
            for source in sources:
                for key, value in source.items():
                    if key not in mapping:
                        mapping[key] = value
                        self.lines.setdefault((*path, str(key)), key_node.start_mark.line + 1)

    def text_scalar(self, node: yaml.ScalarNode, path: DocPath) -> str:
        """A scalar as the text written: a null is "", anything else its source text (checked encodable)."""
        if node.tag == _NULL:
            return ""
        if node.tag == _BINARY:
            self.fail(node, path, "binary data (!!binary) is not supported")
            return ""
        try:
            node.value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = node.value[exc.start]
            self.fail(node, path, f"text with a lone surrogate (U+{ord(bad):04X}) cannot be encoded; remove it")
            return ""
        return str(node.value)

    def scalar(self, node: yaml.ScalarNode, path: DocPath) -> Any:
        tag = node.tag
        if tag == _STR:
            try:
                node.value.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = node.value[exc.start]
                self.fail(node, path, f"text with a lone surrogate (U+{ord(bad):04X}) cannot be encoded; remove it")
                return ""
            return node.value
        if tag == _INT and len(node.value) > _MAX_INT_TEXT:
            return self._too_large(node, path)
        if tag == _TIMESTAMP:  # YAML 1.1 dates: keep the text, as YAML 1.2 and JSON would
            return node.value
        if tag == _BINARY:
            self.fail(node, path, "binary data (!!binary) is not supported")
            return None
        value = self.loader.construct_object(node)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            return self._too_large(node, path)
        if isinstance(value, float) and not math.isfinite(value):
            self.doc.non_finite.append((path, value))
        return value

    def _too_large(self, node: yaml.ScalarNode, path: DocPath) -> int:
        text = node.value if len(node.value) <= 24 else f"{node.value[:20]}... ({len(node.value):,} characters)"
        self.fail(node, path, f"{text} is too large an integer (at most 64 bits)")
        return 0
