"""The model catalog: each model's inputs, durations, image limits, and where it is offered, as data.

The built-in catalog (``data/models.yaml``) and the models a project declares under ``models:``
are one format, read by one loader (:func:`parse_models`) after one JSON Schema
(``$defs/models`` of the project schema): a project model is a catalog entry. The generic
rules (``rules.py``) and the wire body (``offers.wire_params``) are driven by the field specs
and the providers' offers, so a new Kling endpoint (or provider) needs data, not code.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from kling_render.catalog.offers import (
    LOCAL_FORM,
    PAID_PROVIDERS,
    Offer,
    WireField,
    offer_problems,
    parse_offer,
    wire_params,
)
from kling_render.catalog.prices import (
    MAX_PRICE,
    PRICE_KEYS,
    Price,
    missing_rate,
    parse_fraction,
    parse_price,
    price_problems,
    rate_problems,
    shot_cost,
    still_cost,
    tier_of,
    usd,
)

__all__ = [
    "MAX_PRICE",
    "PAID_PROVIDERS",
    "PRICE_KEYS",
    "Duration",
    "FieldSpec",
    "Model",
    "Offer",
    "Price",
    "WireField",
    "canonical_model_id",
    "find_model",
    "load_catalog",
    "missing_rate",
    "parse_fraction",
    "parse_models",
    "parse_price",
    "shot_cost",
    "still_cost",
    "tier_of",
    "usd",
    "wire_params",
]

KWAIVGI_PREFIX = "kwaivgi/"
IMAGE_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_IMAGE_FORMATS = ("jpg", "jpeg", "png")
# Shot keys that are not model inputs (they steer the cut or the cache key): no field may take these names.
NON_WIRE_KEYS = frozenset({"id", "model", "take", "takes", "pick", "trim", "transition", "provider"})
# What a model makes: a clip (a shot's model) or an image (a still's model, priced per image).
OUTPUTS = ("video", "image")
# Shot keys with a fixed meaning and type in the project schema: a model that declares one of these
# names must give it this type, so the same key means the same thing for every model.
SHOT_KEY_TYPES = {
    "prompt": "text",
    "negative_prompt": "text",
    "multi_prompt": "multi_prompt",
    "image": "image",
    "end_image": "image",
    "images": "images",
    "video": "video",
    "videos": "videos",
    "audios": "audios",
    "keyframes": "images",
    "resolution": "string",
    "dynamic_range": "string",
    "sound": "boolean",
    "keep_original_sound": "boolean",
    "aspect_ratio": "string",
    "cfg_scale": "number",
    "element_list": "list",
    "shot_type": "string",
}
# Types with one meaning in the rules: only the fields of these names may have them.
SPECIAL_TYPES = {
    "multi_prompt": ("multi_prompt",),
    "images": ("images", "keyframes"),
    "video": ("video",),
    "videos": ("videos",),
    "audios": ("audios",),
}
MEDIA_TYPES = frozenset({"image", "images", "video", "videos", "audios"})
LIST_MEDIA_TYPES = frozenset({"images", "videos", "audios"})
TIMED_MEDIA_TYPES = frozenset({"video", "videos", "audios"})  # media with a length (min/max_seconds)
_NO_DEFAULT = object()

Problem = tuple[tuple[str | int, ...], str]  # (path below the model, message)


@dataclass(frozen=True)
class FieldSpec:
    """One input a model takes: the shot key ``name``, sent as ``wire``."""

    name: str
    type: str
    wire: str
    default: Any = _NO_DEFAULT
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    max_items: int | None = None
    max_items_with_video: int | None = None
    only_with: str | None = None  # sent only when this field is given (dropped otherwise)
    min_seconds: float | None = None  # media with a length: each file at least this long
    max_seconds: float | None = None
    max_total_seconds: float | None = None  # a list of media: their lengths together

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@dataclass(frozen=True)
class Group:
    """Fields that go together (one_of, any_of) or not (conflicts), with an optional message."""

    fields: tuple[str, ...]
    message: str | None = None

    def text(self, model_id: str) -> str | None:
        return self.message.replace("{model}", model_id) if self.message else None


@dataclass(frozen=True)
class FileLimit:
    """At most ``max`` files in these fields together."""

    fields: tuple[str, ...]
    max: int


@dataclass(frozen=True)
class Need:
    """When field ``when`` is given, each field of ``then`` must have one of its values."""

    when: str
    then: tuple[tuple[str, tuple[Any, ...]], ...]
    message: str | None = None


@dataclass(frozen=True)
class Duration:
    min: int
    max: int
    default: int
    values: tuple[int, ...] | None = None  # the only durations allowed, if listed
    without_end_image: tuple[int, ...] | None = None  # the only durations allowed without an end image

    def rule(self) -> str:
        text = f"{self.min}–{self.max}"
        if self.values:
            text = " or ".join(str(d) for d in self.values)
        if self.without_end_image:
            only = " or ".join(str(d) for d in self.without_end_image)
            text += f"; {only} only without end_image"
        return text


@dataclass(frozen=True)
class ImageLimits:
    formats: tuple[str, ...] = DEFAULT_IMAGE_FORMATS
    min_side: int | None = None
    max_aspect: float | None = None


@dataclass(frozen=True)
class Model:
    id: str
    title: str
    endpoint: str  # WaveSpeed model path: POST {base}/api/v3/<endpoint>
    fields: tuple[FieldSpec, ...]
    duration: Duration | None  # None for an image model (output: image)
    required: tuple[str, ...] = ()
    one_of: tuple[Group, ...] = ()
    any_of: tuple[Group, ...] = ()
    conflicts: tuple[Group, ...] = ()
    image_limits: ImageLimits = ImageLimits()
    builtin: bool = True
    offers: tuple[Offer, ...] = ()  # by provider: WaveSpeed's (the top level) first
    max_files: tuple[FileLimit, ...] = ()
    needs: tuple[Need, ...] = ()
    references: tuple[tuple[str, str], ...] = ()  # prompt tag (Image) -> the field its files are in
    extends: str | None = None  # the input video the output continues (only the new part is kept)
    output: str = "video"  # one of OUTPUTS: "image" models make stills, "video" models shots

    @property
    def price(self) -> Price | None:
        """WaveSpeed's price (the catalog's first provider); other providers': ``offer(p).price``."""
        offer = self.offer("wavespeed")
        return offer.price if offer is not None else None

    def offer(self, provider: str) -> Offer | None:
        """How ``provider`` takes the model, or None when it does not offer it. The free ``local``
        provider renders every model, reading WaveSpeed's form (its keys predate other providers)."""
        for offer in self.offers:
            if offer.provider == provider:
                return offer
        if provider == "local":
            return self.offer(LOCAL_FORM) or (self.offers[0] if self.offers else None)
        return None

    @property
    def providers(self) -> tuple[str, ...]:
        """The paid providers that offer the model, in the catalog's order."""
        return tuple(o.provider for o in self.offers)

    @property
    def makes_image(self) -> bool:
        return self.output == "image"

    @property
    def clip_duration(self) -> Duration:
        """The duration rules of a video model (an image model has none: a bug to ask)."""
        if self.duration is None:
            raise TypeError(f"{self.id} is an image model: it has no duration")
        return self.duration

    @functools.cached_property
    def _by_name(self) -> dict[str, FieldSpec]:
        return {spec.name: spec for spec in self.fields}

    def field(self, name: str) -> FieldSpec | None:
        return self._by_name.get(name)

    @functools.cached_property
    def field_names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    def takes(self, name: str) -> bool:
        return (name == "duration" and not self.makes_image) or self.field(name) is not None

    @property
    def takes_sound(self) -> bool:
        return self.field("sound") is not None

    # The image limits by their former names (media.py reads these).
    @property
    def image_formats(self) -> tuple[str, ...]:
        return self.image_limits.formats

    @property
    def image_min_side(self) -> int | None:
        return self.image_limits.min_side

    @property
    def image_max_aspect(self) -> float | None:
        return self.image_limits.max_aspect


def canonical_model_id(model_id: str) -> str:
    """Strip the optional ``kwaivgi/`` prefix."""
    return model_id[len(KWAIVGI_PREFIX) :] if model_id.startswith(KWAIVGI_PREFIX) else model_id


# -- loading -----------------------------------------------------------------------------------


def parse_models(
    raw: Mapping[str, Any], *, builtin: bool, source: str, reserved: frozenset[str] = frozenset()
) -> tuple[dict[str, Model], list[tuple[str, tuple[str | int, ...], str]]]:
    """Models from a schema-valid ``models:`` mapping, and the problems the schema cannot see.

    Each problem is ``(model id, path below the model, message)``; a model with a problem is
    left out. ``reserved`` holds ids that may not be declared (the built-in ones, for a project).
    """
    models: dict[str, Model] = {}
    problems: list[tuple[str, tuple[str | int, ...], str]] = []
    for model_id, spec in raw.items():
        found = list(_model_problems(model_id, spec, reserved))
        if found:
            problems.extend((model_id, path, message) for path, message in found)
            continue
        models[model_id] = _model(model_id, spec, builtin=builtin, source=source)
    return models, problems


@functools.cache
def load_catalog() -> dict[str, Model]:
    """Every built-in model, by canonical id. The file passes the same checks as a project's ``models:``."""
    from kling_render.errors import ProjectError
    from kling_render.project.document import parse_document
    from kling_render.project.schema import catalog_issues

    name = "kling_render/data/models.yaml"
    text = resources.files("kling_render").joinpath("data/models.yaml").read_text(encoding="utf-8")
    doc = parse_document(text, name)
    issues = catalog_issues(doc)
    if issues:  # a packaging bug: the tests keep the shipped file valid
        raise ProjectError(issues)
    models, problems = parse_models(doc.data["models"], builtin=True, source=name)
    if problems:
        raise ProjectError([doc.issue(("models", mid, *path), msg) for mid, path, msg in problems])
    return models


def find_model(model_id: str, declared: Mapping[str, Model] | None = None) -> Model | None:
    """A model by id (a ``kwaivgi/`` prefix is accepted): the project's declared ones, then the built-ins."""
    canonical = canonical_model_id(model_id)
    if declared and canonical in declared:
        return declared[canonical]
    return load_catalog().get(canonical)


def _group(raw: Mapping[str, Any]) -> Group:
    return Group(tuple(raw["fields"]), raw.get("message"))


def _model(model_id: str, spec: Mapping[str, Any], *, builtin: bool, source: str) -> Model:
    fields = []
    for name, f in spec["fields"].items():
        fields.append(
            FieldSpec(
                name=name,
                type=f["type"],
                wire=f.get("wire", name),
                default=f.get("default", _NO_DEFAULT),
                minimum=f.get("min"),
                maximum=f.get("max"),
                enum=tuple(f["enum"]) if "enum" in f else None,
                max_items=f.get("max_items"),
                max_items_with_video=f.get("max_items_with_video"),
                only_with=f.get("only_with"),
                min_seconds=f.get("min_seconds"),
                max_seconds=f.get("max_seconds"),
                max_total_seconds=f.get("max_total_seconds"),
            )
        )
    d = spec.get("duration")
    limits = spec.get("image_limits", {})
    price = None
    if "price" in spec:
        raw = spec["price"]
        price = parse_price(
            raw, base=None, date=str(raw.get("date", "")), source=str(raw.get("source", "") or source)
        )
    # WaveSpeed's offer is the top level: its endpoint, the fields' wire names, its price.
    wavespeed = Offer(
        "wavespeed",
        spec["endpoint"],
        (*(WireField(f.name, f.wire) for f in fields), *((WireField("duration", "duration"),) if d else ())),
        price,
    )
    others = tuple(
        parse_offer(name, raw, source=source) for name, raw in (spec.get("providers") or {}).items()
    )
    return Model(
        id=model_id,
        title=str(spec.get("title", model_id)),
        endpoint=spec["endpoint"],
        fields=tuple(fields),
        duration=None
        if d is None
        else Duration(
            min=d["min"],
            max=d["max"],
            default=d["default"],
            values=tuple(d["values"]) if "values" in d else None,
            without_end_image=tuple(d["without_end_image"]) if "without_end_image" in d else None,
        ),
        required=tuple(spec.get("required", ())),
        one_of=tuple(_group(g) for g in spec.get("one_of", ())),
        any_of=tuple(_group(g) for g in spec.get("any_of", ())),
        conflicts=tuple(_group(g) for g in spec.get("conflicts", ())),
        image_limits=ImageLimits(
            formats=tuple(limits.get("formats", DEFAULT_IMAGE_FORMATS)),
            min_side=limits.get("min_side"),
            max_aspect=limits.get("max_aspect"),
        ),
        builtin=builtin,
        offers=(wavespeed, *others),
        max_files=tuple(FileLimit(tuple(g["fields"]), int(g["max"])) for g in spec.get("max_files", ())),
        needs=tuple(
            Need(n["if"], tuple((k, tuple(v)) for k, v in n["then"].items()), n.get("message"))
            for n in spec.get("needs", ())
        ),
        references=tuple((str(tag), str(name)) for tag, name in (spec.get("references") or {}).items()),
        extends=spec.get("extends"),
        output=str(spec.get("output", "video")),
    )


def _model_problems(model_id: str, spec: Mapping[str, Any], reserved: frozenset[str]) -> Iterator[Problem]:
    """What the JSON Schema cannot check: references between fields, defaults within limits, numbers."""
    if canonical_model_id(model_id) in reserved:
        yield (), (
            f"'{model_id}' is a built-in model: give yours another id "
            "(use pricing: to change a built-in model's price)"
        )
        return
    fields: Mapping[str, Any] = spec["fields"]
    wires: dict[str, str] = {}
    for name, f in fields.items():
        yield from _field_problems(name, f)
        wire = f.get("wire", name)
        if wire == "duration":
            yield ("fields", name, "wire"), "'duration' is sent from the model's duration: block"
        elif wire in wires:
            yield ("fields", name, "wire"), f"'{wire}' is already sent by field '{wires[wire]}'"
        wires[wire] = name
        other = f.get("only_with")
        if other is not None and (other == name or other not in fields):
            yield ("fields", name, "only_with"), f"'{other}' is not another field of this model"

    def known(path: tuple[str | int, ...], name: str) -> Iterator[Problem]:
        if name not in fields:
            near = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"fields: {', '.join(fields)}"
            yield path, f"'{name}' is not a field of this model ({hint})"

    for i, name in enumerate(spec.get("required", ())):
        yield from known(("required", i), name)
    for kind in ("one_of", "any_of", "conflicts", "max_files"):
        for i, group in enumerate(spec.get(kind, ())):
            for j, name in enumerate(group["fields"]):
                yield from known((kind, i, "fields", j), name)
    for i, need in enumerate(spec.get("needs", ())):
        yield from known(("needs", i, "if"), need["if"])
        for name, values in need["then"].items():
            yield from known(("needs", i, "then", name), name)
            allowed = fields.get(name, {}).get("enum")
            for j, value in enumerate(values):
                if allowed is not None and value not in allowed:
                    yield ("needs", i, "then", name, j), f"{value!r} is not one of {', '.join(map(str, allowed))}"
    for tag, name in (spec.get("references") or {}).items():
        yield from known(("references", tag), name)
        if name in fields and fields[name]["type"] not in MEDIA_TYPES:
            yield ("references", tag), f"'{name}' holds no files"
    if "extends" in spec:
        name = spec["extends"]
        yield from known(("extends",), name)
        if name in fields and fields[name]["type"] != "video":
            yield ("extends",), f"'{name}' is not a video field"
    image = spec.get("output", "video") == "image"
    if image:
        yield from _image_model_problems(spec)
    elif "duration" not in spec:
        yield (), "missing required key 'duration' (a video model's durations; an image model says output: image)"
    else:
        yield from _duration_problems(spec["duration"], has_end_image="end_image" in fields)
    yield from _price_entry_problems(("price",), spec.get("price"), image=image)
    for provider, raw in (spec.get("providers") or {}).items():
        yield from offer_problems(provider, raw, fields, image=image)


def _price_entry_problems(
    where: tuple[str | int, ...], raw: Mapping[str, Any] | None, *, image: bool
) -> Iterator[Problem]:
    """A model's ``price:``: a rate that fits what the model makes, valid numbers."""
    if raw is None:
        return
    fit = rate_problems(raw, image=image)
    for path, message in fit:
        yield (*where, *path), message
    for path, message in price_problems(raw):
        yield (*where, *path), message
    if not fit and not price_problems(raw):
        try:
            parse_price(raw, base=None, date="", source="")
        except (ValueError, ZeroDivisionError) as exc:
            yield where, f"invalid price: {exc}"


def _image_model_problems(spec: Mapping[str, Any]) -> Iterator[Problem]:
    """An image model makes one picture: no duration, no sound, no video inputs."""
    if "duration" in spec:
        yield ("duration",), "an image model (output: image) has no duration"
    for name, f in spec["fields"].items():
        if f.get("type") in ("video", "videos", "audios", "multi_prompt") or name == "sound":
            yield ("fields", name), f"'{name}' is a video input; an image model (output: image) cannot take it"
    if "extends" in spec:
        yield ("extends",), "an image model (output: image) extends no clip"


def _field_problems(name: str, f: Mapping[str, Any]) -> Iterator[Problem]:
    kind = f["type"]
    where = ("fields", name)
    if name in NON_WIRE_KEYS or name == "duration":
        what = "the model's duration: block" if name == "duration" else "a shot setting, not a model input"
        yield where, f"'{name}' is {what}"
        return
    fixed = SHOT_KEY_TYPES.get(name)
    if fixed is not None and kind != fixed:
        yield (*where, "type"), f"'{name}' has type {fixed} in every shot; declare it as type {fixed}"
        return
    for special, owners in SPECIAL_TYPES.items():
        if kind == special and name not in owners:
            named = " or ".join(f"'{o}'" for o in owners)
            yield (*where, "type"), f"type {special} is only for the field named {named}"
            return
    numeric = kind in ("integer", "number")
    if ("min" in f or "max" in f) and not numeric:
        yield where, f"min/max apply to integer and number fields, not {kind}"
    if "enum" in f and kind not in ("string", "integer", "number"):
        yield (*where, "enum"), f"enum applies to string, integer and number fields, not {kind}"
    if ("max_items" in f or "max_items_with_video" in f) and kind not in (*LIST_MEDIA_TYPES, "list"):
        yield where, f"max_items applies to list fields, not {kind}"
    if any(k in f for k in ("min_seconds", "max_seconds", "max_total_seconds")) and kind not in TIMED_MEDIA_TYPES:
        yield where, f"min_seconds/max_seconds apply to video and audio fields, not {kind}"
    if "max_total_seconds" in f and kind not in LIST_MEDIA_TYPES:
        yield where, "max_total_seconds applies to a list of videos or audios"
    for bound in ("min", "max"):
        if bound in f and not _has_type(f[bound], "number"):
            yield (*where, bound), f"{f[bound]} is not a finite number"
            return
    if "min" in f and "max" in f and f["min"] > f["max"]:
        yield (*where, "min"), f"min {f['min']} is above max {f['max']}"
    if "enum" in f:
        for i, value in enumerate(f["enum"]):
            if not _has_type(value, kind):
                yield (*where, "enum", i), f"{value!r} is not a{'n' if kind[0] in 'aeiou' else ''} {kind}"
    if "default" in f:
        yield from _default_problems(where, f, kind)


def _default_problems(where: tuple[str | int, ...], f: Mapping[str, Any], kind: str) -> Iterator[Problem]:
    value = f["default"]
    path = (*where, "default")
    if kind in MEDIA_TYPES or kind in ("text", "multi_prompt"):
        yield path, f"a {kind} field takes no default (defaults are sent with every shot)"
    elif not _has_type(value, kind):
        yield path, f"{value!r} is not a{'n' if kind[0] in 'aeiou' else ''} {kind}"
    elif "enum" in f and value not in f["enum"]:
        yield path, f"{value!r} is not one of {', '.join(str(v) for v in f['enum'])}"
    elif kind in ("integer", "number") and (
        ("min" in f and value < f["min"]) or ("max" in f and value > f["max"])
    ):
        yield path, f"{value} is outside {f.get('min', '')}–{f.get('max', '')}"


def _has_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    return {
        "string": isinstance(value, str),
        "integer": isinstance(value, int),
        "number": isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)),
        "boolean": False,
        "list": isinstance(value, list),
    }.get(kind, False)


def _duration_problems(d: Mapping[str, Any], *, has_end_image: bool) -> Iterator[Problem]:
    low, high, default = d["min"], d["max"], d["default"]
    if low > high:
        yield ("duration", "min"), f"min {low} is above max {high}"
        return
    if not low <= default <= high:
        yield ("duration", "default"), f"{default} is outside {low}–{high}"
    for key in ("values", "without_end_image"):
        for i, value in enumerate(d.get(key, ())):
            if not low <= value <= high:
                yield ("duration", key, i), f"{value} is outside {low}–{high}"
    if "values" in d and default not in d["values"]:
        yield ("duration", "default"), f"{default} is not one of the allowed values"
    if "without_end_image" in d and not has_end_image:
        yield ("duration", "without_end_image"), "the model has no end_image field"
