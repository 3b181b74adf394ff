"""JSON Schema validation of a project document -> located, readable Issues."""

from __future__ import annotations

import copy
import datetime
import functools
import json
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from kling_render.errors import Issue
from kling_render.project.document import Document, format_path
from kling_render.suggest import did_you_mean, with_hint

# Patterns end in (?![\s\S]) rather than $: jsonschema uses re.search, where $ also matches before a
# trailing newline ("intro\n" would pass); the lookahead means "end of text" in Python and ECMA-262.
_END = "(?![\\s\\S])"


def schema_text() -> str:
    """The published JSON Schema (draft 2020-12), as shipped in the package."""
    return resources.files("kling_render").joinpath("data/project.schema.json").read_text(encoding="utf-8")


def is_finite_number(value: Any) -> bool:
    """A JSON number: YAML also has .nan and .inf (and integers too big for a float), which
    compare false with every bound, so `minimum: 0` alone let `budget.max_usd: .nan` through
    and switched the budget off."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too big for a float
        return False


def _is_number(checker: Any, value: Any) -> bool:
    return is_finite_number(value)


def _non_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not is_finite_number(value)


# The JSON meaning of "number" (finite), for every numeric key of the schema at once.
_FiniteValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("number", _is_number)
)


@functools.cache
def _schema() -> dict[str, Any]:
    # Not checked against the draft's metaschema here: that costs every command about 0.4 s and
    # the shipped file cannot change at run time; tests/unit/test_catalog.py checks it (and a copy
    # with declared models added).
    schema: dict[str, Any] = json.loads(schema_text())
    return schema


def _finite(schema: dict[str, Any]) -> Draft202012Validator:
    return _FiniteValidator(schema)  # type: ignore[no-any-return]


@functools.cache
def _validator() -> Draft202012Validator:
    return _finite(_schema())


@functools.cache
def _catalog_validator() -> Draft202012Validator:
    return _finite({"$defs": _schema()["$defs"], "$ref": "#/$defs/catalog"})


def schema_issues(
    doc: Document,
    declared: Mapping[str, Mapping[str, str]] | None = None,
    image_models: frozenset[str] = frozenset(),
) -> list[Issue]:
    """Every schema violation in ``doc``, one Issue each, with file:line and document path.

    ``declared`` maps the ids of the models a project declares to their field types: shots (or,
    for the ids in ``image_models``, stills) may then name those models and give their fields
    (see :func:`_with_models`).
    """
    validator = _validator() if not declared else _finite(_with_models(_schema(), declared, image_models))
    issues: list[Issue] = []
    for error in validator.iter_errors(doc.data):
        issues.extend(_to_issues(doc, error))
    if doc.non_finite:
        reported = {i.path for i in issues}
        for path, value in doc.non_finite:
            if format_path(path) not in reported:
                issues.append(doc.issue(path, f"{_describe(value)} is not a finite number"))
    return issues


@functools.cache
def _model_validator() -> Draft202012Validator:
    return _finite({"$defs": _schema()["$defs"], "$ref": "#/$defs/model"})


def model_id_valid(model_id: Any) -> bool:
    """Whether ``model_id`` is a valid id for a declared model (``$defs/models`` propertyNames)."""
    names = Draft202012Validator(_schema()["$defs"]["models"]["propertyNames"])
    return isinstance(model_id, str) and bool(names.is_valid(model_id))


def model_spec_valid(spec: Any) -> bool:
    """Whether one ``models:`` entry passes ``$defs/model`` (its errors are reported with the project's)."""
    return bool(_model_validator().is_valid(spec))


def catalog_issues(doc: Document) -> list[Issue]:
    """Schema violations in the built-in catalog file: the same ``$defs/models`` as a project's ``models:``."""
    issues: list[Issue] = []
    for error in _catalog_validator().iter_errors(doc.data):
        issues.extend(_to_issues(doc, error))
    return issues


# JSON Schema of a declared field's value in a shot, by field type. Limits that differ between
# models (min/max/enum, item counts) are checked by the model rules, which know the shot's model.
_FIELD_VALUE_SCHEMAS: dict[str, dict[str, Any]] = {
    "text": {"type": "string"},
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "list": {"type": "array"},
    "image": {"$ref": "#/$defs/image_input"},
    "images": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/image_input"}},
    "video": {"$ref": "#/$defs/shot/properties/video"},
    "videos": {"$ref": "#/$defs/shot/properties/videos"},
    "audios": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
}
_DEFAULTABLE = frozenset({"string", "integer", "number", "boolean", "list"})


def _with_models(
    base: Mapping[str, Any], declared: Mapping[str, Mapping[str, str]], image_models: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The project schema with the declared models' ids and fields added where shots (video
    models) or stills (``image_models``) may use them."""
    schema = copy.deepcopy(dict(base))
    shot = schema["$defs"]["shot"]["properties"]
    still = schema["$defs"]["still"]["properties"]
    defaults = schema["properties"]["defaults"]["properties"]
    ids = sorted(declared)
    shot["model"]["enum"] = [*shot["model"]["enum"], *ids]
    pricing = schema["properties"]["pricing"]["propertyNames"]
    pricing["enum"] = [*pricing["enum"], *ids]
    for model_id, fields in declared.items():
        target = still if model_id in image_models else shot
        for name, kind in fields.items():
            if name in target or kind not in _FIELD_VALUE_SCHEMAS:
                continue  # a key of the base schema keeps its (same) type
            target[name] = dict(_FIELD_VALUE_SCHEMAS[kind])
            if kind in _DEFAULTABLE and target is shot:
                defaults[name] = dict(_FIELD_VALUE_SCHEMAS[kind])
    return schema


# anyOf schemas with a title whose failures are explained by the branch the value meant.
_IMAGE_INPUT = "image input"
_FRAME_POSITION = "frame position"
_IMAGE_FORMS = "expected a path or https URL, {still: ID}, or {from: SHOT, frame: first|last|SECONDS}"


def _any_of_issues(doc: Document, error: ValidationError) -> list[Issue] | None:
    """The issues of an image input (or a frame position) that matches none of its forms: those of
    the form the value was meant to be (a mapping with ``still`` or ``from``), else what the forms are."""
    schema: Any = error.schema
    title = schema.get("title") if isinstance(schema, dict) else None
    path = list(error.absolute_path)
    inst: Any = error.instance
    if title == _FRAME_POSITION:
        return [doc.issue(path, f"{_describe(inst)}: expected first, last or a time in seconds (at least 0)")]
    if title != _IMAGE_INPUT:
        return None
    branch = 1 if isinstance(inst, dict) and "still" in inst else 2 if isinstance(inst, dict) and "from" in inst else 0
    if branch == 0:
        return [doc.issue(path, f"{_describe(inst)} is not an image input ({_IMAGE_FORMS})")]
    issues: list[Issue] = []
    for sub in error.context or ():
        if sub.schema_path and sub.schema_path[0] == branch:
            issues.extend(_to_issues(doc, sub))
    return issues or [doc.issue(path, _IMAGE_FORMS)]


def _to_issues(doc: Document, error: ValidationError) -> list[Issue]:
    path = list(error.absolute_path)
    validator = error.validator
    if validator == "anyOf":
        explained = _any_of_issues(doc, error)
        if explained is not None:
            return explained
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        schema: Any = error.schema
        allowed = sorted(schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return [doc.issue([*path, str(k)], _unknown_key(str(k), allowed)) for k in extra]
    if validator == "propertyNames":
        return [doc.issue(path, f"invalid key: {_short(error.message)}")]
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        # A key (not a value) breaks the rule: point at the key, say what a key must look like.
        key_path = [*path, error.instance]
        if error.validator == "enum":
            options: Any = error.validator_value
            names = [str(o) for o in options if not str(o).startswith("kwaivgi/")]
            return [doc.issue(key_path, _unknown_key(error.instance, names))]
        schema_of_names: Any = error.schema
        rule = schema_of_names.get("description") if isinstance(schema_of_names, dict) else None
        return [doc.issue(key_path, f"invalid name {error.instance!r}: {rule or _message(error)}")]
    return [doc.issue(path, _message(error))]


def _unknown_key(key: str, allowed: list[str]) -> str:
    return f"unknown key '{key}' ({did_you_mean(key, allowed) or 'allowed: ' + ', '.join(allowed)})"


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
    if isinstance(value, int) and abs(value) > 10**30:
        return "a huge integer"
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
    if _non_finite(inst):  # whatever the rule, this is the problem
        what = "is too large" if isinstance(inst, int) else "is not a finite number"
        return f"{_describe(inst)} {what}" + (
            ' (expected a number or a fraction like "4/3")' if v == "anyOf" else ""
        )
    if v == "type":
        wanted = arg if isinstance(arg, list) else [arg]
        return (
            f"expected {' or '.join(_TYPE_NAMES.get(str(w), str(w)) for w in wanted)}, got {_describe(inst)}"
        )
    if v == "enum":
        options = [str(o) for o in arg if not str(o).startswith("kwaivgi/")]
        hint = did_you_mean(str(inst), options)
        if error.path and error.path[-1] == "model":  # the ids are long: a guess, or where to look
            return f"unknown model {_describe(inst)} ({hint or 'kling-render models lists them'})"
        if len(options) > 12:
            return with_hint(f"{_describe(inst)} is not allowed", hint)
        return with_hint(f"{_describe(inst)} is not one of: {', '.join(options)}", hint)
    if v == "not" and isinstance(arg, dict) and "required" in arg:
        return f"give only one of {' or '.join(arg['required'])}"
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
    if v == "anyOf" and is_finite_number(inst) and inst < 0:
        return f"{_describe(inst)} must be at least 0"
    if v == "anyOf":
        return f'{_describe(inst)} is not a valid value (expected a number or a fraction like "4/3")'
    return _short(error.message)


def _short(message: str) -> str:
    return message.splitlines()[0][:200]
