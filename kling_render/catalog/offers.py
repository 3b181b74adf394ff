"""Where a model is offered: each provider's endpoint, wire names, value forms and price.

A model id names the model; an ``Offer`` says how one provider takes it. The catalog's top-level
``endpoint``, ``wire`` names and ``price`` are WaveSpeed's offer; ``providers.<name>`` adds the
others. A shot's wire body for a provider is its inputs (by shot key) renamed and converted by
that provider's offer (:func:`wire_params`), so the same shot has one key per provider and the
WaveSpeed body (and key) is exactly what it was before other providers existed.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kling_render.catalog.prices import Price, parse_price, price_problems, rate_problems

PAID_PROVIDERS = ("wavespeed", "fal")  # the providers that offer (and price) models
# The form the free ``local`` provider reads (its animatics and keys predate other providers).
LOCAL_FORM = "wavespeed"

Problem = tuple[tuple[str | int, ...], str]  # (path below the model, message)


@dataclass(frozen=True)
class WireField:
    """How a provider takes one input: the shot key ``name`` sent as ``wire``."""

    name: str
    wire: str
    string: bool = False  # integers sent as text (fal's durations), also inside multi_prompt items
    enum: tuple[Any, ...] | None = None  # the values this provider takes, when fewer than the model's

    def value(self, value: Any) -> Any:
        """``value`` in the provider's form."""
        return _as_text(value) if self.string else value


def _as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_text(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Offer:
    """One provider's offer of one model."""

    provider: str
    endpoint: str
    fields: tuple[WireField, ...]
    price: Price | None = None

    @functools.cached_property
    def _by_name(self) -> dict[str, WireField]:
        return {f.name: f for f in self.fields}

    def field(self, name: str) -> WireField | None:
        return self._by_name.get(name)

    def takes(self, name: str) -> bool:
        return name in self._by_name


def wire_params(offer: Offer, params: Mapping[str, Any]) -> dict[str, Any]:
    """A shot's inputs (by shot key, ``duration`` included) as ``offer``'s provider takes them.
    Inputs the provider does not take are left out (validation refused those a shot gave)."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        field = offer.field(name)
        if field is not None:
            out[field.wire] = field.value(value)
    return out


def parse_offer(provider: str, raw: Mapping[str, Any], *, source: str) -> Offer:
    """An Offer from a schema-valid ``providers.<name>`` entry (its problems checked first)."""
    fields = []
    for name, spec in raw["fields"].items():
        if isinstance(spec, str):
            fields.append(WireField(name, spec))
        else:
            enum = tuple(spec["enum"]) if "enum" in spec else None
            fields.append(WireField(name, spec.get("wire", name), spec.get("form") == "string", enum))
    price = None
    if "price" in raw:
        spec = raw["price"]
        date, origin = str(spec.get("date", "")), str(spec.get("source", "") or source)
        price = parse_price(spec, base=None, date=date, source=origin)
    return Offer(provider, raw["endpoint"], tuple(fields), price)


def offer_problems(
    provider: str, raw: Mapping[str, Any], model_fields: Mapping[str, Any], *, image: bool = False
) -> Iterator[Problem]:
    """What the JSON Schema cannot check in ``providers.<provider>``: fields the model lacks, wire
    names sent twice, enums beyond the model's, a missing duration (a video model's), bad prices."""
    where: tuple[str | int, ...] = ("providers", provider)
    fields: Mapping[str, Any] = raw["fields"]
    wires: dict[str, str] = {}
    for name, spec in fields.items():
        path = (*where, "fields", name)
        if (name != "duration" or image) and name not in model_fields:
            near = difflib.get_close_matches(name, list(model_fields), n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"fields: {', '.join(model_fields)}"
            yield path, f"'{name}' is not a field of this model ({hint})"
            continue
        wire = spec if isinstance(spec, str) else spec.get("wire", name)
        if wire in wires:
            yield path, f"'{wire}' is already sent by field '{wires[wire]}'"
        wires[wire] = name
        if isinstance(spec, Mapping) and "enum" in spec:
            allowed = model_fields.get(name, {}).get("enum") if name != "duration" else None
            if allowed is None:
                yield (*path, "enum"), f"'{name}' takes any value on this model: an enum here restricts nothing"
            else:
                for i, value in enumerate(spec["enum"]):
                    if value not in allowed:
                        values = ", ".join(map(str, allowed))
                        yield (*path, "enum", i), f"{value!r} is not one of the model's values ({values})"
                default = model_fields.get(name, {}).get("default")
                if default is not None and default not in spec["enum"]:
                    yield (*path, "enum"), f"the model's default {default!r} must be one of them (it is sent)"
    if "duration" not in fields and not image:
        yield (*where, "fields"), "the duration must be mapped too (duration: duration)"
    fit = rate_problems(raw.get("price") or {}, image=image) if "price" in raw else []
    for path, message in [*fit, *price_problems(raw.get("price") or {})]:
        yield (*where, "price", *path), message
    if "price" in raw and not fit and not price_problems(raw["price"]):
        try:
            parse_price(raw["price"], base=None, date="", source="")
        except (ValueError, ZeroDivisionError) as exc:
            yield (*where, "price"), f"invalid price: {exc}"
