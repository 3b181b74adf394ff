"""The one sandboxed Jinja environment: deterministic, bounded, and readable when it refuses.

Beyond Jinja's immutable sandbox (no Python internals, no mutation of the context):

* **Deterministic.** Only text and finite numbers (and booleans) can be printed, joined with
  ``~`` or formatted into text: a list, a mapping, a range, none, a function, a generator, a
  cycler or ``prompts`` itself is an error naming the expression, since a Python repr can hold a
  memory address. Nothing random (the ``random`` filter, ``lipsum``) or identity-based
  (``sameas``) is available; ``-`` only subtracts numbers (``keys() - x`` would build a set,
  whose order follows PYTHONHASHSEED). Dicts keep insertion order; nothing else has an order.
* **Bounded.** See ``template_limits``: steps, characters, sizes predicted before a value is
  built, integer bits, weighed operands, a CPU-time backstop.
* **Readable.** Refusals and undefined names are one line in the user's words.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator, Sized
from typing import Any

import jinja2
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from kling_render.project.template_codegen import Codegen
from kling_render.project.template_limits import (
    ACTIVE,
    BIG_WIDTH,
    MACRO_STEPS,
    MAX_INT_BITS,
    MAX_MACRO_DEPTH,
    MAX_SIZE,
    TemplateRefused,
    check_args,
    check_format,
    counted,
    format_values,
    kind,
    replace_size,
    short,
    text_of,
    too_big,
    weigh,
)
from kling_render.suggest import did_you_mean

# What is not available, and why (shown when a template uses it).
DROPPED = {
    "random": "it gives different text on every run",
    "lipsum": "it gives different text on every run",
    "pprint": "it prints Python object reprs",
    "xmlattr": "it is an HTML helper",
    "urlize": "it is an HTML helper",
    "striptags": "it is an HTML helper",
    "sameas": "it compares object identities",
}
# Filters that take text (or a number) and nothing else.
_TEXT_FILTERS = frozenset(
    {
        *("capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "replace", "safe"),
        *("string", "title", "trim", "truncate", "upper", "urlencode", "wordcount", "wordwrap"),
    }
)
# Filters that walk their value item by item (one step per item) and compare or hash items.
_ITEMWISE = frozenset(
    {
        *("batch", "dictsort", "groupby", "items", "join", "list", "map", "max", "min", "reject", "rejectattr"),
        *("reverse", "select", "selectattr", "slice", "sort", "sum", "unique", "tojson"),
    }
)
_NUMBER = (int, float)
_MAX_NUMBER_TEXT = 1300  # digits: a bit more than MAX_INT_BITS needs
_VERBS = {"-": "subtract", "/": "divide", "//": "divide", "**": "raise", "%": "take the remainder of"}


class FriendlyUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose messages name what the user wrote, never a Python class."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = self._undefined_name
        owner = self._undefined_obj
        if owner is missing:
            why = DROPPED.get(str(name))
            return f"'{name}' is not available in templates: {why}" if why else f"'{name}' is undefined"
        label = getattr(owner, "_template_label", None)
        if isinstance(label, str):
            keys = ", ".join(str(k) for k in owner)
            hint = did_you_mean(str(name), (str(k) for k in owner), prefix=f"{label}.")
            return f"'{label}.{name}' is undefined ({hint or f'{label} has: ' + (keys or 'nothing')})"
        what = "attribute" if isinstance(name, str) else "item"
        return f"{kind(owner)} has no {what} {short(name)}"


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the rules of the module docstring."""

    code_generator_class = Codegen
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    # -- hooks called by the generated code (template_codegen) -------------------------------

    def kr_print(self, value: Any, what: str) -> str:
        text = value if type(value) is str else text_of(value, what)
        meter = ACTIVE.get()
        if meter is not None:
            meter.chars -= len(text)
            if meter.chars < 0:
                meter.spend_chars(0)  # raises
        return text

    def kr_data(self, text: str) -> str:
        meter = ACTIVE.get()
        if meter is not None:
            meter.chars -= len(text)
            if meter.chars < 0:
                meter.spend_chars(0)  # raises
        return text

    def kr_concat(self, values: tuple[Any, ...], sources: tuple[str, ...]) -> str:
        parts = [text_of(v, f"{s} (joined with ~)") for v, s in zip(values, sources, strict=True)]
        size = sum(len(p) for p in parts)
        if size > MAX_SIZE:
            raise too_big("~", size)
        meter = ACTIVE.get()
        if meter is not None:
            meter.tick()
            meter.spend_chars(size)
        return "".join(parts)

    def kr_iter(self, iterable: Any) -> Iterator[Any]:
        if isinstance(iterable, Undefined):
            return iter(iterable)  # raises the undefined error
        try:
            return counted(iterable)
        except TypeError:
            raise TemplateRefused(f"cannot loop over {kind(iterable)}") from None

    def kr_read(self, value: Any) -> Any:
        return _read(value) if isinstance(value, str | list | tuple) else value

    def kr_operand(self, value: Any) -> Any:
        if isinstance(value, list | tuple | dict):
            weigh(value)
        elif isinstance(value, str) and len(value) > 64:  # `x in text` scans it
            _read(value)
        return value

    # -- Jinja's sandbox hooks ---------------------------------------------------------------

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        meter = ACTIVE.get()
        if meter is not None:
            meter.tick()
        if isinstance(left, Undefined) or isinstance(right, Undefined):
            return self.binop_table[operator](left, right)  # raises the undefined error
        if operator == "+":
            _check_plus(left, right)
        elif operator == "*":
            _check_times(left, right)
        elif operator == "%" and isinstance(left, str):
            check_format(left, format_values(right), "%")
        elif not (isinstance(left, _NUMBER) and isinstance(right, _NUMBER)):
            raise TemplateRefused(f"cannot {_VERBS[operator]} {kind(left)} and {kind(right)}: numbers only")
        elif _huge_power(operator, left, right):
            raise TemplateRefused(f"the power is too large a number (over {MAX_INT_BITS} bits)")
        result = self.binop_table[operator](left, right)
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise TemplateRefused(f"the result of {operator} is too large a number (over {MAX_INT_BITS} bits)")
        if meter is not None and isinstance(result, str | list | tuple):
            meter.spend_chars(len(result))
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        meter = ACTIVE.get()
        is_macro = isinstance(__obj, Macro)
        if meter is not None:
            meter.tick(MACRO_STEPS if is_macro else 1)
        if not __self.is_safe_callable(__obj):
            raise TemplateRefused("that call is not allowed in a template")
        check_args((*args, *kwargs.values()))
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and isinstance(__obj, types.BuiltinMethodType):
            args = _check_str_method(owner, __obj.__name__, args, kwargs)
            _read(owner)  # every text method reads (or copies) the whole text
        if not is_macro or meter is None:
            return __context.call(__obj, *args, **kwargs)
        meter.depth += 1
        try:
            if meter.depth > MAX_MACRO_DEPTH:
                raise TemplateRefused(f"macros call each other more than {MAX_MACRO_DEPTH} deep")
            return __context.call(__obj, *args, **kwargs)
        finally:
            meter.depth -= 1

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, list | tuple | dict):
            weigh(argument)
        value = super().getitem(obj, argument)
        if isinstance(argument, slice) and isinstance(value, str | list | tuple):
            _read(value)  # a slice is a copy
        return value

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        message = f"access to {attribute!r} is not allowed in a template"
        return self.undefined(message, name=attribute, obj=obj, exc=TemplateRefused)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        if value.__name__ == "format_map":
            raise TemplateRefused("format_map is not available in templates (use format)")
        fmt = str(value.__self__)
        if BIG_WIDTH.search(fmt):
            raise TemplateRefused("a format width that large is not allowed in a template")

        def bounded(*args: Any, **kwargs: Any) -> str:
            check_args((*args, *kwargs.values()))
            check_format(fmt, [*args, *kwargs.values()], "format")
            return str(_read(wrapped(*args, **kwargs)))

        return bounded


def _huge_power(operator: str, left: Any, right: Any) -> bool:
    if operator != "**" or not (isinstance(left, int) and isinstance(right, int)) or abs(left) < 2:
        return False
    return bool(right * abs(left).bit_length() > MAX_INT_BITS)


def _check_plus(left: Any, right: Any) -> None:
    if isinstance(left, _NUMBER) and isinstance(right, _NUMBER):
        return
    for kinds in (str, list, tuple):
        if isinstance(left, kinds) and isinstance(right, kinds):
            if len(left) + len(right) > MAX_SIZE:
                raise too_big("+", len(left) + len(right))
            return
    hint = " (use ~ to join text)" if isinstance(left, str) or isinstance(right, str) else ""
    raise TemplateRefused(f"cannot add {kind(left)} and {kind(right)}{hint}")


def _check_times(left: Any, right: Any) -> None:
    if isinstance(left, _NUMBER) and isinstance(right, _NUMBER):
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateRefused(f"the product is too large a number (over {MAX_INT_BITS} bits)")
        return
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int) and not isinstance(times, bool):
            if len(seq) * times > MAX_SIZE:
                raise too_big("*", len(seq) * times)
            return
    raise TemplateRefused(f"cannot multiply {kind(left)} and {kind(right)}")


def _read(value: Any) -> Any:
    """Charge the characters (or items) an operation reads or copies; returns ``value``."""
    meter = ACTIVE.get()
    if meter is not None:
        meter.spend_chars(len(value))
    return value


_STR_METHODS_REFUSED = frozenset({"translate", "maketrans", "encode"})


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Predict what a text method builds before it builds it; returns the args (``join``'s listed)."""
    if name in _STR_METHODS_REFUSED:
        raise TemplateRefused(f"the text method {name} is not available in templates")
    size = len(text)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else kwargs.get("count")
        size = replace_size(text, args[0], args[1], count if isinstance(count, int) else None)
    elif name == "join" and args:
        items = list(counted(args[0]))
        size = len(text) * max(len(items) - 1, 0) + sum(len(x) for x in items if isinstance(x, str))
        args = (items, *args[1:])
    elif name == "expandtabs":
        width = args[0] if args and isinstance(args[0], int) else kwargs.get("tabsize", 8)
        size = len(text) + text.count("\t") * max(int(width), 0)
    if size > MAX_SIZE:
        raise too_big(name, size)
    return args


# -- filters and tests -----------------------------------------------------------------------


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 2 if hasattr(func, "jinja_pass_arg") else 1  # the environment/context comes first
    text_input = name in _TEXT_FILTERS
    itemwise = name in _ITEMWISE

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        value = args[skip - 1] if len(args) >= skip else None
        extra = args[skip:]
        meter = ACTIVE.get()
        if meter is not None:
            meter.tick(1 + (len(value) if itemwise and isinstance(value, Sized) else 0))
        if text_input:  # the value and every argument end up in the text: no reprs
            if not isinstance(value, Undefined):
                text_of(value, f"the value given to |{name}")
            if name != "format":  # its arguments are checked with the format string
                for arg in (*extra, *kwargs.values()):
                    if arg is not None and not isinstance(arg, Undefined):
                        text_of(arg, f"an argument of |{name}")
        check_args((*extra, *kwargs.values()))
        size_check = _FILTER_SIZES.get(name)
        if size_check is not None and isinstance(value, str):
            size = size_check(value, extra, kwargs)
            if size > MAX_SIZE:
                raise too_big(f"|{name}", size)
        if name == "join":  # items as checked text, the attribute already looked up
            args = (*args[: skip - 1], _join_items(args[0], value, extra, kwargs), *extra[:1])
            kwargs.pop("attribute", None)
        elif name in ("tojson", "sort", "unique", "dictsort", "groupby", "min", "max", "sum"):
            weigh(value, text=name == "tojson")
        if isinstance(value, str):
            _read(value)
        if name in ("int", "float") and isinstance(value, str) and len(value) > _MAX_NUMBER_TEXT:
            raise TemplateRefused(f"|{name}: text of {len(value):,} characters is too long for a number")
        result = func(*args, **kwargs)
        if isinstance(result, str):
            if len(result) > MAX_SIZE:
                raise too_big(f"|{name}", len(result))
            if meter is not None:
                meter.spend_chars(len(result))
        elif isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise TemplateRefused(f"|{name} gives too large a number (over {MAX_INT_BITS} bits)")
        return result

    return guarded


def _join_items(env_or_ctx: Any, value: Any, extra: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """``|join``'s items as text (the attribute looked up first), refused if the result is too big."""
    attribute = kwargs.get("attribute", extra[1] if len(extra) > 1 else None)
    items = list(counted(value))
    if attribute is not None:
        environment = getattr(env_or_ctx, "environment", env_or_ctx)
        getter = make_attrgetter(environment, attribute)
        items = [getter(item) for item in items]
    texts = [text_of(item, "an item given to |join") for item in items]
    sep = text_of(kwargs.get("d", extra[0] if extra else ""), "the separator given to |join")
    size = sum(len(t) for t in texts) + len(sep) * max(len(texts) - 1, 0)
    if size > MAX_SIZE:
        raise too_big("|join", size)
    return texts


def _indent_size(s: str, extra: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    width = kwargs.get("width", extra[0] if extra else 4)
    return len(s) + (s.count("\n") + 1) * (len(width) if isinstance(width, str) else max(int(width), 0))


def _wordwrap_size(s: str, extra: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    width = kwargs.get("width", extra[0] if extra else 79)
    wrapstring = kwargs.get("wrapstring", extra[2] if len(extra) > 2 else None) or "\n"
    lines = min(len(s), len(s) // max(int(width), 1) + s.count(" ") + s.count("\n") + 1)
    return len(s) + lines * len(str(wrapstring))


def _replace_size(s: str, extra: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    old = kwargs.get("old", extra[0] if extra else "")
    new = kwargs.get("new", extra[1] if len(extra) > 1 else "")
    count = kwargs.get("count", extra[2] if len(extra) > 2 else None)
    return replace_size(s, str(old), str(new), count if isinstance(count, int) else None)


def _format_size(s: str, extra: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    check_format(s, [*extra, *kwargs.values()], "|format")
    return len(s)


_FILTER_SIZES: dict[str, Callable[[str, tuple[Any, ...], dict[str, Any]], int]] = {
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "replace": _replace_size,
    "format": _format_size,
}


def _guard_test(func: Any) -> Callable[..., Any]:
    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        meter = ACTIVE.get()
        if meter is not None:
            meter.tick()
        check_args((*args, *kwargs.values()))
        return func(*args, **kwargs)

    return guarded


@functools.cache
def environment() -> Sandbox:
    # Only Jinja's own filters, tests and globals, minus DROPPED; nothing reaches the file system
    # or the environment variables (there is no loader: include/import/extends fail).
    env = Sandbox(
        undefined=FriendlyUndefined, autoescape=False, keep_trailing_newline=False, cache_size=0, optimized=False
    )
    for name in DROPPED:
        env.globals.pop(name, None)
        env.filters.pop(name, None)
        env.tests.pop(name, None)
    env.filters = {name: _guard_filter(name, func) for name, func in env.filters.items()}
    env.tests = {name: _guard_test(test) for name, test in env.tests.items()}
    return env
