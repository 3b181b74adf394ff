"""The one sandboxed Jinja environment: undefined variables are errors, no Python internals."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

RESERVED_NAMES = frozenset({"prompts", "project", "shot"})


class TemplateProblem(Exception):
    """A template failed to compile or render; the message is one readable line."""


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    # Immutable sandbox: no attribute walks to __class__/__globals__, no mutation of the context.
    # Only the default filters; nothing reaches the file system or the environment variables.
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        cache_size=4096,
    )


@functools.lru_cache(maxsize=8192)
def _compile(source: str) -> jinja2.Template:
    return environment().from_string(source)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context``; plain strings skip Jinja entirely (fast path)."""
    if not is_template(source):
        return source
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
