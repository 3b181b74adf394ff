"""Model rules of SPEC §4, checked on one shot's merged keys (pure: no files, no templates).

Each problem is ``(key, message)`` with ``key`` the shot key it concerns. Keys a shot got
from ``defaults`` that its model does not take are left out quietly; keys the shot sets
itself are errors, so a typo'd field never vanishes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kling_render.catalog import Model

# Shot keys that are not model inputs (they steer the cut or the cache key).
NON_WIRE_KEYS = frozenset({"id", "model", "take", "trim", "transition"})


@dataclass(frozen=True)
class ShotContext:
    model: Model
    merged: dict[str, Any]
    own: set[str]


def accepted_keys(model: Model) -> set[str]:
    """Shot keys the model takes: its wire fields, with end_image standing for last_image."""
    keys = set(model.fields)
    if model.end_image_field == "last_image":
        keys.discard("last_image")
        keys.add("end_image")
    return keys


def check(ctx: ShotContext) -> Iterator[tuple[str, str]]:
    model, m = ctx.model, ctx.merged
    accepted = accepted_keys(model)
    for key in sorted(ctx.own - NON_WIRE_KEYS - accepted):
        yield key, _not_taken(key, model)
    present = {k for k in m if k in accepted}

    for key in model.required:
        shot_key = "end_image" if key == model.end_image_field else key
        if shot_key not in present:
            yield shot_key, f"missing '{shot_key}': required by {model.id}"
    for group in model.one_of:
        given = [k for k in group if k in present]
        if not given:
            yield group[0], f"give one of {' or '.join(group)} ({model.id} needs exactly one)"
        elif len(given) > 1:
            yield given[1], f"give only one of {' or '.join(group)}, not both"

    yield from _duration(ctx, present)

    if "multi_prompt" in present and "end_image" in present:
        yield "end_image", f"end_image cannot be combined with multi_prompt on {model.id}"

    if m.get("sound") is True and "video" in present and "sound" in present:
        yield "sound", "sound cannot be generated with a reference video (use keep_original_sound)"

    if model.max_images is not None and "images" in present:
        count = len(m["images"])
        limit = model.max_images_with_video if "video" in present else model.max_images
        if limit is not None and count > limit:
            why = " with a reference video" if "video" in present else ""
            yield "images", f"{count} reference images; {model.id} takes at most {limit}{why}"
    if model.id.endswith("reference-to-video") and "images" not in present and "video" not in present:
        yield "images", f"give reference images or a video: {model.id} needs a reference"

    if "aspect_ratio" in present and model.aspect_ratios and m["aspect_ratio"] not in model.aspect_ratios:
        yield "aspect_ratio", f"{m['aspect_ratio']!r} is not one of {', '.join(model.aspect_ratios)}"

    if "cfg_scale" in present and model.cfg_scale is not None:
        low, high, _ = model.cfg_scale
        value = m["cfg_scale"]
        if not low <= value <= high:
            yield "cfg_scale", f"{value} is out of range: {model.id} takes {low:g}–{high:g}"


def effective_duration(model: Model, merged: dict[str, Any]) -> int:
    """The shot's duration: its own, else the multi_prompt sum, else the model default."""
    if "duration" in merged:
        return int(merged["duration"])
    if "multi_prompt" in merged and "multi_prompt" in model.fields:
        return sum(int(p.get("duration", 0)) for p in merged["multi_prompt"])
    return model.duration_default


def _duration(ctx: ShotContext, present: set[str]) -> Iterator[tuple[str, str]]:
    model, m = ctx.model, ctx.merged
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
    if not model.duration_min <= duration <= model.duration_max:
        yield "duration", f"{duration} is not allowed for {model.id} ({model.duration_rule()})"
    elif model.durations_without_end_image and "end_image" not in present:
        allowed = model.durations_without_end_image
        if duration not in allowed:
            only = " or ".join(str(d) for d in allowed)
            yield "duration", f"{duration} is not allowed for {model.id} ({only} without end_image)"


def _not_taken(key: str, model: Model) -> str:
    if key == "sound":
        return f"sound is not supported by {model.id}"
    if key == "aspect_ratio":
        return f"aspect_ratio is not taken by {model.id} (the start image sets the aspect)"
    return f"'{key}' is not taken by {model.id}"
