"""Model rules of SPEC §4, checked on one shot's merged keys (pure: no files, no templates).

Every rule comes from the model's data (``catalog.Model``): its field specs (enums, ranges, item
counts), its required fields and field groups, and its durations. Each problem is
``(key, message)`` with ``key`` the shot key it concerns. Keys a shot got from ``defaults`` that
its model does not take are left out quietly; keys the shot sets itself are errors, so a
typo'd field never vanishes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kling_render.catalog.catalog import NON_WIRE_KEYS, PAID_PROVIDERS, FieldSpec, Model

__all__ = [
    "NON_WIRE_KEYS",
    "ShotContext",
    "accepted_keys",
    "check",
    "effective_duration",
    "given",
    "provider_problems",
    "reference_problems",
]

_REFERENCE = re.compile(r"@(Image|Video|Audio)(\d+)")


@dataclass(frozen=True)
class ShotContext:
    model: Model
    merged: dict[str, Any]
    own: set[str]


def accepted_keys(model: Model) -> set[str]:
    """Keys the model takes: its fields, and the duration for a video model."""
    return {*model.field_names} if model.makes_image else {*model.field_names, "duration"}


def given(model: Model, merged: dict[str, Any], name: str) -> bool:
    """Whether the shot turns ``name`` on: present for the model, and not ``false``."""
    return name in merged and model.takes(name) and merged[name] is not False


def check(ctx: ShotContext) -> Iterator[tuple[str, str]]:
    model, m = ctx.model, ctx.merged
    accepted = accepted_keys(model)
    for key in sorted(ctx.own - NON_WIRE_KEYS - accepted):
        yield key, _not_taken(key, model)
    present = {k for k in m if k in accepted}

    for key in model.required:
        if key not in present:
            yield key, f"missing '{key}': required by {model.id}"
    for group in model.one_of:
        on = [k for k in group.fields if k in present]
        if not on:
            yield group.fields[0], group.text(model.id) or (
                f"give one of {' or '.join(group.fields)} ({model.id} needs exactly one)"
            )
        elif len(on) > 1:
            yield on[1], group.text(model.id) or f"give only one of {' or '.join(group.fields)}, not both"
    for group in model.any_of:
        if not any(k in present for k in group.fields):
            yield group.fields[0], group.text(model.id) or (
                f"give {' or '.join(group.fields)}: {model.id} needs at least one"
            )
    for group in model.conflicts:
        on = [k for k in group.fields if given(model, m, k)]
        if len(on) > 1:
            yield on[-1], group.text(model.id) or f"{on[-1]} cannot be combined with {on[0]} on {model.id}"
    for limit in model.max_files:
        counts = {k: _count(m[k]) for k in limit.fields if k in present}
        if sum(counts.values()) > limit.max:
            detail = " + ".join(f"{n} {k}" for k, n in counts.items())
            yield max(counts, key=lambda k: counts[k]), f"{detail} files; {model.id} takes at most {limit.max} in all"
    for need in model.needs:
        if not given(model, m, need.when):
            continue
        for name, values in need.then:
            value = m.get(name, _default(model, name))
            if value not in values:
                wanted = " or ".join(str(v) for v in values)
                yield need.when, need.message or f"{need.when} needs {name} {wanted} (it is {value})"

    if not model.makes_image:  # a still (an image model's input) has no duration
        yield from _duration(ctx, present)
    for spec in model.fields:
        if spec.name in present:
            yield from _value(model, spec, m[spec.name], with_video=given(model, m, "video"))


def provider_problems(model: Model, provider: str, merged: Mapping[str, Any], own: set[str] | frozenset[str]
                      ) -> Iterator[tuple[str, str]]:  # fmt: skip
    """What ``provider`` does not take of a shot: the model itself (key ``model``), an input the shot
    sets itself (inputs from ``defaults`` are left out quietly, as for models), or a value. Every
    message names the providers that do take it. The free ``local`` provider takes everything."""
    if provider not in PAID_PROVIDERS:
        return
    offer = model.offer(provider)
    if offer is None:
        yield "model", f"{model.id} is not offered by {provider} ({_offered_by(model.providers)})"
        return
    for name in sorted(k for k in merged if model.takes(k) and k != "duration"):
        field = offer.field(name)
        takers = [o.provider for o in model.offers if o.takes(name)]
        if field is None:
            if name in own and given(model, dict(merged), name):
                yield name, f"{name} is not taken by {model.id} on {provider} ({_offered_by(takers, 'takes it')})"
            continue
        if field.enum is not None and merged[name] not in field.enum:
            takers = [o.provider for o in model.offers if o.takes(name) and _allows(o, name, merged[name])]
            yield name, (
                f"{merged[name]!r} is not taken by {model.id} on {provider}, which takes "
                f"{', '.join(map(str, field.enum))} ({_offered_by(takers, 'takes it')})"
            )


def _allows(offer: Any, name: str, value: Any) -> bool:
    field = offer.field(name)
    return field is not None and (field.enum is None or value in field.enum)


def _offered_by(providers: list[str] | tuple[str, ...], verb: str = "offers it") -> str:
    if not providers:
        return "no provider does"
    return f"{' and '.join(providers)} {verb if len(providers) == 1 else verb.replace('s it', ' it')}"


def reference_problems(model: Model, params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``@Image2`` in the prompt when the shot gives one image, and the like (``references`` of the model)."""
    if not model.references:
        return
    texts = [params.get("prompt")] + [p.get("prompt") for p in params.get("multi_prompt") or [] if isinstance(p, dict)]
    tags = {tag: name for tag, name in model.references}
    seen: set[tuple[str, int]] = set()
    for text in (t for t in texts if isinstance(t, str)):
        for match in _REFERENCE.finditer(text):
            tag, number = match.group(1), int(match.group(2))
            if (tag, number) in seen:
                continue
            seen.add((tag, number))
            name = tags.get(tag)
            count = _count(params.get(name)) if name is not None else 0
            if name is None:
                yield "prompt", f"@{tag}{number}: {model.id} takes no {tag.lower()} references"
            elif number < 1 or number > count:
                have = f"{count} {name}" if count else f"no {name}"
                yield "prompt", f"@{tag}{number} names a file the shot does not give ({have})"


def _count(value: Any) -> int:
    if value is None or value is False:
        return 0
    return len(value) if isinstance(value, list) else 1


def _default(model: Model, name: str) -> Any:
    spec = model.field(name)
    return spec.default if spec is not None and spec.has_default else None


def effective_duration(model: Model, merged: dict[str, Any]) -> int:
    """The shot's duration: its own, else the multi_prompt sum, else the model default."""
    if "duration" in merged:
        return int(merged["duration"])
    if "multi_prompt" in merged and model.takes("multi_prompt"):
        return sum(int(p.get("duration", 0)) for p in merged["multi_prompt"])
    return model.clip_duration.default


def _value(model: Model, spec: FieldSpec, value: Any, *, with_video: bool) -> Iterator[tuple[str, str]]:
    """The field's limits from its spec: enum, min/max, item counts."""
    key = spec.name
    if spec.enum is not None and value not in spec.enum:
        yield key, f"{value!r} is not one of {', '.join(str(v) for v in spec.enum)}"
    if isinstance(value, float) and not math.isfinite(value):
        yield key, f"{value} is not a finite number"
    elif spec.type in ("integer", "number") and isinstance(value, int | float) and not isinstance(value, bool):
        low, high = spec.minimum, spec.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"{'' if low is None else f'{low:g}'}–{'' if high is None else f'{high:g}'}"
            yield key, f"{value} is out of range: {model.id} takes {span}"
    if spec.max_items is not None and isinstance(value, list):
        limit = spec.max_items_with_video if with_video and spec.max_items_with_video is not None else spec.max_items
        if len(value) > limit:
            why = " with a reference video" if with_video and spec.max_items_with_video is not None else ""
            noun = {"images": "images" if key == "keyframes" else "reference images", "videos": "videos",
                    "audios": "audio files"}.get(spec.type, "items")  # fmt: skip
            yield key, f"{len(value)} {noun}; {model.id} takes at most {limit}{why}"


def _duration(ctx: ShotContext, present: set[str]) -> Iterator[tuple[str, str]]:
    model, m = ctx.model, ctx.merged
    rule = model.clip_duration
    duration = effective_duration(model, m)
    if "multi_prompt" in present:
        parts = [p.get("duration", 0) for p in m["multi_prompt"]]
        if sum(parts) != duration:
            yield (
                "multi_prompt",
                (
                    f"durations sum to {sum(parts)} ({' + '.join(str(p) for p in parts)}) "
                    f"but the shot lasts {duration} s"
                ),
            )
    if not rule.min <= duration <= rule.max or (rule.values and duration not in rule.values):
        yield "duration", f"{duration} is not allowed for {model.id} ({rule.rule()})"
    elif rule.without_end_image and "end_image" not in present:
        allowed = rule.without_end_image
        if duration not in allowed:
            only = " or ".join(str(d) for d in allowed)
            yield "duration", f"{duration} is not allowed for {model.id} ({only} without end_image)"


def _not_taken(key: str, model: Model) -> str:
    if key == "sound":
        return f"sound is not supported by {model.id}"
    if key == "aspect_ratio" and model.takes("image"):
        return f"aspect_ratio is not taken by {model.id} (the start image sets the aspect)"
    return f"'{key}' is not taken by {model.id}"
