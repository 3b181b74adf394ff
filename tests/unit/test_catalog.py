"""The built-in catalog as data: checked by the same schema and loader as a project's ``models:``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from kling_render.catalog.catalog import SHOT_KEY_TYPES, load_catalog, parse_models
from kling_render.errors import ProjectError
from kling_render.plan.keys import wire_for_key
from kling_render.project.document import parse_document
from kling_render.project.loader import load_project
from kling_render.project.schema import _FIELD_VALUE_SCHEMAS, _with_models, catalog_issues

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "kling_render" / "data" / "models.yaml"
# the package's copy: the source (schemas/project.schema.json is generated from it, test_plan.py)
SCHEMA = json.loads((REPO / "kling_render" / "data" / "project.schema.json").read_text())


def test_the_schema_is_valid_draft_2020_12_also_with_declared_models() -> None:
    """Validation trusts the shipped schema (a command never checks it against the metaschema), so
    it is checked here, and so is the schema a project's declared models extend it to."""
    Draft202012Validator.check_schema(SCHEMA)
    kinds = {f"f_{kind}": kind for kind in _FIELD_VALUE_SCHEMAS}
    extended = _with_models(SCHEMA, {"acme/video": kinds, "acme/still": kinds}, frozenset({"acme/still"}))
    assert set(kinds) <= set(extended["$defs"]["shot"]["properties"]) & set(extended["$defs"]["still"]["properties"])
    Draft202012Validator.check_schema(extended)


def test_the_published_schema_names_every_builtin_model() -> None:
    catalog = load_catalog()
    ids = list(catalog)
    expected = ids + [f"kwaivgi/{i}" for i, m in catalog.items() if m.endpoint.startswith("kwaivgi/")]
    assert SCHEMA["$defs"]["shot"]["properties"]["model"]["enum"] == expected
    assert SCHEMA["properties"]["pricing"]["propertyNames"]["enum"] == expected


def test_shot_keys_with_a_fixed_type_have_it_in_the_schema() -> None:
    shot = SCHEMA["$defs"]["shot"]["properties"]

    def resolved(schema: dict[str, object]) -> dict[str, object]:
        ref = schema.get("$ref")
        return shot[str(ref).rsplit("/", 1)[1]] if ref else schema

    for name, kind in SHOT_KEY_TYPES.items():
        if kind == "multi_prompt":
            assert shot[name]["type"] == "array"
            continue
        # An image field is a $ref to the image input forms (a path, a still, a frame), like the declared
        # ones; a video field a $ref to the shot's video (a file, a URL, another shot's clip).
        expected = _FIELD_VALUE_SCHEMAS[kind]
        assert (shot[name].get("type"), shot[name].get("$ref")) == (
            resolved(expected).get("type") if "shot/properties" in str(expected.get("$ref")) else expected.get("type"),
            None if "shot/properties" in str(expected.get("$ref")) else expected.get("$ref"),
        ), name


def test_every_builtin_model_has_its_endpoint_and_a_dated_sourced_price() -> None:
    unpriced = set()
    for model_id, model in load_catalog().items():
        assert model.builtin
        # Kling's video models live under kwaivgi/; an image model's id is its endpoint.
        assert model.endpoint == (model_id if model.makes_image else f"kwaivgi/{model_id}")
        assert model.offers[0].provider == "wavespeed" and model.offers[0].endpoint == model.endpoint
        for offer in model.offers:
            if offer.price is None:
                unpriced.add((offer.provider, model_id))
                continue
            assert offer.price.date and offer.price.source.startswith(("http", "Kling")), (offer.provider, model_id)
    # What no provider publishes: a shot needs its price under `pricing:` (the plan says so).
    assert unpriced == {("wavespeed", "kling-v4.0/video-edit"), ("fal", "kling-video-o3-std/reference-to-video")}


def test_issue_11_item_7_and_the_shot_type_enum() -> None:
    catalog = load_catalog()
    o3 = catalog["kling-video-o3-std/image-to-video"]
    assert o3.takes("multi_prompt") and o3.takes("shot_type")
    for model in catalog.values():
        spec = model.field("shot_type")
        if spec is not None:
            assert spec.enum == ("customize", "intelligent"), model.id
    assert {m.id for m in catalog.values() if m.takes("shot_type")} == {
        "kling-video-o3-std/image-to-video",
        "kling-v3.0-pro/image-to-video",
        "kling-v3.0-std/image-to-video",
        "kling-v3.0-std/text-to-video",
    }


def test_o3_multi_prompt_is_sent_and_checked(tmp_path: Path) -> None:
    base = (
        "version: 1\nname: p\nshots:\n  - id: a\n    model: kling-video-o3-std/image-to-video\n"
        "    image: https://e.com/a.png\n    shot_type: customize\n"
        "    multi_prompt: [{prompt: one, duration: 2}, {prompt: two, duration: 3}]\n"
    )
    path = tmp_path / "p.yaml"
    path.write_text(base)
    shot = load_project(path).shots[0]
    assert wire_for_key(shot.wire("wavespeed")) == {
        "multi_prompt": [{"prompt": "one", "duration": 2}, {"prompt": "two", "duration": 3}],
        "image": "https://e.com/a.png",
        "sound": False,
        "shot_type": "customize",
        "duration": 5,
    }
    path.write_text(base + "    end_image: https://e.com/b.png\n    prompt: x\n")
    with pytest.raises(ProjectError) as info:
        load_project(path)
    text = str(info.value)
    assert "shots[0].end_image: end_image cannot be combined with multi_prompt" in text
    assert "shots[0].multi_prompt: give only one of prompt or multi_prompt, not both" in text


def test_a_broken_catalog_file_is_reported_with_lines() -> None:
    text = CATALOG.read_text()
    broken = text.replace("image: {type: image}", "image: {type: picture}", 1)
    issues = catalog_issues(parse_document(broken, "models.yaml"))
    line = broken.splitlines().index("      image: {type: picture}") + 1
    assert [(i.line, i.path) for i in issues] == [(line, "models.kling-video-o3-std/image-to-video.fields.image.type")]
    doc = parse_document(text.replace("required: [image]", "required: [imag]", 1), "models.yaml")
    assert catalog_issues(doc) == []
    models, problems = parse_models(doc.data["models"], builtin=True, source="models.yaml")
    message = "'imag' is not a field of this model (did you mean 'image'?)"
    assert problems == [("kling-video-o3-std/image-to-video", ("required", 0), message)]
    assert "kling-video-o3-std/image-to-video" not in models
