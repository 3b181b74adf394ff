"""Planning: exact prices per SPEC §4, keys that change only when the generation would, plan --json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kling_render.cli import cli
from kling_render.plan.plan import build_plan, shot_key
from kling_render.project.loader import load_project

REPO = Path(__file__).resolve().parents[2]

HEAD = "version: 1\nname: priced\n"


def _write(root: Path, body: str) -> Path:
    path = root / "project.yaml"
    path.write_text(HEAD + body)
    return path


PRICED = """shots:
  - id: o3
    model: kling-video-o3-std/image-to-video
    prompt: p
    image: images/good.png
    duration: 5
    sound: true
  - id: pro
    model: kwaivgi/kling-v3.0-pro/image-to-video
    prompt: p
    image: images/good.png
    duration: 3
    sound: true
  - id: o1
    model: kling-video-o1-std/image-to-video
    prompt: p
    image: images/good.png
    duration: 10
  - id: ref
    model: kling-video-o3-std/reference-to-video
    prompt: p
    video: clips/ref.mp4
    duration: 4
  - id: std
    model: kling-v3.0-std/image-to-video
    prompt: p
    image: images/good.png
    duration: 15
"""


def _plan_json(runner: CliRunner, project: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(cli, ["plan", str(project), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_prices_match_the_catalog_exactly(image_dir: Path, runner: CliRunner) -> None:
    (image_dir / "clips").mkdir()
    shutil.copy(image_dir / "images" / "ref.mp4", image_dir / "clips" / "ref.mp4")
    doc = _plan_json(runner, _write(image_dir, PRICED))
    costs = {s["id"]: s["cost_usd"] for s in doc["shots"]}
    assert costs == {"o3": 1.2, "pro": 0.504, "o1": 0.84, "ref": 0.504, "std": 1.26}
    assert doc["total_cost_usd"] == pytest.approx(1.2 + 0.504 + 0.84 + 0.504 + 1.26, abs=1e-9)
    assert doc["to_render_cost_usd"] == doc["total_cost_usd"]
    assert {s["status"] for s in doc["shots"]} == {"render"}
    assert doc["project"] == "priced" and doc["provider"] == "local"
    first = doc["shots"][0]
    assert set(first) >= {"id", "model", "duration", "sound", "cost_usd", "status"}
    assert first["model"] == "kling-video-o3-std/image-to-video" and first["sound"] is True


def test_project_pricing_overrides_the_catalog(image_dir: Path, runner: CliRunner) -> None:
    body = (
        "pricing:\n  kling-video-o3-std/image-to-video: {per_second: 0.2, sound_multiplier: '3/2'}\n"
        "shots:\n  - id: a\n    model: kling-video-o3-std/image-to-video\n    prompt: p\n"
        "    image: images/good.png\n    duration: 4\n    sound: true\n"
    )
    doc = _plan_json(runner, _write(image_dir, body))
    assert doc["shots"][0]["cost_usd"] == 1.2  # 0.2 * 4 * 1.5


BASE = """shots:
  - id: a
    model: kling-v3.0-pro/image-to-video
    prompt: "a {{ thing }}"
    image: images/good.png
  - id: b
    model: kling-v3.0-pro/image-to-video
    prompt: "b"
    image: images/good.png
"""


def _keys(path: Path, provider: str = "local", **overrides: str) -> dict[str, str]:
    project = load_project(path, overrides)
    return {s.id: shot_key(provider, s) for s in project.shots}


def test_keys_change_only_with_generation_inputs(image_dir: Path) -> None:
    path = _write(image_dir, "vars: {thing: mug}\n" + BASE)
    base = _keys(path)
    assert base == _keys(path), "keys are deterministic"
    assert _keys(path, "wavespeed") != base, "the provider is part of the key"
    assert _keys(path, thing="cup")["a"] != base["a"] and _keys(path, thing="cup")["b"] == base["b"]
    # trim and transition only re-stitch
    path.write_text(path.read_text() + "    trim: {start: 1}\n    transition: {type: fade, duration: 1}\n")
    assert _keys(path) == base
    # an explicit default gives the same key as leaving it out
    path.write_text(path.read_text() + "    cfg_scale: 0.5\n    sound: false\n    duration: 5\n")
    assert _keys(path) == base
    path.write_text(path.read_text() + "    take: 2\n")
    assert _keys(path)["b"] != base["b"]
    # the image's content, not its name, is in the key
    (image_dir / "images" / "good.png").write_bytes((image_dir / "images" / "good.png").read_bytes() + b"\0")
    changed = _keys(path)
    assert changed["a"] != base["a"]


def test_var_override_renders_into_the_plan(image_dir: Path) -> None:
    path = _write(image_dir, "vars: {thing: mug}\n" + BASE)
    project = load_project(path, {"thing": "teapot"})
    assert project.shots[0].params["prompt"] == "a teapot"


def test_lock_diff_names_the_changed_field(image_dir: Path) -> None:
    from kling_render.plan.plan import field_digests

    path = _write(image_dir, "vars: {thing: mug}\n" + BASE)
    project = load_project(path)
    lock = {
        s.id: {
            "key": shot_key("local", s),
            "model": s.model.id,
            "provider": "local",
            "fields": field_digests(s, "local"),
            "cost_usd": 0.56,
        }
        for s in project.shots
    }
    lock["gone"] = {"key": "0" * 64, "model": "m", "provider": "local", "cost_usd": 1.0}
    edited = load_project(path, {"thing": "cup"})
    plan = build_plan(edited, "local", is_cached=lambda key, provider: False, lock=lock)
    changes = {p.id: (p.change, p.changed_fields) for p in plan.shots}
    assert changes == {"a": ("changed", ("prompt",)), "b": ("unchanged", ())}
    assert plan.removed == ["gone"]


def test_only_selects_shots_and_rejects_unknown(image_dir: Path, runner: CliRunner) -> None:
    path = _write(image_dir, "vars: {thing: mug}\n" + BASE)
    doc = _plan_json(runner, path, "--only", "b")
    assert [s["id"] for s in doc["shots"]] == ["b"]
    result = runner.invoke(cli, ["plan", str(path), "--only", "zzz"])
    assert result.exit_code == 2 and "no shot named zzz" in result.stderr


def test_example_project_uses_all_five_image_models(runner: CliRunner) -> None:
    doc = _plan_json(runner, REPO / "projects" / "mug-teaser" / "project.yaml")
    from kling_render.catalog.catalog import load_catalog

    seeds = {mid: m for mid, m in load_catalog().items() if not mid.startswith("kling-v4.0/")}
    with_images = {mid for mid, m in seeds.items() if not m.makes_image and (m.takes("image") or m.takes("images"))}
    assert len(with_images) == 5
    assert {s["model"] for s in doc["shots"]} == with_images


REGENERATE = "python -m kling_render schema > schemas/project.schema.json"


def test_schema_command_prints_the_published_schema(runner: CliRunner) -> None:
    """One source: the package's copy (kling_render/data/project.schema.json, what validation and
    `init` use). schemas/project.schema.json, which editors reference, is generated from it."""
    source = (REPO / "kling_render" / "data" / "project.schema.json").read_bytes()
    result = runner.invoke(cli, ["schema"])
    assert result.exit_code == 0
    assert result.stdout_bytes == source
    published = (REPO / "schemas" / "project.schema.json").read_bytes()
    assert published == source, (
        "schemas/project.schema.json is generated from kling_render/data/project.schema.json (edit that "
        f"one); regenerate it with: {REGENERATE}"
    )
    assert json.loads(source)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_models_command_lists_prices(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["models", "--json"])
    models = {m["id"]: m for m in json.loads(result.stdout)}
    assert models["kling-video-o3-std/image-to-video"]["price_per_second_usd"] == 0.18
    assert models["kling-video-o3-std/image-to-video"]["sound_multiplier"] == "4/3"
    assert models["kling-video-o1-std/image-to-video"]["sound"] is False
    # Every WaveSpeed price is dated and sourced; the one WaveSpeed does not publish is absent.
    unpriced = {mid for mid, m in models.items() if m["providers"]["wavespeed"]["price"] is None}
    assert unpriced == {"kling-v4.0/video-edit"}
    assert all(m["price_source"] and m["price_date"] for mid, m in models.items() if mid not in unpriced)
    # fal's offers, with their own endpoints, wire names and prices.
    v3 = models["kling-v3.0-pro/image-to-video"]["providers"]["fal"]
    assert v3["endpoint"] == "fal-ai/kling-video/v3/pro/image-to-video"
    assert v3["fields"]["image"] == {"wire": "start_image_url"}
    assert v3["fields"]["duration"] == {"wire": "duration", "form": "string"}
    assert v3["price"]["per_second_usd"] == 0.112 and v3["price"]["sound_multiplier"] == "3/2"
    assert "fal" not in models["kling-v4.0/video-extend"]["providers"]
    table = runner.invoke(cli, ["models"]).stdout
    assert "kling-v3.0-pro/image-to-video" in table and "$0.112/s" in table


def test_the_readme_example_is_a_valid_project(tmp_path: Path, runner: CliRunner) -> None:
    import shutil

    readme = (REPO / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    shutil.copytree(REPO / "projects" / "mug-teaser" / "images", tmp_path / "images")
    shutil.copytree(REPO / "projects" / "mug-teaser" / "audio", tmp_path / "audio")
    (tmp_path / "project.yaml").write_text(example)
    result = runner.invoke(cli, ["validate", str(tmp_path / "project.yaml")])
    assert result.exit_code == 0, result.output
