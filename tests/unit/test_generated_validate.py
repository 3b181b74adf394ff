"""Generated inputs at validate (issue 21): stills, ``{still: ID}``, ``{from: SHOT, frame: POS}``,
takes and pick, image models in the catalog and under ``models:``.

Every bad input goes through the real CLI: exit 2, one located line per problem
(``error: <file>:<line>: <path>: <message>``), at the line of the field, and nothing written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_image

from kling_render.cli import cli

LOCATED = re.compile(r"^error: (?P<file>\S+\.yaml):(?P<line>\d+): (?P<path>\S+): (?P<message>.+)$")

HEAD = """\
version: 1
name: t
provider: local
stills:
  - id: hero
    model: bytedance/seedream-v4.5
    prompt: a mug
  - id: edit
    model: bytedance/seedream-v4.5/edit
    prompt: make it blue
    images: [images/good.png, {still: hero}]
defaults: {model: kling-v3.0-std/image-to-video, duration: 3}
shots:
  - id: a
    prompt: first
    image: {still: hero}
    takes: 2
  - id: b
    prompt: second
    image: {from: a, frame: last}
    trim: {start: 0.5, end: 2.5}
  - id: c
    prompt: third
    image: {from: b, frame: 1.5}
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_image(tmp_path / "images" / "good.png", 640, 360)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def refused(root: Path, text: str) -> list[tuple[int, str, str]]:
    """Validate ``text`` as root/p.yaml: exit 2, only located lines, nothing written; (line, path, message)."""
    path = root / "p.yaml"
    path.write_text(text, encoding="utf-8")
    before = listing(root)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith("nothing was written"), result.stderr
    found = []
    for line in lines[:-1]:
        m = LOCATED.match(line)
        assert m, f"not a located line: {line!r}"
        found.append((int(m["line"]), m["path"], m["message"]))
    assert listing(root) == before, "a refused validate must write nothing"
    return found


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of ``text`` containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_project_with_stills_continuity_and_takes_is_valid(root: Path) -> None:
    (root / "p.yaml").write_text(HEAD)
    result = CliRunner().invoke(cli, ["validate", "p.yaml", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] is True


def test_unknown_still(root: Path) -> None:
    text = HEAD.replace("image: {still: hero}", "image: {still: heor}")
    assert refused(root, text) == [
        (line_of(text, "{still: heor}"), "shots[0].image.still", "no still named 'heor' (did you mean 'hero'?)")
    ]


def test_unknown_still_in_a_still_and_without_any_stills(root: Path) -> None:
    text = HEAD.replace("images: [images/good.png, {still: hero}]", "images: [images/good.png, {still: nope}]")
    (found,) = refused(root, text)
    assert found[:2] == (line_of(text, "{still: nope}"), "stills[1].images[1].still")
    no_stills = HEAD.split("stills:")[0] + "shots:\n  - id: a\n    model: kling-v3.0-std/image-to-video\n"
    no_stills += "    prompt: x\n    image: {still: x}\n"
    assert refused(root, no_stills) == [
        (line_of(no_stills, "{still: x}"), "shots[0].image.still", "no still named 'x' (the project has no stills)")
    ]


def test_unknown_shot(root: Path) -> None:
    text = HEAD.replace("{from: a, frame: last}", "{from: aa, frame: last}")
    assert refused(root, text) == [
        (line_of(text, "{from: aa"), "shots[1].image.from", "no shot named 'aa' (did you mean 'a'?)")
    ]


def test_a_cycle_is_one_located_line(root: Path) -> None:
    text = HEAD.replace("image: {still: hero}\n    takes: 2", "image: {from: c, frame: first}")
    found = refused(root, text)
    assert len(found) == 1, found
    line, path, message = found[0]
    assert message.startswith("a cycle: ") and all(n in message for n in ("a", "b", "c")), message
    assert path.endswith(".image.from") and line in {line_of(text, "{from: c"), line_of(text, "{from: a"),
                                                     line_of(text, "{from: b")}  # fmt: skip


def test_a_shot_that_starts_from_its_own_frame_is_a_cycle(root: Path) -> None:
    text = HEAD.replace("{from: b, frame: 1.5}", "{from: c, frame: last}")
    assert refused(root, text) == [
        (line_of(text, "{from: c, frame: last}"), "shots[2].image.from", "a cycle: c → c (each waits for the next)")
    ]


@pytest.mark.parametrize("frame", ["2.5", "9", "2.0001"])
def test_a_frame_time_outside_the_kept_range(root: Path, frame: str) -> None:
    # b keeps 0.5..2.5 s: 2 s of it, so 0..2 is inside and anything past 2 outside.
    text = HEAD.replace("{from: b, frame: 1.5}", f"{{from: b, frame: {frame}}}")
    assert refused(root, text) == [
        (line_of(text, f"frame: {frame}}}"), "shots[2].image.frame",
         f"{float(frame):g} s is outside the kept range of b (0–2 s)"),
    ]  # fmt: skip


def test_the_end_of_the_kept_range_is_inside(root: Path) -> None:
    (root / "p.yaml").write_text(HEAD.replace("{from: b, frame: 1.5}", "{from: b, frame: 2}"))
    assert CliRunner().invoke(cli, ["validate", "p.yaml"]).exit_code == 0


@pytest.mark.parametrize(("takes", "message"), [("0", "0 must be at least 1"), ("9", "9 must be at most 8")])
def test_takes_out_of_range(root: Path, takes: str, message: str) -> None:
    text = HEAD.replace("takes: 2", f"takes: {takes}")
    assert refused(root, text) == [(line_of(text, "takes:"), "shots[0].takes", message)]


def test_takes_in_defaults_out_of_range(root: Path) -> None:
    text = HEAD.replace("duration: 3}", "duration: 3, takes: 12}")
    assert refused(root, text) == [(line_of(text, "takes: 12"), "defaults.takes", "12 must be at most 8")]


@pytest.mark.parametrize(
    ("extra", "pick", "message"),
    [
        ("", "3", "3 is not a rendered take (the shot renders takes 1–2 (take: 1, takes: 2))"),
        ("    take: 4\n", "2", "2 is not a rendered take (the shot renders takes 4–5 (take: 4, takes: 2))"),
    ],
)
def test_a_pick_outside_the_rendered_takes(root: Path, extra: str, pick: str, message: str) -> None:
    text = HEAD.replace("    takes: 2\n", f"    takes: 2\n{extra}    pick: {pick}\n")
    assert refused(root, text) == [(line_of(text, "pick:"), "shots[0].pick", message)]


def test_a_pick_of_a_shot_with_one_take(root: Path) -> None:
    text = HEAD.replace("    trim: {start: 0.5, end: 2.5}\n", "    trim: {start: 0.5, end: 2.5}\n    pick: 2\n")
    assert refused(root, text) == [
        (line_of(text, "pick: 2"), "shots[1].pick", "2 is not a rendered take (the shot renders take 1 only)")
    ]


def test_a_still_given_to_a_field_whose_model_takes_no_image(root: Path) -> None:
    text = HEAD + ("  - id: d\n    model: kling-v3.0-std/text-to-video\n    prompt: x\n    image: {still: hero}\n")
    assert refused(root, text) == [
        (line_of(text, "prompt: x") + 1, "shots[3].image",
         "kling-v3.0-std/text-to-video does not take image: still 'hero' cannot be given here (it takes no image)"),
    ]  # fmt: skip


def test_a_still_given_to_a_text_to_image_still(root: Path) -> None:
    text = HEAD.replace("    prompt: a mug\n", "    prompt: a mug\n    images: [{still: edit}]\n")
    assert refused(root, text) == [
        (line_of(text, "[{still: edit}]"), "stills[0].images",
         "bytedance/seedream-v4.5 does not take images: still 'edit' cannot be given here (it takes no image)"),
    ]  # fmt: skip


def test_an_image_model_as_a_shots_model_and_a_video_model_as_a_stills(root: Path) -> None:
    text = HEAD.replace("model: bytedance/seedream-v4.5\n", "model: kling-v3.0-std/text-to-video\n").replace(
        "  - id: c\n", "  - id: c\n    model: bytedance/seedream-v4.5/edit\n"
    )
    found = refused(root, text)
    assert found[0][:2] == (line_of(text, "model: kling-v3.0-std/text-to-video"), "stills[0].model")
    assert found[0][2].startswith("kling-v3.0-std/text-to-video is a video model: a still needs an image model")
    assert found[1][:2] == (line_of(text, "  - id: c") + 1, "shots[2].model")
    assert found[1][2].startswith("bytedance/seedream-v4.5/edit is an image model (output: image): it makes stills")


def test_an_image_model_in_defaults_is_reported_at_the_default(root: Path) -> None:
    text = HEAD.replace("defaults: {model: kling-v3.0-std/image-to-video", "defaults: {model: bytedance/seedream-v4.5")
    found = refused(root, text)
    assert {(line, path) for line, path, _ in found} == {
        (line_of(text, "defaults:"), f"shots[{i}].model") for i in range(3)
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{stil: hero}", "a mapping is not an image input (expected a path or https URL, {still: ID}, or "
                         "{from: SHOT, frame: first|last|SECONDS})"),
        ("{still: Hero}", "'Hero' does not match [a-z0-9][a-z0-9_-]*"),
        ("{from: a}", "missing required key 'frame'"),
        ("{from: a, frame: middle}", "'middle': expected first, last or a time in seconds (at least 0)"),
        ("{from: a, frame: -1}", "-1: expected first, last or a time in seconds (at least 0)"),
    ],
)  # fmt: skip
def test_malformed_generated_inputs(root: Path, value: str, message: str) -> None:
    text = HEAD.replace("{from: b, frame: 1.5}", value)
    (found,) = refused(root, text)
    assert (found[0], found[2]) == (line_of(text, value), message)


def test_duplicate_still_ids(root: Path) -> None:
    text = HEAD.replace("  - id: edit\n", "  - id: hero\n").replace("{still: hero}]", "images/good.png]")
    assert refused(root, text) == [
        (
            line_of(text, "prompt: make it blue") - 2,
            "stills[1].id",
            "duplicate still id 'hero' (first used by stills[0])",
        )
    ]


DECLARED = """\
version: 1
name: t
models:
  cheap-image:
    endpoint: acme/cheap-image
    output: image
    fields:
      prompt: {type: text}
      images: {type: images, max_items: 2}
    required: [prompt]
    price: {per_image: "0.03", date: "2026-12-07", source: "my reading"}
stills:
  - {id: s, model: cheap-image, prompt: x, images: [images/good.png]}
shots:
  - id: a
    model: kling-v3.0-std/image-to-video
    prompt: y
    image: {still: s}
"""


def test_a_declared_image_model_is_priced_per_image(root: Path) -> None:
    (root / "p.yaml").write_text(DECLARED)
    result = CliRunner().invoke(cli, ["plan", "p.yaml", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [(s["id"], s["model"], s["cost_usd"]) for s in doc["stills"]] == [("still:s", "cheap-image", 0.03)]
    assert doc["stages"]["stills"]["total_cost_usd"] == 0.03
    models = json.loads(CliRunner().invoke(cli, ["models", "p.yaml", "--json"]).stdout)
    cheap = next(m for m in models if m["id"] == "cheap-image")
    assert (cheap["output"], cheap["duration"], cheap["price_per_image_usd"]) == ("image", None, 0.03)


@pytest.mark.parametrize(
    ("edit", "path", "message"),
    [
        ("    output: image\n", "    output: image\n    duration: {min: 1, max: 2, default: 1}\n",
         "models.cheap-image.duration: an image model (output: image) has no duration"),
        ('{per_image: "0.03"', '{per_second: "0.03"',
         "models.cheap-image.price.per_second: an image model (output: image) is priced per_image, not per_second"),
        ("    output: image\n", "    output: video\n",
         "models.cheap-image: missing required key 'duration' (a video model's durations; "
         "an image model says output: image)"),
        ("      prompt: {type: text}\n", "      prompt: {type: text}\n      sound: {type: boolean}\n",
         "models.cheap-image.fields.sound: 'sound' is a video input; an image model (output: image) cannot take it"),
    ],
)  # fmt: skip
def test_declared_image_model_mistakes(root: Path, edit: str, path: str, message: str) -> None:
    text = DECLARED.replace(edit, path)
    found = refused(root, text)
    assert any(f"{p}: {m}" == message for _, p, m in found), found


def test_pricing_overrides_an_image_models_price_per_image(root: Path) -> None:
    text = HEAD + 'pricing:\n  bytedance/seedream-v4.5: {per_image: "0.05"}\n'
    (root / "p.yaml").write_text(text)
    doc = json.loads(CliRunner().invoke(cli, ["plan", "p.yaml", "--json"]).stdout)
    assert {s["id"]: s["cost_usd"] for s in doc["stills"]} == {"still:hero": 0.05, "still:edit": 0.04}
    bad = HEAD + 'pricing:\n  bytedance/seedream-v4.5: {per_second: "0.05"}\n'
    assert refused(root, bad) == [
        (line_of(bad, "bytedance/seedream-v4.5: {per"), "pricing.bytedance/seedream-v4.5",
         "bytedance/seedream-v4.5 is an image model, priced per_image, not per_second"),
    ]  # fmt: skip


def test_a_stills_size_is_checked_against_the_image_limits_of_the_model_it_feeds(root: Path) -> None:
    text = HEAD.replace("    prompt: a mug\n", '    prompt: a mug\n    size: "2048*512"\n')
    aspect = "needs an aspect ratio between 1:2.5 and 2.5:1"
    assert refused(root, text) == [
        (line_of(text, "image: {still: hero}"), "shots[0].image",
         f"still hero (2048x512, its size): kling-v3.0-std/image-to-video {aspect}"),
    ]  # fmt: skip
    text = HEAD.replace("    prompt: a mug\n", '    prompt: a mug\n    size: "256*256"\n')
    assert [m for _, _, m in refused(root, text)] == [
        "still hero (256x256, its size): kling-v3.0-std/image-to-video needs at least 300 px a side"
    ]
