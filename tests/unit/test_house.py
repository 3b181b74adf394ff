"""The house's rules, held by the code itself (issue 20 item 8): no import cycles among the
package's modules (counting every import: at the top, inside a function, under TYPE_CHECKING),
and no module importing another module's private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import kling_render

PACKAGE = Path(kling_render.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, list[str]]]:
    """Each package module ``name`` imports, with the names it takes from it (``from m import
    _x``, or ``m._x`` where ``m`` names an imported module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}  # a local name bound to a package module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:  # `from package import module`
                    aliases[alias.asname or alias.name] = sub
                    yield sub, []
                elif base in known:
                    yield base, [alias.name]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield aliases[node.value.id], [node.attr]


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    known = set(modules)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[str] = []
    for name, path in modules.items():
        for target, names in _imports(name, path, known):
            if target != name and not (name.startswith(target + ".") and target == "kling_render"):
                edges[name].add(target)
            private += [f"{name} imports {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


# None left: project.py (the model) and loader.py (the resolver) were split; rows.py takes the
# resolver as a Protocol (rows.Resolving). A circle or a private import named here is a debt.
KNOWN_CIRCLES: list[list[str]] = []
KNOWN_PRIVATE: list[str] = []


def test_no_module_imports_another_in_a_circle() -> None:
    edges, _ = _graph()
    assert _cycles(edges) == KNOWN_CIRCLES


def test_no_module_takes_another_modules_private_names() -> None:
    _, private = _graph()
    assert private == KNOWN_PRIVATE


def test_the_check_sees_a_circle_and_a_private_name() -> None:
    """The checks can fail: a made-up pair that imports each other is a circle."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
