"""Kling 4.0 inputs, validated as exactly as the v3 models: durations 3-30, resolution and HDR per
provider, keyframes, reference files and their @Image1/@Video1/@Audio1 tags, prices by resolution,
and video-extend continuing another shot's clip (``video: {from: SHOT}``)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_image
from mediagen import make_clip

from kling_render.cli import cli
from kling_render.errors import ProjectError
from kling_render.plan.keys import wire_for_key
from kling_render.project.loader import load_project
from kling_render.project.project import cost_of, missing_price


def project(tmp_path: Path, shots: str, head: str = "", provider: str = "wavespeed") -> Path:
    path = tmp_path / "project.yaml"
    path.write_text(f"version: 1\nname: p\nprovider: {provider}\n{head}shots:\n{shots}")
    return path


def sent(shot: object, provider: str) -> dict[str, object]:
    """The wire body a provider gets, media by their URLs (as in the key)."""
    return wire_for_key(shot.wire(provider))  # type: ignore[attr-defined]


def errors(path: Path) -> list[str]:
    with pytest.raises(ProjectError) as info:
        load_project(path)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


T2V = "  - {id: a, model: kling-v4.0/text-to-video, prompt: a mug"


def test_durations_run_from_3_to_30(tmp_path: Path) -> None:
    shot = load_project(project(tmp_path, T2V + ", duration: 30}\n")).shots[0]
    assert shot.duration == 30 and sent(shot, "wavespeed")["duration"] == 30 and sent(shot, "fal")["duration"] == 30
    assert errors(project(tmp_path, T2V + ", duration: 31}\n")) == [
        "shots[0].duration: 31 is not allowed for kling-v4.0/text-to-video (3–30)"
    ]
    assert errors(project(tmp_path, T2V + ", duration: 2}\n")) == [
        "shots[0].duration: 2 is not allowed for kling-v4.0/text-to-video (3–30)"
    ]


def test_resolution_and_hdr_are_checked_per_provider(tmp_path: Path) -> None:
    shot = load_project(project(tmp_path, T2V + ", resolution: 4k, dynamic_range: hdr}\n")).shots[0]
    assert sent(shot, "wavespeed") == {
        "prompt": "a mug", "aspect_ratio": "16:9", "resolution": "4k", "dynamic_range": "hdr", "duration": 5,
    }  # fmt: skip
    assert shot.tier == "4k hdr"
    assert errors(project(tmp_path, T2V + ", dynamic_range: hdr}\n")) == [
        "shots[0].dynamic_range: HDR needs resolution 1080p or 4k"
    ]
    assert errors(project(tmp_path, T2V + ", resolution: 8k}\n")) == [
        "shots[0].resolution: '8k' is not one of 720p, 1080p, 4k"
    ]
    on_fal = errors(project(tmp_path, T2V + ", resolution: 4k, dynamic_range: hdr}\n", provider="fal"))
    assert on_fal == [
        "shots[0].dynamic_range: dynamic_range is not taken by kling-v4.0/text-to-video on fal (wavespeed takes it)",
        "shots[0].resolution: '4k' is not taken by kling-v4.0/text-to-video on fal, which takes 720p, 1080p "
        "(wavespeed takes it)",
    ]
    # The default is sent explicitly, in each provider's form.
    shot = load_project(project(tmp_path, T2V + "}\n", provider="fal")).shots[0]
    assert sent(shot, "fal") == {"prompt": "a mug", "aspect_ratio": "16:9", "resolution": "720p", "duration": 5}


def test_prices_go_by_resolution_and_what_is_not_published_must_be_declared(tmp_path: Path) -> None:
    path = project(tmp_path, T2V + ", resolution: 1080p, duration: 10}\n  - {id: b, model: kling-v4.0/text-to-video,"
                   " prompt: x, resolution: 4k}\n")  # fmt: skip
    loaded = load_project(path)
    a, b = loaded.shots
    assert cost_of(a, loaded.prices, "wavespeed") == Fraction("2.35") == cost_of(a, loaded.prices, "fal")
    assert cost_of(b, loaded.prices, "wavespeed") is None
    assert missing_price(b, loaded.prices, "wavespeed") == (
        "no 4k price for kling-v4.0/text-to-video (none is published): add it under pricing: "
        "(per_second_by_resolution: {4k: ...})"
    )
    head = "pricing:\n  kling-v4.0/text-to-video: {wavespeed: {per_second_by_resolution: {4k: 0.47}}}\n"
    priced = load_project(project(tmp_path, T2V + ", resolution: 4k}\n", head=head))
    assert cost_of(priced.shots[0], priced.prices, "wavespeed") == Fraction("2.35")
    refused = project(tmp_path, T2V + "}\n", head="pricing:\n  kling-v4.0/video-extend: {fal: {per_second: 1}}\n")
    assert errors(refused) == ["pricing.kling-v4.0/video-extend.fal: fal does not offer kling-v4.0/video-extend "
                               "(offered by wavespeed)"]  # fmt: skip


def test_image_to_video_takes_keyframes(tmp_path: Path) -> None:
    frames = ", ".join(f"https://e.com/{n}.png" for n in range(8))
    shot = load_project(project(
        tmp_path, f"  - {{id: a, model: kling-v4.0/image-to-video, image: https://e.com/a.png, keyframes: [{frames}],"
        " end_image: https://e.com/z.png}\n",
    )).shots[0]  # fmt: skip
    assert sent(shot, "wavespeed")["keyframes"] == [f"https://e.com/{n}.png" for n in range(8)]
    assert sent(shot, "wavespeed")["last_image"] == "https://e.com/z.png" and "prompt" not in sent(shot, "wavespeed")
    fal = sent(shot, "fal")
    assert fal["start_image_url"] == "https://e.com/a.png" and len(fal["middle_image_urls"]) == 8
    assert fal["end_image_url"] == "https://e.com/z.png" and fal["duration"] == 5
    nine = frames + ", https://e.com/9.png"
    assert errors(project(
        tmp_path, f"  - {{id: a, model: kling-v4.0/image-to-video, image: https://e.com/a.png, keyframes: [{nine}]}}\n"
    )) == ["shots[0].keyframes: 9 images; kling-v4.0/image-to-video takes at most 8"]  # fmt: skip


def test_reference_files_their_limits_and_their_tags(tmp_path: Path) -> None:
    r2v = "  - {id: a, model: kling-v4.0/reference-to-video"
    images = ", ".join(f"https://e.com/{n}.png" for n in range(10))
    videos = ", ".join(f"https://e.com/{n}.mp4" for n in range(5))
    ok = load_project(project(tmp_path, f"{r2v}, prompt: '@Image2 walks like @Video1', images: [{images}],"
                                        f" videos: [{videos}]}}\n")).shots[0]  # fmt: skip
    assert ok.with_video and len(sent(ok, "wavespeed")["images"]) == 10
    assert errors(project(tmp_path, f"{r2v}, prompt: x, images: [{images}], videos: [{videos}],"
                                    " audios: [https://e.com/a.mp3]}\n")) == [
        "shots[0].images: 10 images + 5 videos + 1 audios files; kling-v4.0/reference-to-video takes at most 15 in all"
    ]  # fmt: skip
    assert errors(project(tmp_path, f"{r2v}, prompt: '@Image3 and @Audio1', images: [https://e.com/a.png,"
                                    " https://e.com/b.png]}\n")) == [
        "shots[0].prompt: @Audio1 names a file the shot does not give (no audios)",
        "shots[0].prompt: @Image3 names a file the shot does not give (2 images)",
    ]  # fmt: skip
    # keep_original_sound is sent only with reference videos (it keeps their own sound).
    alone = f"{r2v}, prompt: x, images: [https://e.com/a.png], keep_original_sound: true}}\n"
    assert "keep_original_sound" not in sent(load_project(project(tmp_path, alone)).shots[0], "wavespeed")
    both = f"{r2v}, prompt: x, videos: [https://e.com/v.mp4], keep_original_sound: true}}\n"
    assert sent(load_project(project(tmp_path, both)).shots[0], "wavespeed")["keep_original_sound"] is True


def test_a_reference_audio_must_last_5_to_30_seconds(tmp_path: Path) -> None:
    from kling_render.media.ffmpeg import run

    run(["-y", "-f", "lavfi", "-i", "sine=duration=3", str(tmp_path / "short.m4a")], "a short audio")
    run(["-y", "-f", "lavfi", "-i", "sine=duration=6", str(tmp_path / "fine.m4a")], "an audio")
    r2v = "  - {id: a, model: kling-v4.0/reference-to-video, prompt: '@Audio1 sings', images: [https://e.com/a.png]"
    assert load_project(project(tmp_path, r2v + ", audios: [fine.m4a]}\n")).shots[0].params["audios"][0].path
    assert errors(project(tmp_path, r2v + ", audios: [short.m4a]}\n")) == [
        "shots[0].audios[0]: short.m4a lasts 3.0 s; each must last at least 5 s"
    ]


def test_video_edit_has_no_published_price(tmp_path: Path) -> None:
    make_clip(tmp_path / "in.mp4", duration=3.0, width=64, height=36)
    path = project(tmp_path, "  - {id: a, model: kling-v4.0/video-edit, prompt: 'make @Video1 snowy', video: in.mp4}\n")
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exit_code == 2
    assert "shots[0].model: no price for kling-v4.0/video-edit: add it under pricing:" in result.stderr
    priced = path.read_text().replace("shots:", "pricing:\n  kling-v4.0/video-edit: {per_second: 0.2}\nshots:")
    path.write_text(priced)
    assert CliRunner().invoke(cli, ["plan", str(path)]).exit_code == 0


EXTEND = """\
  - {id: first, model: kling-v3.0-std/image-to-video, prompt: "shot first", image: images/a.png, duration: 3}
  - {id: more, model: kling-v4.0/video-extend, prompt: "shot more", video: {from: first}, duration: 3}
"""


def test_video_from_another_shot_is_checked(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "a.png", 640, 360)
    load_project(project(tmp_path, EXTEND))
    assert errors(project(tmp_path, EXTEND.replace("{from: first}", "{from: frist}"))) == [
        "shots[1].video.from: no shot named 'frist' (did you mean 'first'?)"
    ]
    assert errors(project(tmp_path, EXTEND.replace("{from: first}", "{from: more}"))) == [
        "shots[1].video.from: a cycle: more → more (each waits for the next)"
    ]
    loop = EXTEND + '  - {id: back, model: kling-v4.0/video-extend, prompt: x, video: {from: more}}\n'
    loop = loop.replace("{from: first}", "{from: back}")
    assert errors(project(tmp_path, loop)) == [
        "shots[2].video.from: a cycle: more → back → more (each waits for the next)"
    ]
    assert errors(project(tmp_path, EXTEND.replace("{from: first}", "{frm: first}"))) == [
        "shots[1].video: missing required key 'from'", "shots[1].video.frm: unknown key 'frm' (did you mean 'from'?)"
    ]
    # A frame is an image input: a video field takes the whole clip.
    assert errors(project(tmp_path, EXTEND.replace("{from: first}", "{from: first, frame: last}"))) == [
        "shots[1].video.frame: unknown key 'frame' (did you mean 'from'?)"
    ]


@pytest.mark.usefixtures("small_local")  # small animatics: the order and the keys are the subject
def test_an_extended_clip_is_rendered_after_its_input_and_only_the_new_part_is_cut(tmp_path: Path) -> None:
    """Offline (local animatics): the plan says the extension waits for its input clip; the render
    makes that clip first, then the extension, its key naming the clip's digest, in one run."""
    make_image(tmp_path / "images" / "a.png", 640, 360)
    path = project(tmp_path, EXTEND, head="output: {path: renders/final.mp4, width: 192, height: 108, fps: 24}\n",
                   provider="local")  # fmt: skip
    runner = CliRunner()
    doc = json.loads(runner.invoke(cli, ["plan", str(path), "--json"]).stdout)
    more = doc["shots"][1]
    assert more["waits_for"] == ["first"] and more["status"] == "render" and more["key"] is None
    assert "the clip it continues comes from first" in more["reason"]
    assert doc["to_render_cost_usd"] == pytest.approx(0.252 + 0.471)
    result = runner.invoke(cli, ["render", str(path), "--poll-interval", "0.05"])
    assert result.exit_code == 0, result.stderr
    after = json.loads(runner.invoke(cli, ["plan", str(path), "--json"]).stdout)
    assert [s["status"] for s in after["shots"]] == ["cached", "cached"]
    loaded = load_project(path)
    first_clip = next((tmp_path / ".kling-render" / "cache" / "local").rglob(f"{after['shots'][0]['key']}.mp4"))
    from kling_render.fsutil import sha256_file
    from kling_render.jobs import ClipRef, MediaRef
    from kling_render.plan.inputs import take_key

    assert loaded.shots[1].params["video"] == ClipRef("first")
    resolved = {**loaded.shots[1].params, "video": MediaRef(path=first_clip, sha256=sha256_file(first_clip))}
    assert take_key("local", loaded.shots[1], params=resolved) == after["shots"][1]["key"]


def test_a_frame_of_an_extended_clip_counts_from_its_new_part_as_the_cut_does(tmp_path: Path) -> None:
    """A video-extend clip holds its input then the new part; the cut keeps the new part (the last
    ``duration`` seconds, the trim within it), and a continuity frame is taken from that same range:
    ``first`` is the new part's first frame, not the input's."""
    from kling_render.jobs import FrameRef
    from kling_render.media.frames import ClipFrames
    from kling_render.plan.inputs import ClipFacts, frame_position

    make_image(tmp_path / "images" / "a.png", 640, 360)
    shots = EXTEND + (
        '  - {id: next, model: kling-v3.0-std/image-to-video, prompt: "shot next", image: {from: more, frame: first},'
        " duration: 3}\n"
    )
    more = load_project(project(tmp_path, shots)).shot("more")
    clip = ClipFacts("c" * 64, ClipFrames(Fraction(24), 120), duration=5.0)  # 2 s of input, then 3 s new
    assert more.new_part_offset(clip.seconds) == pytest.approx(2.0)
    assert frame_position(FrameRef("more", "first"), more, clip) == 48
    assert frame_position(FrameRef("more", "last"), more, clip) == 119
    assert frame_position(FrameRef("more", 1.0), more, clip) == 72  # 1 s into the new part
    with_trim = shots.replace('shot more", video: {from: first}, duration: 3}',
                              'shot more", video: {from: first}, duration: 3, trim: {start: 0.5, end: 2.5}}')
    trimmed = load_project(project(tmp_path, with_trim)).shot("more")
    assert trimmed.trim.start == 0.5
    assert frame_position(FrameRef("more", "first"), trimmed, clip) == 60
    assert frame_position(FrameRef("more", "last"), trimmed, clip) == 107  # ceil((2 + 2.5) * 24) - 1
    first = load_project(project(tmp_path, shots)).shot("first")  # not an extension: from its start
    assert first.new_part_offset(3.0) == 0.0
    plain = ClipFacts("d" * 64, ClipFrames(Fraction(24), 72), duration=3.0)
    assert frame_position(FrameRef("first", "first"), first, plain) == 0
