"""Templated fields: the context of SPEC §3 and the one entry point, ``render``.

The environment itself (sandboxed, deterministic, bounded) is in ``sandbox.py``; its bounds in
``template_limits.py``. The context is the project's ``vars`` (after ``--var``) as top-level
names, ``prompts.<name>`` (snippets rendered on first use with the same context), ``project.name``,
``shot.id`` / ``shot.index``, and in a ``rows:`` project ``row.<column>``. No environment variables
or secrets reach templates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from kling_render.project.sandbox import DROPPED, environment
from kling_render.project.template_limits import ACTIVE, MAX_OUTPUT, Budget, Meter, ProjectBudgetSpent, charge_compile
from kling_render.suggest import did_you_mean, with_hint

RESERVED_NAMES = frozenset({"prompts", "project", "shot"})


class TemplateProblem(Exception):
    """A template failed to compile or render; ``message`` is one readable line, ``snippet`` the
    ``prompts.<name>`` it failed in (None when it failed in the field itself)."""

    def __init__(self, message: str, snippet: str | None = None, *, project_wide: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.snippet = snippet
        self.project_wide = project_wide  # the project's budget is spent: worth saying once


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@functools.lru_cache(maxsize=8192)
def _compile(source: str) -> jinja2.Template:
    charge_compile(source)  # only on a cache miss: a template compiled once is paid once
    return environment().from_string(source)


def render(source: str, context: Mapping[str, Any], budget: Budget | None = None) -> str:
    """Render ``source`` with ``context``, charging ``budget`` (the project's; a fresh one when
    None). Plain strings skip Jinja entirely (the fast path). Nested renders (``prompts.x``)
    share the field's meter."""
    if not is_template(source):
        return source
    if len(source) > MAX_OUTPUT:
        raise TemplateProblem(f"the template is {len(source):,} characters (at most {MAX_OUTPUT:,})")
    meter = ACTIVE.get()
    token = None
    if meter is None:
        meter = Meter(budget if budget is not None else Budget())
        token = ACTIVE.set(meter)
    try:
        text = _render(source, context)
    finally:
        if token is not None:
            ACTIVE.reset(token)
            meter.settle()
    if len(text) > MAX_OUTPUT:
        raise TemplateProblem(
            f"template refused by the sandbox: the text is {len(text):,} characters (at most {MAX_OUTPUT:,})"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = f"U+{ord(text[exc.start]):04X}"
            raise TemplateProblem(f"template error: the text has a lone surrogate ({bad}) and cannot be sent") from None
    return text


def _render(source: str, context: Mapping[str, Any]) -> str:
    try:
        return _compile(source).render(context)
    except TemplateProblem:
        raise
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"template error: {_undefined(exc.message or 'undefined', context)}") from None
    except SecurityError as exc:
        spent = isinstance(exc, ProjectBudgetSpent)
        raise TemplateProblem(f"template refused by the sandbox: {exc}", project_wide=spent) from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {_unavailable(exc.message or '')}") from None
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"template error: {_plain(str(exc))}") from None
    except RecursionError:
        raise TemplateProblem("template error: nested too deeply") from None
    except (TypeError, ValueError, ArithmeticError, AttributeError, LookupError, MemoryError) as exc:
        raise TemplateProblem(f"template error: {_plain(str(exc))}") from None


_UNDEFINED_NAME = re.compile(r"^'(\w+)' is undefined$")


def _undefined(message: str, context: Mapping[str, Any]) -> str:
    """``'moood' is undefined (did you mean 'mood'?)``: a top-level name, against the context's."""
    m = _UNDEFINED_NAME.match(message)
    return with_hint(message, did_you_mean(m.group(1), context)) if m else message


_NO_SUCH = re.compile(r"^No (filter|test) named '(\w+)'")


def _unavailable(message: str) -> str:
    m = _NO_SUCH.match(message)
    if m and m.group(2) in DROPPED:
        return f"the {m.group(2)} {m.group(1)} is not available in templates: {DROPPED[m.group(2)]}"
    return message


_TYPE_WORDS = {
    "str": "text",
    "int": "a number",
    "float": "a number",
    "bool": "true/false",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "NoneType": "none",
    "range": "a range",
    "function": "a function",
    "generator": "a sequence",
}
_QUOTED_TYPE = re.compile(r"'(\w+)'( object)?|\btype (\w+)\b")
_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _plain(message: str) -> str:
    """A Python error message in a user's words: type names as words, no reprs or private names."""

    def word(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in _TYPE_WORDS:
            return _TYPE_WORDS[name]
        if name.startswith("_") or m.group(2) or m.group(3):
            return "an object"
        return m.group(0)

    return _REPR.sub("an object", _QUOTED_TYPE.sub(word, message.splitlines()[0] if message else "failed"))


# -- the context ------------------------------------------------------------------------------


class Labelled(dict[str, Any]):
    """A mapping in the template context that messages call by its name (``shot``, ``project``)."""

    __slots__ = ("_template_label",)

    def __init__(self, label: str, **values: Any) -> None:
        super().__init__(values)
        self._template_label = label


class _Prompts(Mapping[str, str]):
    """``prompts.<name>``: snippets rendered on first use with the shot's context."""

    _template_label = "prompts"

    def __init__(self, shot: ShotTemplates) -> None:
        self._shot = shot
        self._raw = shot.project.snippets
        self._done: dict[str, str] = {}
        self._rendering: set[str] = set()

    def __getitem__(self, key: str) -> str:
        done = self._done.get(key)
        if done is not None:
            return done
        source = self._raw[key]
        if key in self._rendering:
            raise TemplateProblem(f"template error: prompts.{key} uses itself", snippet=key)
        self._rendering.add(key)
        try:
            text = self._done[key] = render(source, self._shot.values, self._shot.project.budget)
        except TemplateProblem as exc:
            if exc.snippet is None:
                exc.snippet = key
            raise
        finally:
            self._rendering.discard(key)
        return text

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


class ProjectTemplates:
    """The templates of one project: its variables, snippets, and one budget for all its fields.

    ``row`` is the row being rendered in a ``rows:`` project (``row.<column>``, text values),
    set by the row expansion before each row's fields are rendered; None otherwise."""

    def __init__(self, variables: Mapping[str, Any], snippets: Mapping[str, str], project_name: str) -> None:
        self.variables = dict(variables)
        self.snippets = dict(snippets)
        self.project = Labelled("project", name=project_name)
        self.budget = Budget()
        self.row: Labelled | None = None

    def for_shot(self, shot_id: str, index: int) -> ShotTemplates:
        return ShotTemplates(self, shot_id, index)

    def for_cut(self) -> ShotTemplates:
        """The context of the project's own paths (``output.path``, ``audio.music``): no ``shot``."""
        return ShotTemplates(self, None, None)


class ShotTemplates:
    """The context of one shot's fields; ``render`` raises TemplateProblem."""

    def __init__(self, project: ProjectTemplates, shot_id: str | None, index: int | None) -> None:
        self.project = project
        self.values: dict[str, Any] = {**project.variables, "project": project.project}
        if shot_id is not None:
            self.values["shot"] = Labelled("shot", id=shot_id, index=index)
        if project.row is not None:
            self.values["row"] = project.row
        self.values["prompts"] = _Prompts(self)

    def render(self, source: str) -> str:
        return render(source, self.values, self.project.budget)
