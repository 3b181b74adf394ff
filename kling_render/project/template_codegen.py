"""Jinja's code generator with kling-render's hooks woven into the generated Python.

Jinja compiles a template to Python source. This generator changes five spots so that the
sandbox (``sandbox.Sandbox``) sees what it must check:

* every ``{{ expr }}``      -> ``environment.kr_print(expr, "{{ expr }}")`` (text and numbers only)
* literal template text     -> ``environment.kr_data("...")`` (counted like printed text)
* ``a ~ b``                 -> ``environment.kr_concat((a, b), ("a", "b"))``
* ``for x in it``           -> ``for x in environment.kr_iter(it)`` (one step per item);
  ``recursive`` loops are refused (their inner iterables would escape the count)
* comparison operands and literal dict keys -> ``environment.kr_operand(x)`` (weighed)
* ``x[a:b]``                -> ``environment.kr_read(x[a:b])`` (the copy is counted)

Constant folding is off (it would evaluate ``'a' ~ [1]`` or a filter at compile time, unchecked):
only literal text and plain constants are folded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame

from kling_render.project.template_limits import is_printable


def source_of(node: nodes.Node) -> str:
    """The expression roughly as the user wrote it, for messages."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Const):
        value = node.value
        if value is None or isinstance(value, bool):
            return str(value).lower()
        return repr(value) if not isinstance(value, str) or len(value) < 30 else "'...'"
    if isinstance(node, nodes.Getattr):
        return f"{source_of(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        return f"{source_of(node.node)}[{source_of(node.arg)}]"
    if isinstance(node, nodes.Call):
        args = [source_of(a) for a in node.args] + [f"{k.key}={source_of(k.value)}" for k in node.kwargs]
        return f"{source_of(node.node)}({', '.join(args)})"
    if isinstance(node, nodes.Filter | nodes.Test):
        args = [source_of(a) for a in node.args]
        inner = source_of(node.node) if node.node is not None else ""
        sep = "|" if isinstance(node, nodes.Filter) else " is "
        return f"{inner}{sep}{node.name}" + (f"({', '.join(args)})" if args else "")
    if isinstance(node, nodes.Concat):
        return " ~ ".join(source_of(n) for n in node.nodes)
    if isinstance(node, nodes.BinExpr):
        return f"{source_of(node.left)} {node.operator} {source_of(node.right)}"
    literals: dict[type[nodes.Node], str] = {nodes.List: "[...]", nodes.Tuple: "(...)", nodes.Dict: "{...}"}
    return literals.get(type(node), "the expression")


def _const_text(value: Any) -> str:
    if is_printable(value):
        return str(value)
    raise nodes.Impossible()  # printed at run time by kr_print, which names the expression


_COMPARE = {"eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<=", "in": "in", "notin": "not in"}


class Codegen(CodeGenerator):
    def _make_finalize(self) -> CodeGenerator._FinalizeInfo:
        return self._FinalizeInfo(_const_text, None)

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        # Fold only literal text and plain constants: folding `'a' ~ [1]` would print a list's repr
        # without asking kr_concat (the environment also runs with optimized=False).
        if not isinstance(node, nodes.TemplateData | nodes.Const):
            raise nodes.Impossible()
        return str(super()._output_child_to_const(node, frame, finalize))

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.kr_print(")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write(f", {'{{ ' + source_of(node) + ' }}'!r})")

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.kr_data({''.join(str(v) for v in group)!r})"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()  # ids of for-loop iterables: Jinja forbids custom nodes

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self._loop_iterables.discard(id(node))
        self.write("environment.kr_iter(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if node.recursive:
            self.fail("recursive loops are not allowed in a template", node.lineno)
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.kr_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {tuple(source_of(n) for n in node.nodes)!r})")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.kr_read(")  # Jinja compiles slices to plain Python: count the copy
        self.visit(node.node, frame)
        self.write("[")
        self.visit(node.arg, frame)
        self.write("])")

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        self.write("(environment.kr_operand(")
        self.visit(node.expr, frame)
        self.write(")")
        for op in node.ops:
            self.write(f" {_COMPARE[op.op]} environment.kr_operand(")
            self.visit(op.expr, frame)
            self.write(")")
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("{")
        for idx, item in enumerate(node.items):
            if idx:
                self.write(", ")
            self.write("environment.kr_operand(")
            self.visit(item.key, frame)
            self.write("): ")
            self.visit(item.value, frame)
        self.write("}")
