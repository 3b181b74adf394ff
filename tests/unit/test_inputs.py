"""Hostile and careless inputs found at validate, before anything is paid for (issue 12):
bounded YAML, a project file that must be a small regular file, numbers that must be finite,
trims that keep a frame, images decoded fully, reference media probed, ids on one line,
encodable text, declared --var names, and the YAML/transition messages of issue 13.

Each case goes through the real CLI and must exit 2 with one located line per problem
(``error: <file>:<line>[:<column>]: ...``) and write nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from mediagen import make_audio, make_clip

from kling_render.cli import cli
from kling_render.project import media
from kling_render.project.document import MAX_FILE_BYTES

LOCATED = re.compile(r"^error: (?P<file>\S+\.yaml):(?P<line>\d+)(?::(?P<col>\d+))?: (?P<rest>.+)$")

SHOT = "  - id: {id}\n    model: kling-video-o3-std/image-to-video\n    prompt: {prompt}\n    image: images/good.png\n"


def project(*shots: str, head: str = "", tail: str = "") -> str:
    body = "".join(shots) or SHOT.format(id="a", prompt="x")
    return f"version: 1\nname: t\nprovider: local\nvars: {{product: mug}}\n{head}shots:\n{body}{tail}"


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def refused(root: Path, text: str | None, *args: str, command: str = "validate") -> list[tuple[int, int, str]]:
    """Run ``command`` on root/p.yaml (written from ``text`` unless None); assert exit 2, only
    located error lines, nothing written; return (line, column, rest) per error."""
    path = root / "p.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    before = listing(root)
    result = CliRunner().invoke(cli, [command, str(path), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith("nothing was written"), result.stderr
    out = []
    for line in lines[:-1]:
        m = LOCATED.match(line)
        assert m, f"not a located line: {line!r}"
        out.append((int(m["line"]), int(m["col"] or 0), m["rest"]))
    assert listing(root) == before, "a refused command must write nothing"
    return out


@pytest.fixture
def root(image_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(image_dir)
    return image_dir


# -- YAML: bounded, and errors located where the construct began -------------------------------


def laughs(levels: int = 9) -> str:
    lines = ["v0: &v0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"v{i}: &v{i} [" + ", ".join([f"*v{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_stops_early(root: Path) -> None:
    started = time.monotonic()
    errors = refused(root, project(tail=f"x-laughs:\n  {laughs().replace(chr(10), chr(10) + '  ')}"))
    assert any("aliases expand to more than 1,000,000 values" in rest for _, _, rest in errors), errors
    assert time.monotonic() - started < 10


def test_merge_key_laughs_are_counted_too(root: Path) -> None:
    lines = ["  m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
    for i in range(1, 8):
        merged = ", ".join([f"*m{i - 1}"] * 10)
        lines.append(f"  m{i}: &m{i} {{k{i}: [" + ", ".join(f"*m{i - 1}" for _ in range(10)) + f"], <<: [{merged}]}}")
    errors = refused(root, project(head="vars:\n" + "\n".join(lines) + "\n").replace("vars: {product: mug}\n", ""))
    assert any("aliases expand to more than" in rest for _, _, rest in errors), errors


def test_recursive_alias(root: Path) -> None:
    text = project(SHOT.format(id="a", prompt="x") + "    element_list: &loop [1, *loop]\n")
    errors = refused(root, text)
    assert [(line, rest) for line, _, rest in errors] == [
        (10, "shots[0].element_list[1]: invalid YAML: a recursive alias (an anchor used inside itself)")
    ]


@pytest.mark.parametrize("style", ["flow", "block"])
def test_400_deep_nesting(root: Path, style: str) -> None:
    if style == "flow":
        deep = "    element_list: " + "[" * 400 + "]" * 400 + "\n"
    else:
        deep = "    element_list:\n" + "".join(" " * (6 + i) + f"- k{i}:\n" for i in range(0, 800, 2))
    errors = refused(root, project(SHOT.format(id="a", prompt="x") + deep))
    assert len(errors) == 1 and "nested more than 64 levels deep" in errors[0][2], errors


@pytest.mark.parametrize(
    "value", ["9" * 5000, "-" + "9" * 5000, "0x" + "f" * 5000, "0b" + "1" * 200, "99999999999999999999"]
)
def test_huge_integers(root: Path, value: str) -> None:
    errors = refused(root, project(SHOT.format(id="a", prompt="x") + f"    take: {value}\n"))
    assert len(errors) == 1, errors
    assert errors[0][2].startswith("shots[0].take: ") and "too large an integer (at most 64 bits)" in errors[0][2]
    assert len(errors[0][2]) < 300


def test_binary_is_refused_and_dates_stay_text(root: Path) -> None:
    errors = refused(root, project(head="x: !!binary aGVsbG8=\n"))
    assert errors == [(5, 4, "x: binary data (!!binary) is not supported")]
    (root / "p.yaml").write_text(
        project(SHOT.format(id="a", prompt='"on {{ day }}"')).replace("{product: mug}", "{day: 2024-05-01}")
    )
    result = CliRunner().invoke(cli, ["plan", "p.yaml", "--json"])
    assert result.exit_code == 0, result.output


def test_yaml_error_at_the_broken_line_naming_where_the_construct_began(root: Path) -> None:
    errors = refused(root, project(SHOT.format(id="a", prompt="{{ product }}, slow push-in")))
    ((line, _, rest),) = errors
    assert line == 8, errors  # the broken line (`prompt: {{ product }}, ...`), not the shot's start
    assert rest.startswith("invalid YAML: ") and "starts at line 6, column 5" in rest
    assert rest.endswith("values starting with {{ must be quoted")


def test_an_unquoted_template_value_names_itself(root: Path) -> None:
    errors = refused(root, project(SHOT.format(id="a", prompt="{{ product }}")))
    assert errors == [
        (8, 13, "shots[0].prompt: {{ product }} reads as a YAML mapping: values starting with {{ must be quoted")
    ]


def test_unclosed_flow_sequence_points_at_its_bracket(root: Path) -> None:
    errors = refused(root, "version: 1\nname: t\nshots: [unclosed\nx: 1\n")
    assert [(line, column) for line, column, _ in errors] == [(3, 8)]
    assert "this [ is never closed (did not find expected ',' or ']')" in errors[0][2]
    assert "line 4, column 2" in errors[0][2]
    assert "{{" not in errors[0][2]


def test_tabs_get_a_hint(root: Path) -> None:
    ((_, _, rest),) = refused(root, "version: 1\nname: t\nshots:\n\t- id: a\n")
    assert rest.endswith("indent with spaces, not tabs")


# -- the project file itself ---------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kling_render", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_special_files_are_refused_unread(root: Path, kind: str) -> None:
    path = root / "p.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    for command in ("validate", "plan", "render"):
        done = run_cli(command, "p.yaml", cwd=root)  # a FIFO opened for reading would block: timeout=60
        assert done.returncode == 2, done.stderr
        assert "is not a regular file" in done.stderr and "Traceback" not in done.stderr
        assert done.stderr.startswith("error: p.yaml: ")
    assert not (root / ".kling-render").exists() and not (root / "p.lock").exists()


def test_oversized_project_file(root: Path) -> None:
    path = root / "p.yaml"
    with path.open("w") as fh:
        fh.write(project())
        fh.write(("# " + "x" * 1022 + "\n") * (MAX_FILE_BYTES // 1024 + 1))
    done = run_cli("validate", "p.yaml", cwd=root)
    assert done.returncode == 2
    assert "a project file may be at most 16 MB" in done.stderr


# -- numbers: finite everywhere --------------------------------------------------------------------

WITH_TRIM = SHOT.format(id="b", prompt="y") + "    trim: {start: 0.5, end: 2.5}\n"
NON_FINITE = {
    "shots[0].cfg_scale": project(
        "  - id: a\n    model: kling-v3.0-pro/image-to-video\n    prompt: x\n    image: images/good.png\n"
        "    cfg_scale: VALUE\n"
    ),
    "shots[0].trim.start": project(SHOT.format(id="a", prompt="x") + "    trim: {start: VALUE}\n"),
    "shots[0].trim.end": project(SHOT.format(id="a", prompt="x") + "    trim: {end: VALUE}\n"),
    "shots[1].transition.duration": project(
        SHOT.format(id="a", prompt="x"),
        SHOT.format(id="b", prompt="y") + "    transition: {type: fade, duration: VALUE}\n",
    ),
    "defaults.transition.duration": project(head="defaults: {transition: {type: fade, duration: VALUE}}\n"),
    "audio.music_volume": project(tail="audio: {music_volume: VALUE}\n"),
    "budget.max_usd": project(head="budget: {max_usd: VALUE}\n"),
    "pricing.kling-video-o3-std/image-to-video.per_second": project(
        head="pricing: {kling-video-o3-std/image-to-video: {per_second: VALUE}}\n"
    ),
    "vars.ratio": project(head="").replace("{product: mug}", "{product: mug, ratio: VALUE}"),
    "shots[0].element_list[1]": project(SHOT.format(id="a", prompt="x") + "    element_list: [1, VALUE]\n"),
    "shots[0].duration": project(SHOT.format(id="a", prompt="x") + "    duration: VALUE\n"),
    "shots[0].take": project(SHOT.format(id="a", prompt="x") + "    take: VALUE\n"),
    "output.fps": project(tail="output: {fps: VALUE}\n"),
    "output.width": project(tail="output: {width: VALUE}\n"),
}


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
@pytest.mark.parametrize("where", sorted(NON_FINITE))
def test_numbers_must_be_finite(root: Path, where: str, value: str) -> None:
    errors = refused(root, NON_FINITE[where].replace("VALUE", value))
    messages = [rest for _, _, rest in errors if rest.startswith(where + ": ")]
    assert messages, errors
    assert "not a finite number" in messages[0], messages


def test_a_trim_must_keep_a_frame(root: Path) -> None:
    text = project(SHOT.format(id="a", prompt="x") + "    trim: {start: 1, end: 1.02}\n")
    errors = refused(root, text)
    assert [rest for _, _, rest in errors] == ["shots[0].trim: keeps 0.02 s, less than one frame at 24 fps"]
    (root / "p.yaml").write_text(text + "output: {fps: 60}\n")  # 0.02 s is more than a frame at 60 fps
    assert CliRunner().invoke(cli, ["validate", "p.yaml"]).exit_code == 0


# -- transitions: no spurious error when the previous shot is broken (issue 13) -------------------


def test_no_transition_error_after_a_broken_shot(root: Path) -> None:
    broken = SHOT.format(id="a", prompt="x") + "    duration: 99\n"
    faded = SHOT.format(id="b", prompt="y") + "    transition: {type: fade, duration: 0.5}\n"
    errors = refused(root, project(broken, faded))
    assert [rest.split(":")[0] for _, _, rest in errors] == ["shots[0].duration"], errors
    rule_broken = SHOT.format(id="a", prompt="x") + "    cfg_scale: 0.5\n"  # not taken by O3
    errors = refused(root, project(rule_broken, faded))
    assert [rest.split(":")[0] for _, _, rest in errors] == ["shots[0].cfg_scale"], errors
    first = SHOT.format(id="a", prompt="x") + "    transition: {type: fade}\n"
    errors = refused(root, project(first, faded))
    assert [rest for _, _, rest in errors] == [
        "shots[0].transition: the first shot has no previous shot to transition from"
    ]


# -- one line per id / name / key ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("shots[0].id", project(SHOT.format(id='"a\\n"', prompt="x"))),
        (
            "shots[0].id",
            project(
                "  - id: |\n      a\n"
                "    model: kling-video-o3-std/image-to-video\n    prompt: x\n    image: images/good.png\n"
            ),
        ),
        ("name", project().replace("name: t\n", 'name: "t\\n"\n')),
    ],
)
def test_ids_and_names_cannot_end_in_a_newline(root: Path, where: str, text: str) -> None:
    errors = refused(root, text)
    assert any(rest.startswith(f"{where}: ") and "contains a line break" in rest for _, _, rest in errors), errors


@pytest.mark.parametrize("key", ['"product\\n"', '"base\\n"'])
def test_variable_and_snippet_names_cannot_end_in_a_newline(root: Path, key: str) -> None:
    text = (
        project(head=f"prompts: {{{key}: x}}\n")
        if "base" in key
        else project().replace("{product: mug}", f"{{{key}: mug}}")
    )
    errors = refused(root, text)
    assert any("contains a line break" in rest for _, _, rest in errors), errors


def test_published_patterns_cannot_match_a_newline() -> None:
    # the package's copy; the published one is generated from it (test_plan.py checks they match)
    text = (Path(__file__).resolve().parents[2] / "kling_render" / "data" / "project.schema.json").read_text()
    patterns = [v for k, v in _walk(json.loads(text)) if k == "pattern"]
    assert len(patterns) >= 7
    for pattern in patterns:
        assert pattern.endswith("(?![\\s\\S])"), pattern  # ECMA-262 and Python: the end of the text
        assert not re.search(pattern, "a\n") and not re.search(pattern, "1\n")


def _walk(doc: object) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += [(k, v), *_walk(v)]
    elif isinstance(doc, list):
        for v in doc:
            out += _walk(v)
    return out


# -- text that cannot be encoded -------------------------------------------------------------------


def test_a_lone_surrogate_from_a_template_is_refused(root: Path) -> None:
    errors = refused(root, project(SHOT.format(id="a", prompt="\"{{ 'x\\\\ud800' }}\"")))
    assert [rest for _, _, rest in errors] == [
        "shots[0].prompt: template error: the text has a lone surrogate (U+D800) and cannot be sent"
    ]


def test_a_var_that_is_not_utf8_is_refused(root: Path) -> None:
    (root / "p.yaml").write_text(project(SHOT.format(id="a", prompt='"{{ product }}"')))
    done = subprocess.run(
        [sys.executable, "-m", "kling_render", "plan", "p.yaml", "--var", b"product=caf\xe9"],
        cwd=root, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode().strip() == "error: --var product: the value is not valid UTF-8 text"
    assert not (root / ".kling-render").exists()


# -- --var must name a declared variable -----------------------------------------------------------


def test_an_undeclared_var_is_an_error_with_a_suggestion(root: Path) -> None:
    text = project(SHOT.format(id="a", prompt='"{{ product }}"'))
    errors = refused(root, text, "--var", "prodcut=cup", command="plan")
    assert errors == [(4, 0, "vars: --var prodcut is not declared under vars (did you mean 'product'?)")]
    errors = refused(root, text.replace("vars: {product: mug}\n", ""), "--var", "x=1")
    assert errors[0][2] == "vars: --var x is not declared under vars (the project declares no variables)"
    (root / "p.yaml").write_text(text)
    ok = CliRunner().invoke(cli, ["validate", "p.yaml", "--var", "product=cup"])
    assert ok.exit_code == 0, ok.output


# -- images: decoded fully, bombs refused, each decoded once ---------------------------------------


def test_a_truncated_png_is_found_at_validate(root: Path) -> None:
    good = (root / "images" / "good.png").read_bytes()
    (root / "images" / "cut.png").write_bytes(good[: len(good) // 2])
    errors = refused(root, project(SHOT.format(id="a", prompt="x").replace("good.png", "cut.png")))
    assert len(errors) == 1 and "cut.png is damaged or truncated" in errors[0][2], errors


def test_a_truncated_jpeg_is_found_at_validate(root: Path) -> None:
    from PIL import Image

    Image.effect_noise((640, 360), 64).convert("RGB").save(root / "images" / "full.jpg", quality=90)
    data = (root / "images" / "full.jpg").read_bytes()
    (root / "images" / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    errors = refused(root, project(SHOT.format(id="a", prompt="x").replace("good.png", "cut.jpg")))
    assert len(errors) == 1 and "cut.jpg is damaged or truncated" in errors[0][2], errors


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` 1-bit pixels (and holds none): a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [9500, 30000])  # over Pillow's warning threshold, and over its error threshold
def test_a_decompression_bomb_is_refused_undecoded(root: Path, side: int) -> None:
    (root / "images" / "bomb.png").write_bytes(png_header_only(side, side))
    errors = refused(root, project(SHOT.format(id="a", prompt="x").replace("good.png", "bomb.png")))
    assert len(errors) == 1, errors
    assert f"bomb.png has {side * side:,} pixels; images over 89,478,485 pixels are refused" in errors[0][2]


def test_images_shared_by_many_shots_are_decoded_once_each(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = media._read_image

    def counting(path: Path) -> media.ImageInfo:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(media, "_read_image", counting)
    names = ["good.png", "wide.png", "pic.webp"]
    shots = [
        SHOT.format(id=f"s{i}", prompt="x")
        .replace("good.png", names[i % 3])
        .replace(
            "kling-video-o3-std/image-to-video",
            "kling-video-o1-std/image-to-video" if i % 2 else "kling-video-o3-std/image-to-video",
        )
        for i in range(60)
    ]
    (root / "p.yaml").write_text(project(*shots))
    result = CliRunner().invoke(cli, ["validate", "p.yaml"])
    assert result.exit_code in (0, 2), result.output
    assert sorted(p.name for p in calls) == sorted(names)


# -- reference video and music: probed at validate ------------------------------------------------

REF = (
    "  - id: r\n    model: kling-video-o3-std/reference-to-video\n    prompt: x\n    video: clips/{name}\n"
    "    images: [images/good.png]\n"
)


def test_a_reference_video_that_is_not_media(root: Path) -> None:
    (root / "clips").mkdir()
    (root / "clips" / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    errors = refused(root, project(REF.format(name="junk.mp4")))
    assert len(errors) == 1 and errors[0][2].startswith("shots[0].video: junk.mp4 is not readable media ("), errors
    assert "0x" not in errors[0][2] and str(root) not in errors[0][2]


def test_a_reference_video_without_a_picture(root: Path) -> None:
    (root / "clips").mkdir()
    make_audio(root / "clips" / "sound.mp4", duration=0.5)
    errors = refused(root, project(REF.format(name="sound.mp4")))
    assert [rest for _, _, rest in errors] == ["shots[0].video: sound.mp4 has no video stream"]


def test_music_that_is_not_audio(root: Path) -> None:
    (root / "audio").mkdir()
    (root / "audio" / "bed.mp3").write_bytes(b"ID3" + os.urandom(3000))
    make_clip(root / "audio" / "silent.m4a", duration=0.5, audio=False, width=64, height=36)
    errors = refused(root, project(tail="audio: {music: audio/bed.mp3}\n"))
    assert len(errors) == 1 and errors[0][2].startswith("audio.music: bed.mp3 is not readable media"), errors
    errors = refused(root, project(tail="audio: {music: audio/silent.m4a}\n"))
    assert [rest for _, _, rest in errors] == ["audio.music: silent.m4a has no audio stream"]


def test_media_is_probed_once_per_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe_module = importlib.import_module("kling_render.media.probe")

    calls: list[Path] = []
    real = probe_module.probe

    def counting(path: Path) -> probe_module.MediaInfo:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(probe_module, "probe", counting)
    (root / "clips").mkdir()
    shutil.copy(root / "images" / "ref.mp4", root / "clips" / "ref.mp4")
    shots = [REF.format(name="ref.mp4").replace("id: r", f"id: r{i}") for i in range(20)]
    (root / "p.yaml").write_text(project(*shots))
    result = CliRunner().invoke(cli, ["validate", "p.yaml"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in calls] == ["ref.mp4"]
