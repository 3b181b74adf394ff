"""The one sandboxed Jinja environment: undefined variables are errors, no Python internals."""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

RESERVED_NAMES = frozenset({"prompts", "project", "shot"})
# A prompt is a few hundred characters. These bounds stop a template from eating the memory or
# the CPU of the machine that renders it (a CI runner): huge repeats, powers, widths, ranges.
MAX_SIZE = 100_000  # characters/items one operation may build; also the largest int argument
MAX_RANGE_ITEMS = 100_000  # range() items per template render, nested loops included
_BIG_WIDTH = re.compile(r"(%[-+ #0]*|\{[^{}]*:[^{}]*?)\d{6,}")
_range_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("range_budget")


def _bounded_range(*args: int) -> range:
    rng = safe_range(*args)
    budget = _range_budget.get(None)
    if budget is not None:
        budget[0] -= len(rng)
        if budget[0] < 0:
            raise SecurityError(f"the template iterates over more than {MAX_RANGE_ITEMS} range() items")
    return rng


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def _check_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
            raise SecurityError(f"argument {value} is too large for a template (at most {MAX_SIZE})")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus bounds on what one expression may allocate or compute."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                size = _size(seq)
                if size is not None and isinstance(times, int) and size * times > MAX_SIZE:
                    raise SecurityError(f"the template would build a value of more than {MAX_SIZE} items")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * max(1, abs(left).bit_length()) > 4 * MAX_SIZE:
                raise SecurityError("the template computes a power too large")
        elif operator == "%" and isinstance(left, str) and _BIG_WIDTH.search(left):
            raise SecurityError("a format width that large is not allowed in a template")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_args(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _BIG_WIDTH.search(str(getattr(value, "__self__", ""))):
            raise SecurityError("a format width that large is not allowed in a template")
        return wrapped


class TemplateProblem(Exception):
    """A template failed to compile or render; the message is one readable line."""


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    # Immutable sandbox: no attribute walks to __class__/__globals__, no mutation of the context.
    # Only the default filters; nothing reaches the file system or the environment variables.
    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        cache_size=4096,
    )
    env.globals["range"] = _bounded_range
    for name, func in list(env.filters.items()):  # filters with a size argument: center, indent, wordwrap...
        env.filters[name] = _bounded_filter(func)
    return env


def _bounded_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 2 if hasattr(func, "jinja_pass_arg") else 1

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_args(args[skip:], kwargs)  # not the value being filtered (nor the context)
        if func.__name__ == "do_format" and args and isinstance(args[0], str) and _BIG_WIDTH.search(args[0]):
            raise SecurityError("a format width that large is not allowed in a template")
        return func(*args, **kwargs)

    return bounded


@functools.lru_cache(maxsize=8192)
def _compile(source: str) -> jinja2.Template:
    return environment().from_string(source)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context``; plain strings skip Jinja entirely (fast path)."""
    if not is_template(source):
        return source
    token = _range_budget.set([MAX_RANGE_ITEMS])
    try:
        return _compile(source).render(context)
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"template error: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"template refused by the sandbox: {exc}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, AttributeError, LookupError, RecursionError) as exc:
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from None
    finally:
        _range_budget.reset(token)
