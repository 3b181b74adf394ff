"""YAML with line marks: the parsed data plus the line of every node, by document path."""

from __future__ import annotations

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


def format_path(path: Sequence[str | int]) -> str:
    """``("shots", 2, "duration")`` -> ``shots[2].duration``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """A loaded YAML file: ``data`` and the 1-based line where each path starts."""

    file: str
    data: Any
    lines: dict[DocPath, int] = field(default_factory=dict)

    def line(self, path: Sequence[str | int]) -> int:
        """Line of ``path``, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def issue(
        self, path: Sequence[str | int], message: str, *, line_path: Sequence[str | int] | None = None
    ) -> Issue:
        """An Issue at ``path``; ``line_path`` points the line elsewhere (e.g. at a default)."""
        return Issue(
            self.file, self.line(line_path if line_path is not None else path), format_path(path), message
        )


def load_document(path: Path, display: str | None = None) -> Document:
    """Parse ``path``; YAML errors, duplicate keys and an empty file are ProjectErrors."""
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProjectError([Issue(name, 0, "", "file not found")]) from None
    except OSError as exc:
        raise ProjectError([Issue(name, 0, "", f"cannot read file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ProjectError([Issue(name, line, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]) from None
    return parse_document(text, name)


def parse_document(text: str, name: str) -> Document:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ProjectError([Issue(name, 1, "", "the file is empty (expected a mapping with version: 1)")])
        builder = _Builder(loader, Document(name, None))
        data = builder.build(node, ())
        if builder.issues:
            raise ProjectError(builder.issues)
        builder.doc.data = loader.construct_document(node) if builder.has_merge else data
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise ProjectError([Issue(name, line, "", f"invalid YAML: {problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, only a position
        line = text[: exc.position].count("\n") + 1
        raise ProjectError([Issue(name, line, "", f"invalid YAML: {exc.reason}")]) from None
    except yaml.YAMLError as exc:
        raise ProjectError([Issue(name, 0, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return builder.doc


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


class _Builder:
    """One walk over the node tree: builds the data, records each path's line, finds duplicate keys.

    Strings (nearly every scalar) skip PyYAML's constructor machinery; other scalars use it, so
    ints, floats, booleans and nulls resolve exactly as ``yaml.safe_load`` would.
    """

    def __init__(self, loader: yaml.SafeLoader, doc: Document) -> None:
        self.loader = loader
        self.doc = doc
        self.lines = doc.lines
        self.issues: list[Issue] = []
        self.has_merge = False
        self.built: dict[int, Any] = {}

    def build(self, node: yaml.Node, path: DocPath) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return node.value if node.tag == _STR else self.loader.construct_object(node)
        done = self.built.get(id(node))
        if done is not None:  # an alias: its lines were recorded where it was anchored
            return done
        if isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            self.built[id(node)] = items
            items.extend(self.build(item, (*path, i)) for i, item in enumerate(node.value))
            return items
        mapping: dict[Any, Any] = {}
        self.built[id(node)] = mapping
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self.has_merge = True
                continue
            key = key_node.value if key_node.tag == _STR else self.loader.construct_object(key_node)
            try:
                duplicate = key in mapping
            except TypeError:  # an unhashable key (a list or mapping): the schema reports it
                key, duplicate = str(key), False
            child = (*path, str(key))
            if duplicate:
                self.issues.append(
                    Issue(self.doc.file, key_node.start_mark.line + 1, format_path(child), "duplicate key")
                )
            mapping[key] = self.build(value_node, child)
            self.lines[child] = key_node.start_mark.line + 1
        return mapping
