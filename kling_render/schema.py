"""JSON Schema validation of a project document -> located, readable Issues."""

from __future__ import annotations

import datetime
import difflib
import functools
import json
import math
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from kling_render.document import Document, format_path
from kling_render.errors import Issue

# Patterns end in (?![\s\S]) rather than $: jsonschema uses re.search, where $ also matches before a
# trailing newline ("intro\n" would pass); the lookahead means "end of text" in Python and ECMA-262.
_END = "(?![\\s\\S])"


def schema_text() -> str:
    """The published JSON Schema (draft 2020-12), as shipped in the package."""
    return resources.files("kling_render").joinpath("data/project.schema.json").read_text(encoding="utf-8")


def _finite_number(checker: Any, instance: object) -> bool:
    """JSON has no NaN or infinity; YAML's .nan and .inf are not numbers here (they would switch
    off range checks, since every comparison with NaN is false)."""
    if isinstance(instance, float):
        return math.isfinite(instance)
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.cache
def _validator() -> Draft202012Validator:
    schema = json.loads(schema_text())
    Draft202012Validator.check_schema(schema)
    checker = Draft202012Validator.TYPE_CHECKER.redefine("number", _finite_number)
    cls = validators.extend(Draft202012Validator, type_checker=checker)  # type: ignore[no-untyped-call]
    return cls(schema)  # type: ignore[no-any-return]


def schema_issues(doc: Document) -> list[Issue]:
    """Every schema violation in ``doc``, one Issue each, with file:line and document path; and
    every number that is not finite, wherever it is (untyped lists such as element_list too)."""
    issues: list[Issue] = []
    for error in _validator().iter_errors(doc.data):
        issues.extend(_to_issues(doc, error))
    if doc.non_finite:
        reported = {i.path for i in issues}
        for path, value in doc.non_finite:
            if format_path(path) not in reported:
                issues.append(doc.issue(path, f"{_describe(value)} is not a finite number"))
    return issues


def _to_issues(doc: Document, error: ValidationError) -> list[Issue]:
    path = list(error.absolute_path)
    validator = error.validator
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        schema: Any = error.schema
        allowed = sorted(schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return [doc.issue([*path, str(k)], _unknown_key(str(k), allowed)) for k in extra]
    if validator == "propertyNames":
        return [doc.issue(path, f"invalid key: {_short(error.message)}")]
    return [doc.issue(path, _message(error))]


def _unknown_key(key: str, allowed: list[str]) -> str:
    near = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else f" (allowed: {', '.join(allowed)})"
    return f"unknown key '{key}'{hint}"


_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "empty",
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "empty (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()})"
    return "a value of another kind"


def _message(error: ValidationError) -> str:
    v: Any = error.validator
    inst: Any = error.instance
    arg: Any = error.validator_value
    if v == "required":
        missing = [k for k in arg if isinstance(inst, dict) and k not in inst]
        return f"missing required key '{missing[0]}'" if missing else _short(error.message)
    if isinstance(inst, float) and not math.isfinite(inst):  # whatever the rule, this is the problem
        return f"{_describe(inst)} is not a finite number"
    if v == "type":
        wanted = arg if isinstance(arg, list) else [arg]
        return (
            f"expected {' or '.join(_TYPE_NAMES.get(str(w), str(w)) for w in wanted)}, got {_describe(inst)}"
        )
    if v == "enum":
        options = [o for o in arg if not str(o).startswith("kwaivgi/")]
        if len(options) > 12:
            near = difflib.get_close_matches(str(inst), [str(o) for o in options], n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            return f"{_describe(inst)} is not allowed{hint}"
        return f"{_describe(inst)} is not one of: {', '.join(str(o) for o in options)}"
    if v == "const":
        return f"must be {arg!r}, got {_describe(inst)}"
    if v == "pattern":
        shown = str(arg).removeprefix("^").removesuffix(_END)
        if isinstance(inst, str) and ("\n" in inst or "\r" in inst):
            return f"{_describe(inst)} contains a line break (expected {shown})"
        return f"{_describe(inst)} does not match {shown}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "more than",
            "exclusiveMaximum": "less than",
        }[str(v)]
        return f"{_describe(inst)} must be {words} {arg}"
    if v == "minItems":
        return f"needs at least {arg} item(s)"
    if v == "minLength":
        return "must not be empty"
    if v == "multipleOf":
        return f"{_describe(inst)} must be a multiple of {arg}"
    if v == "anyOf":
        return f'{_describe(inst)} is not a valid value (expected a number or a fraction like "4/3")'
    return _short(error.message)


def _short(message: str) -> str:
    return message.splitlines()[0][:200]
