"""Property-based fuzzing of ``models:`` declarations and the shots that use them.

Random field specs, groups, durations and prices (built from the vocabulary of the format, with
hostile values mixed in), and shots giving random values for the declared fields. Loading and
planning may only succeed or raise ProjectError with located issues: never another exception.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_render.errors import ProjectError
from kling_render.plan.plan import build_plan
from kling_render.project.loader import load_project

WORK = Path(tempfile.mkdtemp(prefix="kling-fuzz-models-"))
OUTCOMES = {"loaded": 0, "refused": 0}
NAMES = ["prompt", "negative_prompt", "multi_prompt", "image", "end_image", "images", "video", "sound",
         "aspect_ratio", "cfg_scale", "shot_type", "mode", "level", "take", "duration", "Bad", "id"]
TYPES = ["text", "string", "integer", "number", "boolean", "list", "image", "images", "video", "multi_prompt", "x"]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 20), st.sampled_from([0.5, 1.5, float("inf"), float("nan"), -0.0]),
    st.sampled_from(["", "a", "16:9", "customize", "https://e.com/a.png", "images/missing.png", "{{ x }}"]),
    st.lists(st.integers(0, 3), max_size=3),
    st.lists(st.fixed_dictionaries({"prompt": st.sampled_from(["a", ""]), "duration": st.integers(0, 6)}), max_size=2),
)  # fmt: skip
OPTIONS = ["wire", "default", "min", "max", "enum", "max_items", "max_items_with_video", "only_with"]
FIELD = st.builds(
    lambda kind, rest: {"type": kind, **rest},
    st.sampled_from(TYPES),
    st.dictionaries(st.sampled_from(OPTIONS), st.one_of(st.sampled_from(NAMES), VALUES, st.lists(VALUES, max_size=3)),
                    max_size=3),
)  # fmt: skip
GROUP = st.fixed_dictionaries(
    {"fields": st.lists(st.sampled_from(NAMES), max_size=3)},
    optional={"message": st.sampled_from(["x {model}", "", "{", "{0}"])},
)
DURATION = st.fixed_dictionaries(
    {"min": st.integers(0, 20), "max": st.integers(0, 20), "default": st.integers(0, 20)},
    optional={"values": st.lists(st.integers(0, 20), max_size=3),
              "without_end_image": st.lists(st.integers(0, 20), max_size=3)},
)  # fmt: skip
PRICE = st.fixed_dictionaries(
    {"per_second": st.one_of(st.sampled_from(["0.1", "1/3", "1/0", "-1", "x"]), VALUES)},
    optional={"sound_multiplier": st.sampled_from(["2", "0", 1.5, "3/2"]),
              "video_multiplier": st.sampled_from(["1.5", 2]), "video_per_second": st.sampled_from(["0.2", 0.3])},
)  # fmt: skip
MODEL = st.fixed_dictionaries(
    {
        "endpoint": st.sampled_from(["kwaivgi/x/y", "acme/v1", "/bad", "a/../b"]),
        "fields": st.dictionaries(st.sampled_from(NAMES), FIELD, max_size=5),
        "duration": DURATION,
    },
    optional={
        "required": st.lists(st.sampled_from(NAMES), max_size=2),
        "one_of": st.lists(GROUP, max_size=2),
        "any_of": st.lists(GROUP, max_size=1),
        "conflicts": st.lists(GROUP, max_size=2),
        "image_limits": st.fixed_dictionaries(
            {}, optional={"formats": st.just(["png"]), "min_side": st.integers(0, 400)}
        ),
        "price": PRICE,
    },
)  # fmt: skip
SHOT = st.dictionaries(st.sampled_from(NAMES[:-3]), VALUES, max_size=5)


FAST = settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=3000, derandomize=False, deadline=None, suppress_health_check=list(HealthCheck))
DECLARATIONS = st.dictionaries(st.sampled_from(["m", "kling-v3.0-std/image-to-video", "n/o"]), MODEL, max_size=2)
SHOTS = st.lists(SHOT, min_size=1, max_size=3)


def _load_and_plan(doc: dict[str, Any]) -> None:
    path = WORK / "project.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        project = load_project(path)
        OUTCOMES["loaded"] += 1
        build_plan(project, "local", is_cached=lambda key, provider: False)
    except ProjectError as exc:
        OUTCOMES["refused"] += 1
        assert exc.issues and all(i.file.endswith("project.yaml") and i.line >= 0 for i in exc.issues)


def _declared_doc(models: dict[str, Any], shots: list[dict[str, Any]]) -> dict[str, Any]:
    ids = list(models) or ["kling-v3.0-std/text-to-video"]
    return {
        "version": 1,
        "name": "fuzz",
        "models": models,
        "shots": [{"id": f"s{i}", "model": ids[i % len(ids)], **shot} for i, shot in enumerate(shots)],
    }


@FAST
@given(DECLARATIONS, SHOTS)
def test_declarations_and_their_shots_never_crash(models: dict[str, Any], shots: list[dict[str, Any]]) -> None:
    _load_and_plan(_declared_doc(models, shots))


@pytest.mark.slow
@SLOW
@given(DECLARATIONS, SHOTS)
def test_declarations_and_their_shots_never_crash_many(models: dict[str, Any], shots: list[dict[str, Any]]) -> None:
    _load_and_plan(_declared_doc(models, shots))


VALID = yaml.safe_load(
    """
version: 1
name: fuzz
models:
  t2v:
    endpoint: kwaivgi/kling-v3.0-pro/text-to-video
    fields:
      prompt: {type: text}
      multi_prompt: {type: multi_prompt}
      aspect_ratio: {type: string, enum: ["16:9", "9:16"], default: "16:9"}
      cfg_scale: {type: number, min: 0, max: 1, default: 0.5}
      sound: {type: boolean, default: false}
      steps: {type: integer, min: 1, max: 50, wire: num_steps}
      element_list: {type: list, max_items: 2}
    one_of: [{fields: [prompt, multi_prompt], message: "one {model}"}]
    duration: {min: 3, max: 15, default: 5, values: [5, 10]}
    price: {per_second: "0.1", sound_multiplier: "3/2"}
  ref:
    endpoint: acme/ref/v2
    fields:
      prompt: {type: text}
      images: {type: images, max_items: 3, max_items_with_video: 1}
      video: {type: video}
      end_image: {type: image, wire: last_frame}
      keep: {type: boolean, default: true, only_with: video}
      sound: {type: boolean, default: false}
    required: [prompt]
    any_of: [{fields: [images, video]}]
    conflicts: [{fields: [video, sound]}]
    duration: {min: 3, max: 10, default: 5, without_end_image: [5, 10]}
    image_limits: {formats: [png], min_side: 10}
    price: {per_second: "0.2", video_multiplier: "1.5"}
shots:
  - {id: a, model: t2v, prompt: "a {{ project.name }}", steps: 20, element_list: [1]}
  - {id: b, model: t2v, multi_prompt: [{prompt: x, duration: 5}], sound: true}
  - {id: c, model: ref, prompt: x, images: ["https://e.com/a.png"], end_image: "https://e.com/b.png", duration: 7}
  - {id: d, model: ref, prompt: x, video: "https://e.com/v.mp4"}
"""
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*prefix, i))
    return out


PATHS = [p for p in _paths(VALID) if p[0] in ("models", "shots")]
NEW_VALUES = st.one_of(st.just("<delete>"), VALUES, st.sampled_from(TYPES + NAMES))


def _mutate(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set (or delete) ``path`` in ``doc`` if it still exists after earlier mutations."""
    holder: Any = doc
    for part in path[:-1]:
        if isinstance(holder, dict):
            present = part in holder
        else:
            present = isinstance(holder, list) and isinstance(part, int) and part < len(holder)
        if not present:
            return
        holder = holder[part]
    last = path[-1]
    if isinstance(holder, dict) and value == "<delete>":
        holder.pop(last, None)
    elif isinstance(holder, dict) or (isinstance(holder, list) and isinstance(last, int) and last < len(holder)):
        holder[last] = value


MUTATIONS = st.lists(st.tuples(st.sampled_from(PATHS), NEW_VALUES), min_size=1, max_size=3)


def _mutated(mutations: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    for path, value in mutations:
        _mutate(doc, path, value)
    return doc


def test_the_valid_declaration_loads() -> None:
    _load_and_plan(copy.deepcopy(VALID))
    assert OUTCOMES["loaded"] >= 1


@FAST
@given(MUTATIONS)
def test_mutations_of_a_valid_declaration_never_crash(mutations: list[tuple[tuple[Any, ...], Any]]) -> None:
    _load_and_plan(_mutated(mutations))


@pytest.mark.slow
@SLOW
@given(MUTATIONS)
def test_mutations_of_a_valid_declaration_never_crash_many(mutations: list[tuple[tuple[Any, ...], Any]]) -> None:
    _load_and_plan(_mutated(mutations))
