"""Models declared in a project (`models:`): checked like the built-in catalog, priced, and rendered.

Located errors for every kind of bad field spec; declared fields validated in shots (types by
the schema, enums and ranges by the model rules); prices with sound and video multipliers; and
a project whose only model is declared, rendered through the stand-in server as a separate
process: the paid tasks counted and the exact wire bodies checked (the commands in this process,
``in_process``).
"""

from __future__ import annotations

import json
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from e2e_cli import EXAMPLE, Workspace, ws_env
from e2e_fake import FakeProcess

from kling_render.cli import cli
from kling_render.errors import ProjectError
from kling_render.plan.plan import build_plan, shot_key
from kling_render.project.loader import load_project
from kling_render.project.project import cost_of

pytestmark = pytest.mark.stand_in(latency=0.3)

MODEL = """\
models:
  my-t2v:
    title: A text-to-video model the catalog lacks
    endpoint: kwaivgi/kling-v3.0-pro/text-to-video
    fields:
      prompt: {type: text}
      negative_prompt: {type: text}
      aspect_ratio: {type: string, enum: ["16:9", "9:16", "1:1"], default: "16:9"}
      cfg_scale: {type: number, min: 0, max: 1, default: 0.5}
      sound: {type: boolean, default: false}
      shot_type: {type: string, enum: [customize, intelligent]}
    required: [prompt]
    duration: {min: 3, max: 15, default: 5}
    price: {per_second: "0.112", sound_multiplier: "1.5", date: "2026-12-02", source: "test"}
"""


def write(root: Path, text: str, name: str = "project.yaml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text))
    return path


def errors(runner: CliRunner, path: Path) -> list[str]:
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return [line.removeprefix("error: ") for line in result.stderr.splitlines()[:-1]]


# -- located errors for bad model specs ----------------------------------------------------

# Each case replaces the `fields:` ... `duration:` lines of a valid declaration; `#!` marks the
# line the error must point at (else the model's own line, 4).
GOOD_FIELDS = """\
    fields:
      prompt: {type: text}
      sound: {type: boolean, default: false}
    duration: {min: 3, max: 15, default: 5}
"""
BAD_SPECS = {
    "unknown field type": (
        "    fields:\n      prompt: {type: text}\n      mode: {type: strng}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.mode.type", "'strng' is not one of: text, string",
    ),
    "unknown key in a field spec": (
        "    fields:\n      prompt: {type: text}\n      level: {type: integer, defualt: 3}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.level.defualt", "unknown key 'defualt' (did you mean 'default'?)",
    ),
    "default out of range": (
        "    fields:\n      prompt: {type: text}\n      level: {type: integer, min: 1, max: 3, default: 5}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.level.default", "5 is outside 1–3",
    ),
    "default not in the enum": (
        "    fields:\n      prompt: {type: text}\n      mode: {type: string, enum: [a, b], default: c}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.mode.default", "'c' is not one of a, b",
    ),
    "default of the wrong type": (
        "    fields:\n      prompt: {type: text}\n      level: {type: integer, default: high}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.level.default", "'high' is not an integer",
    ),
    "a default on a text field": (
        "    fields:\n      prompt: {type: text, default: hello}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.prompt.default", "a text field takes no default",
    ),
    "min above max": (
        "    fields:\n      prompt: {type: text}\n      cfg_scale: {type: number, min: 2, max: 1}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.cfg_scale.min", "min 2 is above max 1",
    ),
    "enum on a boolean": (
        "    fields:\n      prompt: {type: text}\n      loud: {type: list, enum: [a]}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.loud.enum", "enum applies to string, integer and number fields, not list",
    ),
    "enum value of the wrong type": (
        "    fields:\n      prompt: {type: text}\n      level: {type: integer, enum: [1, two]}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.level.enum[1]", "'two' is not an integer",
    ),
    "a shot key with another type": (
        "    fields:\n      prompt: {type: text}\n      sound: {type: string}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.sound.type", "'sound' has type boolean in every shot",
    ),
    "a shot setting as a field": (
        "    fields:\n      prompt: {type: text}\n      take: {type: integer}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.take", "'take' is a shot setting, not a model input",
    ),
    "duration as a field": (
        "    fields:\n      prompt: {type: text}\n      duration: {type: integer}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.duration", "'duration' is the model's duration: block",
    ),
    "a special type under another name": (
        "    fields:\n      prompt: {type: text}\n      refs: {type: images}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.refs.type", "type images is only for the field named 'images'",
    ),
    "two fields sent under one name": (
        "    fields:\n      prompt: {type: text}\n      a: {type: string, wire: mode}\n"
        "      b: {type: string, wire: mode}  #!\n    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.b.wire", "'mode' is already sent by field 'a'",
    ),
    "only_with names no field": (
        "    fields:\n      prompt: {type: text}\n      keep: {type: boolean, only_with: vido}  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.fields.keep.only_with", "'vido' is not another field of this model",
    ),
    "a required field it does not have": (
        "    fields:\n      prompt: {type: text}\n    required: [promt]  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.required[0]", "'promt' is not a field of this model (did you mean 'prompt'?)",
    ),
    "a one_of group naming an unknown field": (
        "    fields:\n      prompt: {type: text}\n    one_of: [{fields: [prompt, multi_prompt]}]  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.one_of[0].fields[1]", "'multi_prompt' is not a field of this model",
    ),
    "a conflict of one field": (
        "    fields:\n      prompt: {type: text}\n    conflicts: [{fields: [prompt]}]  #!\n"
        "    duration: {min: 3, max: 15, default: 5}\n",
        "models.m.conflicts[0].fields", "needs at least 2 item(s)",
    ),
    "a default duration out of range": (
        "    fields:\n      prompt: {type: text}\n    duration: {min: 3, max: 15, default: 20}  #!\n",
        "models.m.duration.default", "20 is outside 3–15",
    ),
    "durations without an end image, but no end image": (
        "    fields:\n      prompt: {type: text}\n"
        "    duration: {min: 3, max: 10, default: 5, without_end_image: [5]}  #!\n",
        "models.m.duration.without_end_image", "the model has no end_image field",
    ),
    "no duration block": (  # located at the model's own line
        "    fields:\n      prompt: {type: text}\n",
        "models.m", "missing required key 'duration'",
    ),
}  # fmt: skip


def _declaration(body: str, *, model_id: str = "m", endpoint: str = "kwaivgi/some/new-endpoint") -> str:
    return (
        "version: 1\nname: bad\nmodels:\n"
        f"  {model_id}:\n    endpoint: {endpoint}\n{body}"
        "shots:\n  - {id: a, model: kling-v3.0-std/text-to-video, prompt: x}\n"
    )


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_bad_field_spec_is_one_located_error(case: str, tmp_path: Path, runner: CliRunner) -> None:
    body, path, message = BAD_SPECS[case]
    text = _declaration(body)
    project = write(tmp_path, text)
    line = next((i for i, ln in enumerate(text.splitlines(), 1) if "#!" in ln), 4)
    found = errors(runner, project)
    assert any(f"{project.name}:{line}: {path}: " in e and message in e for e in found), found


def test_the_good_declaration_of_the_bad_cases_is_valid(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["validate", str(write(tmp_path, _declaration(GOOD_FIELDS)))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("model_id", "endpoint", "path", "message"),
    [
        ("kling-v3.0-std/image-to-video", "kwaivgi/x/y", "models.kling-v3.0-std/image-to-video", "is a built-in model"),
        ("kwaivgi/my-model", "kwaivgi/x/y", "models.kwaivgi/my-model", "without the kwaivgi/ prefix"),
        ("My Model", "kwaivgi/x/y", "models.My Model", "invalid name 'My Model'"),
        ("m", "/api/v3/kwaivgi/x", "models.m.endpoint", "does not match"),
        ("m", "kwaivgi/../admin", "models.m.endpoint", "does not match"),
        ("m", "https://evil.example/x", "models.m.endpoint", "does not match"),
    ],
)  # fmt: skip
def test_ids_and_endpoints_are_checked(
    model_id: str, endpoint: str, path: str, message: str, tmp_path: Path, runner: CliRunner
) -> None:
    project = write(tmp_path, _declaration(GOOD_FIELDS, model_id=model_id, endpoint=endpoint))
    found = errors(runner, project)
    assert any(f": {path}: " in e and message in e for e in found), found


def test_prices_of_a_declared_model_are_checked(tmp_path: Path, runner: CliRunner) -> None:
    body = GOOD_FIELDS + '    price: {per_second: "0.1", video_per_second: "0.2", video_multiplier: 2}\n'
    found = errors(runner, write(tmp_path, _declaration(body)))
    assert any("models.m.price: give only one of video_per_second or video_multiplier" in e for e in found)
    body = GOOD_FIELDS + '    price: {per_second: "1/0"}\n'
    found = errors(runner, write(tmp_path, _declaration(body)))
    assert any("models.m.price.per_second: '1/0' is not a valid value" in e for e in found)


# -- declared fields in shots --------------------------------------------------------------


def test_declared_fields_are_checked_in_shots(tmp_path: Path, runner: CliRunner) -> None:
    resolution = "      resolution: {type: string, enum: [720p, 1080p], default: 1080p}\n"
    text = (
        "version: 1\nname: p\n" + MODEL.replace("      shot_type:", resolution + "      shot_type:")
        + "defaults: {resolution: 720p}\n"
        "shots:\n"
        "  - {id: a, model: my-t2v, prompt: x, resolution: 4k}\n"
        "  - {id: b, model: my-t2v, prompt: x, cfg_scale: 1.5, shot_type: intelligence}\n"
        "  - {id: c, model: my-t2v, prompt: x, resolution: 1080}\n"
        "  - {id: d, model: my-t2v, prompt: x, resolutoin: 720p}\n"
        "  - {id: e, model: kling-v3.0-std/text-to-video, prompt: x, resolution: 720p}\n"
        "  - {id: f, model: my-t2v, prompt: x, duration: 16}\n"
    )  # fmt: skip
    found = "\n".join(errors(runner, write(tmp_path, text)))
    assert "shots[0].resolution: '4k' is not one of 720p, 1080p" in found
    assert "shots[1].cfg_scale: 1.5 is out of range: my-t2v takes 0–1" in found
    assert "shots[1].shot_type: 'intelligence' is not one of customize, intelligent" in found
    assert "shots[2].resolution: expected a string, got 1080" in found
    assert "shots[3].resolutoin: unknown key 'resolutoin' (did you mean 'resolution'?)" in found
    assert "shots[4].resolution: 'resolution' is not taken by kling-v3.0-std/text-to-video" in found
    assert "shots[5].duration: 16 is not allowed for my-t2v (3–15)" in found


def test_a_declared_model_sends_its_defaults_and_its_wire_names(tmp_path: Path) -> None:
    text = (
        "version: 1\nname: p\nmodels:\n"
        "  renamed:\n    endpoint: acme/video-gen/v1\n"
        "    fields:\n      prompt: {type: text, wire: text}\n"
        "      quality: {type: string, enum: [draft, final], default: final}\n"
        "      steps: {type: integer, min: 1, max: 50, default: 20}\n"
        "      strength: {type: number, default: 1}\n"
        "    required: [prompt]\n    duration: {min: 2, max: 8, default: 4, values: [4, 8]}\n"
        "vars: {thing: mug}\n"
        "shots:\n"
        "  - {id: a, model: renamed, prompt: 'a {{ thing }}'}\n"
        "  - {id: b, model: renamed, prompt: 'a {{ thing }}', quality: final, steps: 20, strength: 1.0, duration: 4}\n"
        "  - {id: c, model: renamed, prompt: 'a {{ thing }}', quality: draft, duration: 8}\n"
    )
    project = load_project(write(tmp_path, text))
    a, b, c = project.shots
    assert a.wire("wavespeed") == {"text": "a mug", "quality": "final", "steps": 20, "strength": 1.0, "duration": 4}
    assert shot_key("wavespeed", a) == shot_key("wavespeed", b), "writing the defaults changed the key"
    assert c.params["quality"] == "draft" and c.duration == 8
    assert a.model.endpoint == "acme/video-gen/v1" and not a.model.builtin
    bad = write(tmp_path, text.replace("duration: 8}", "duration: 6}"), "bad.yaml")
    with pytest.raises(ProjectError, match=r"shots\[2\].duration: 6 is not allowed for renamed \(4 or 8\)"):
        load_project(bad)


def test_the_endpoint_is_part_of_a_declared_models_key(tmp_path: Path) -> None:
    text = "version: 1\nname: p\n" + MODEL + "shots:\n  - {id: a, model: my-t2v, prompt: x}\n"
    first = load_project(write(tmp_path, text)).shots[0]
    moved = text.replace("kwaivgi/kling-v3.0-pro/text-to-video", "kwaivgi/kling-v3.0-std/text-to-video")
    second = load_project(write(tmp_path, moved)).shots[0]
    assert first.params == second.params
    assert shot_key("wavespeed", first) != shot_key("wavespeed", second)
    # A price is not an input: changing it keeps the key (the clip is the same).
    cheaper = text.replace('per_second: "0.112"', 'per_second: "0.1"')
    assert shot_key("wavespeed", load_project(write(tmp_path, cheaper)).shots[0]) == shot_key("wavespeed", first)


# -- prices --------------------------------------------------------------------------------

PRICED = """\
version: 1
name: priced
models:
  ref:
    endpoint: kwaivgi/some-vendor/reference-to-video
    fields:
      prompt: {type: text}
      images: {type: images, max_items: 3, max_items_with_video: 1}
      video: {type: video}
      sound: {type: boolean, default: false}
    required: [prompt]
    any_of: [{fields: [images, video]}]
    duration: {min: 3, max: 10, default: 5}
    price: {per_second: "0.1", sound_multiplier: "2", video_multiplier: "1.5", date: "2026-12-02", source: "test"}
shots:
  - {id: plain, model: ref, prompt: x, images: ["https://e.com/a.png"]}
  - {id: loud, model: ref, prompt: x, images: ["https://e.com/a.png"], sound: true}
  - {id: video, model: ref, prompt: x, video: "https://e.com/v.mp4", duration: 4}
  - {id: both, model: ref, prompt: x, video: "https://e.com/v.mp4", sound: true, duration: 10}
"""


def test_declared_prices_with_sound_and_video_multipliers(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, PRICED))
    costs = {s.id: cost_of(s, project.prices, "wavespeed") for s in project.shots}
    assert costs == {
        "plain": Fraction("0.5"),  # 0.1 x 5
        "loud": Fraction("1.0"),  # 0.1 x 5 x 2
        "video": Fraction("0.6"),  # 0.15 x 4
        "both": Fraction("3.0"),  # 0.15 x 10 x 2
    }
    overridden = PRICED.replace("shots:", 'pricing:\n  ref: {per_second: "0.2"}\nshots:')
    project = load_project(write(tmp_path, overridden))
    costs = {s.id: cost_of(s, project.prices, "wavespeed") for s in project.shots}
    # pricing: replaces the rate; what it leaves out (sound, video rate) stays the model's.
    assert costs["plain"] == Fraction("1.0") and costs["loud"] == Fraction("2.0")
    assert costs["video"] == Fraction("0.6")


def test_declared_item_limits_and_any_of(tmp_path: Path, runner: CliRunner) -> None:
    text = PRICED.split("shots:")[0] + (
        "shots:\n"
        "  - {id: a, model: ref, prompt: x, images: [a.png, b.png, c.png, d.png]}\n"
        "  - {id: b, model: ref, prompt: x, video: v.mp4, images: [a.png, b.png]}\n"
        "  - {id: c, model: ref, prompt: x}\n"
    )
    found = "\n".join(errors(runner, write(tmp_path, text)))
    assert "shots[0].images: 4 reference images; ref takes at most 3" in found
    assert "shots[1].images: 2 reference images; ref takes at most 1 with a reference video" in found
    assert "shots[2].images: give images or video: ref needs at least one" in found


def test_a_model_without_a_price_or_a_sound_price_is_an_error_at_plan(tmp_path: Path, runner: CliRunner) -> None:
    unpriced = MODEL.replace(
        '    price: {per_second: "0.112", sound_multiplier: "1.5", date: "2026-12-02", source: "test"}\n', ""
    )
    text = (
        "version: 1\nname: p\n" + unpriced + "shots:\n  - {id: a, model: my-t2v, prompt: x}\n"
        "  - {id: b, model: kling-v3.0-std/text-to-video, prompt: x, sound: true}\n"
    )
    path = write(tmp_path, text)
    assert runner.invoke(cli, ["validate", str(path)]).exit_code == 0
    result = runner.invoke(cli, ["plan", str(path)])
    assert result.exit_code == 2
    assert "shots[0].model: no price for my-t2v: add it under pricing:" in result.stderr
    assert (
        "shots[1].model: no sound-on price for kling-v3.0-std/text-to-video: add its sound_multiplier under pricing:"
        in result.stderr
    )
    fixed = text.replace(
        "shots:",
        'pricing:\n  my-t2v: {per_second: "0.1"}\n'
        '  kling-v3.0-std/text-to-video: {per_second: "0.084", sound_multiplier: "1.5"}\nshots:',
    )
    plan = build_plan(load_project(write(tmp_path, fixed)), "local", is_cached=lambda key, provider: False)
    assert [p.cost for p in plan.shots] == [Fraction("0.5"), Fraction("0.63")]


def test_models_command_lists_a_projects_declared_models(tmp_path: Path, runner: CliRunner) -> None:
    path = write(tmp_path, "version: 1\nname: p\n" + MODEL + "shots:\n  - {id: a, model: my-t2v, prompt: x}\n")
    doc = json.loads(runner.invoke(cli, ["models", str(path), "--json"]).stdout)
    mine = next(m for m in doc if m["id"] == "my-t2v")
    assert mine["declared_in_project"] is True
    assert mine["endpoint"] == "kwaivgi/kling-v3.0-pro/text-to-video"
    assert mine["fields"]["cfg_scale"] == {"type": "number", "default": 0.5, "min": 0, "max": 1}
    assert mine["price_per_second_usd"] == 0.112 and mine["sound_multiplier"] == "3/2"
    table = runner.invoke(cli, ["models", str(path)]).stdout
    assert "my-t2v (project)" in table and "POST /api/v3/kwaivgi/kling-v3.0-pro/text-to-video" in table


# -- end to end through the stand-in ---------------------------------------------------------

DECLARED_PROJECT = (
    "version: 1\nname: declared\nprovider: wavespeed\n"
    + MODEL
    + """\
shots:
  - id: wide
    model: my-t2v
    prompt: "shot wide: a ceramic mug on a walnut table"
    duration: 3
  - id: tall
    model: my-t2v
    prompt: "shot tall: steam over the mug"
    negative_prompt: blur
    aspect_ratio: "9:16"
    sound: true
    duration: 4
    transition: {type: fade, duration: 0.5}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
"""
)
T2V_PATH = "/api/v3/kwaivgi/kling-v3.0-pro/text-to-video"


def test_a_declared_model_renders_through_the_stand_in(tmp_path: Path, fake_process: FakeProcess) -> None:
    root = tmp_path / "declared"
    root.mkdir()
    (root / "project.yaml").write_text(DECLARED_PROJECT)
    ws = Workspace(root, ws_env(fake_process.base_url), in_process=True)
    plan = ws.plan()
    assert {s["id"]: s["cost_usd"] for s in plan["shots"]} == {"wide": 0.336, "tall": 0.672}

    done = ws.render()
    assert done.returncode == 0, done.stderr
    submits = fake_process.submits()
    assert len(submits) == 2, "one paid task per shot"
    assert {r["path"] for r in submits} == {T2V_PATH}
    assert all(r["status"] == 200 for r in submits)
    bodies = {r["body"]["prompt"].split(":")[0]: r["body"] for r in submits}
    assert bodies == {
        "shot wide": {
            "prompt": "shot wide: a ceramic mug on a walnut table",
            "aspect_ratio": "16:9", "cfg_scale": 0.5, "sound": False, "duration": 3,
        },
        "shot tall": {
            "prompt": "shot tall: steam over the mug", "negative_prompt": "blur",
            "aspect_ratio": "9:16", "cfg_scale": 0.5, "sound": True, "duration": 4,
        },
    }  # fmt: skip
    assert ws.statuses() == {"wide": "done", "tall": "done"}
    assert ws.final_cut.is_file()

    again = ws.render()
    assert again.returncode == 0, again.stderr
    assert len(fake_process.submits()) == 2, "a second render pays nothing"

    # Moving the endpoint is a different model: both shots are paid again, at the new path.
    ws.edit("endpoint: kwaivgi/kling-v3.0-pro/text-to-video", "endpoint: kwaivgi/kling-v3.0-std/text-to-video")
    replanned = ws.plan()["shots"]
    assert {(s["status"], s["change"], tuple(s["changed_fields"])) for s in replanned} == {
        ("render", "changed", ("endpoint",))
    }
    moved = ws.render()
    assert moved.returncode == 0, moved.stderr
    paths = [r["path"] for r in fake_process.submits()]
    assert paths.count("/api/v3/kwaivgi/kling-v3.0-std/text-to-video") == 2 and len(paths) == 4
    ws.assert_no_secret()


@pytest.mark.usefixtures("small_local")  # a small 9:16 animatic is still taller than wide
def test_a_builtin_text_to_video_shot_renders_offline(tmp_path: Path) -> None:
    from e2e_cli import base_env

    root = tmp_path / "t2v"
    root.mkdir()
    (root / "project.yaml").write_text(
        "version: 1\nname: t2v\n"
        "shots:\n"
        "  - {id: a, model: kling-v3.0-std/text-to-video, prompt: 'a mug', duration: 3, aspect_ratio: '9:16'}\n"
        "output: {path: renders/final.mp4, width: 180, height: 320, fps: 24}\n"
    )
    ws = Workspace(root, base_env(), in_process=True)
    done = ws.render("--provider", "local")
    assert done.returncode == 0, done.stderr
    (clip,) = ws.clips("local")
    from kling_render.media.probe import probe

    info = probe(clip)
    assert info.height > info.width and abs(info.duration - 3) < 0.1
    assert EXAMPLE.is_dir()


def test_the_readme_declaration_is_valid_and_prices(tmp_path: Path, runner: CliRunner) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Declaring a model", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = write(tmp_path, "version: 1\nname: readme\n" + example)
    plan = json.loads(runner.invoke(cli, ["plan", str(path), "--json"]).stdout)
    assert [(s["model"], s["cost_usd"]) for s in plan["shots"]] == [("v3-pro-t2v", 0.56)]
    broken = write(tmp_path, path.read_text().replace("max: 1, default: 0.5", "max: 1, default: 2"), "b.yaml")
    assert any("models.v3-pro-t2v.fields.cfg_scale.default: 2 is outside 0–1" in e for e in errors(runner, broken))
