"""Model rules of SPEC §4, checked on one shot's merged keys (pure: no files, no templates).

Every rule comes from the model's data (``catalog.Model``): its field specs (enums, ranges, item
counts), its required fields and field groups, and its durations. Each problem is
``(key, message)`` with ``key`` the shot key it concerns. Keys a shot got from ``defaults`` that
its model does not take are left out quietly; keys the shot sets itself are errors, so a
typo'd field never vanishes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kling_render.catalog.catalog import NON_WIRE_KEYS, FieldSpec, Model

__all__ = ["NON_WIRE_KEYS", "ShotContext", "accepted_keys", "check", "effective_duration", "given"]


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

    if not model.makes_image:  # a still (an image model's input) has no duration
        yield from _duration(ctx, present)
    for spec in model.fields:
        if spec.name in present:
            yield from _value(model, spec, m[spec.name], with_video=given(model, m, "video"))


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
            noun = "reference images" if spec.type == "images" else "items"
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
