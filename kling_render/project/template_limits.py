"""The bounds on what a template may compute, and the words for what a value is.

A template runs under a ``Meter`` (one per rendered field; nested ``prompts.x`` renders share it),
drawn from the project's ``Budget``:

* steps: every loop item, call (a macro call costs ``MACRO_STEPS``), operator, filter (plus
  one per item it walks) and nested item weighed; per field ``FIELD_STEPS``, per project
  ``Budget.steps``;
* characters printed, or built by ``~``, ``+``, ``*`` and the text filters: per field
  ``FIELD_CHARS``, per project ``Budget.chars``;
* one value: at most ``MAX_SIZE`` characters or items, predicted before it is built; integers
  at most ``MAX_INT_BITS``; one field's text at most ``MAX_OUTPUT``;
* compiling: at most ``MAX_TAGS`` tags in one template, ``Budget.tags`` per project;
* CPU time: ``FIELD_SECONDS`` per field, ``Budget.seconds`` per project, read every
  ``_CHECK_EVERY`` steps (the backstop: the counts above stop every known attack first).

Every refusal is a ``TemplateRefused`` with one readable line and no Python class name.
"""

from __future__ import annotations

import contextvars
import math
import re
import time
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext, Macro, Undefined
from jinja2.utils import Cycler, Joiner, Namespace

MAX_SIZE = 100_000  # characters or items one operation may build; also the largest int argument
MAX_OUTPUT = 100_000  # characters of one rendered field (a Kling prompt is at most 2,500)
MAX_INT_BITS = 4096  # about 1,230 digits
FIELD_STEPS = 100_000
FIELD_CHARS = 1_000_000
FIELD_SECONDS = 2.0
MAX_TAGS = 1_000  # {{ }} and {% %} in one template: compiling costs about 70 us a tag
MACRO_STEPS = 20  # a macro call costs about as much as twenty loop items
MAX_MACRO_DEPTH = 50
_CHECK_EVERY = 2048  # steps between two reads of the CPU clock
BIG_WIDTH = re.compile(r"(%[-+ #0]*|\{[^{}]*:[^{}]*?)\d{6,}")
_DIGITS = re.compile(r"\d+")
_CONTAINERS = (list, tuple, dict)


class TemplateRefused(SecurityError):
    """A template broke a bound or a determinism rule; the message is one readable line."""


class ProjectBudgetSpent(TemplateRefused):
    """The project's templates together used up its budget (reported once, not per field)."""


class Budget:
    """What the templates of one project may still spend, all fields together."""

    # A step costs at most a few microseconds, so 500,000 steps stay within about a second even
    # when every field of a large project spends its whole allowance.
    def __init__(
        self, steps: int = 500_000, chars: int = 50_000_000, seconds: float = 10.0, tags: int = 30_000
    ) -> None:
        self.steps = self.total_steps = steps
        self.chars = self.total_chars = chars
        self.seconds = self.total_seconds = seconds
        # {{ }} and {% %} compiled, about 70-100 us each; a template used by many shots compiles once
        self.tags = self.total_tags = tags


class Meter:
    """The running account of one field's render."""

    __slots__ = ("budget", "chars", "chars_given", "check_at", "deadline", "depth", "started", "steps", "steps_given")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        steps, chars = budget.steps, budget.chars  # (no min/max: this runs for every templated field)
        self.steps_given = self.steps = FIELD_STEPS if steps >= FIELD_STEPS else steps if steps > 0 else 0
        self.chars_given = self.chars = FIELD_CHARS if chars >= FIELD_CHARS else chars if chars > 0 else 0
        self.check_at = self.steps - _CHECK_EVERY
        self.started = 0.0  # the clock is read only once a field has run _CHECK_EVERY steps
        self.deadline = 0.0
        self.depth = 0

    def tick(self, n: int = 1) -> None:
        self.steps -= n
        if self.steps < self.check_at:
            self._check()

    def _check(self) -> None:
        if self.steps < 0:
            if self.steps_given < FIELD_STEPS:
                raise ProjectBudgetSpent(
                    f"the project's templates together would take more than {self.budget.total_steps:,} steps "
                    "(loop items, calls, filters)"
                )
            raise TemplateRefused(f"the field would take more than {FIELD_STEPS:,} steps (loop items, calls, filters)")
        now = time.process_time()
        if not self.started:
            self.started = now
            self.deadline = now + max(0.0, min(FIELD_SECONDS, self.budget.seconds))
        elif now > self.deadline:
            if self.budget.seconds < FIELD_SECONDS:
                raise ProjectBudgetSpent(
                    f"the project's templates together took more than {self.budget.total_seconds:g} s of CPU time"
                )
            raise TemplateRefused(f"rendering took more than {FIELD_SECONDS:g} s of CPU time")
        self.check_at = self.steps - _CHECK_EVERY

    def spend_chars(self, n: int) -> None:
        self.chars -= n
        if self.chars < 0:
            if self.chars_given < FIELD_CHARS:
                raise ProjectBudgetSpent(
                    f"the project's templates together would print or build more than "
                    f"{self.budget.total_chars:,} characters"
                )
            raise TemplateRefused(f"the field would print or build more than {FIELD_CHARS:,} characters")

    def settle(self) -> None:
        """Charge what this field used to the project."""
        self.budget.steps -= self.steps_given - (self.steps if self.steps > 0 else 0)
        self.budget.chars -= self.chars_given - (self.chars if self.chars > 0 else 0)
        if self.started:
            self.budget.seconds -= time.process_time() - self.started


def charge_compile(source: str) -> None:
    """Compiling is paid per tag: at most ``MAX_TAGS`` in one template, ``Budget.tags`` in all."""
    tags = source.count("{{") + source.count("{%")
    if tags > MAX_TAGS:
        raise TemplateRefused(f"the template has {tags:,} tags (at most {MAX_TAGS:,})")
    meter = ACTIVE.get()
    if meter is not None:
        meter.budget.tags -= tags
        if meter.budget.tags < 0:
            raise ProjectBudgetSpent(
                f"the project's templates together have more than {meter.budget.total_tags:,} tags to compile"
            )


ACTIVE: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("kling_render_template_meter", default=None)


def counted(items: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``items``, one step per item on the active meter."""
    meter = ACTIVE.get()
    iterator = iter(items)
    return iterator if meter is None else _counting(iterator, meter)


def _counting(items: Iterator[Any], meter: Meter) -> Iterator[Any]:
    for item in items:
        meter.tick()
        yield item


# -- what a value is, in words ---------------------------------------------------------------


def is_printable(value: object) -> bool:
    """Text, an integer, a boolean or a finite float: what a rendered field may contain."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int)


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "true/false"),
    (str, "text"),
    ((int, float), "a number"),
    ((list, tuple), "a list"),
    (range, "a range"),
    (Mapping, "a mapping"),
    (Undefined, "undefined"),
    (Macro, "a macro"),
    (LoopContext, "the loop object"),
    (Cycler, "a cycler"),
    (Joiner, "a joiner"),
    (Namespace, "a namespace"),
    ((bytes, bytearray), "bytes"),
    ((types.GeneratorType, Iterator), "a sequence"),
)


def kind(value: object) -> str:
    """A value's kind in a user's words (never a Python class name)."""
    if value is None:
        return "none (empty)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} (not a finite number)"
    if not isinstance(value, Undefined):
        label = getattr(value, "_template_label", None)
        if isinstance(label, str):
            return f"the {label} mapping"
    for types_, words in _KINDS:
        if isinstance(value, types_):
            return words
    return "a function" if callable(value) else "an object"


def short(value: object) -> str:
    """A short rendering of a key or name for messages."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return kind(value)


def text_of(value: object, what: str) -> str:
    """``value`` as text, if it is text or a finite number; else a refusal naming ``what``."""
    if isinstance(value, str) or is_printable(value):
        return str(value)
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined: raises the undefined error
    raise TemplateRefused(f"{what} is {kind(value)}, not text or a number{_hint(value)}")


def _hint(value: object) -> str:
    if getattr(value, "_template_label", None) == "prompts":
        return " (use prompts.<name>)"
    if isinstance(value, list | tuple | range | types.GeneratorType):
        return " (use |join(', ') to print a list)"
    return ""


def too_big(what: str, size: int) -> TemplateRefused:
    return TemplateRefused(f"{what} would build {size:,} characters or items (at most {MAX_SIZE:,})")


def weigh(value: object, *, text: bool = False) -> int:
    """Nested items of ``value`` (shared ones counted each time they appear; with ``text``, every
    character of the text in it too), paid in steps and refused past ``MAX_SIZE``.

    Comparing, hashing, serialising or passing a value to a call costs about this much in one C
    call, so such values are weighed first: sharing cannot hide a billion-item structure.
    """
    if not isinstance(value, _CONTAINERS):
        return len(value) if text and isinstance(value, str) else 1
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        members = item.values() if isinstance(item, dict) else item
        total += 1 + len(item)
        for member in members:
            if isinstance(member, _CONTAINERS):
                stack.append(member)
            elif text and isinstance(member, str):
                total += len(member)
        if total > MAX_SIZE:
            raise TemplateRefused(f"{kind(value)} with over {MAX_SIZE:,} nested items is too large to use here")
    meter = ACTIVE.get()
    if meter is not None:
        meter.tick(total)
    return total


def check_args(args: Iterable[Any]) -> None:
    """Arguments of a call, filter or test: integers at most ``MAX_SIZE``, containers weighed."""
    for value in args:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
            raise TemplateRefused(f"the argument {value} is too large for a template (at most {MAX_SIZE:,})")
        if isinstance(value, _CONTAINERS):
            weigh(value)


def format_values(right: Any) -> list[Any]:
    """The values ``fmt % right`` formats."""
    if isinstance(right, tuple | list):
        return list(right)
    if isinstance(right, dict):  # '%(name)s' % {...}; not prompts, which would render every snippet
        return list(right.values())
    return [right]


def check_format(fmt: str, values: Iterable[Any], what: str) -> None:
    """Refuse ``fmt % values`` / ``fmt.format(*values)`` if it could exceed ``MAX_SIZE``, or if a
    value is not text or a number (its repr could hold a memory address)."""
    if BIG_WIDTH.search(fmt):
        raise TemplateRefused("a format width that large is not allowed in a template")
    texts = [text_of(v, f"a value formatted by {what}") for v in values]
    widths = [int(d) for d in _DIGITS.findall(fmt)] or [0]
    specs = fmt.count("%") + fmt.count("{")
    size = len(fmt) + specs * (max([len(t) for t in texts] or [0]) + max(widths))
    if size > MAX_SIZE:
        raise too_big(what, size)


def replace_size(text: str, old: str, new: str, count: int | None) -> int:
    """Length of ``text.replace(old, new, count)``, computed without building it."""
    hits = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))
