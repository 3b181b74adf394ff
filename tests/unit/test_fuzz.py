"""Property-based fuzzing of project files: random YAML-ish text and structured mutations of a
valid project. No input may produce a traceback or an exit other than 0 or 2, and every exit 2
prints ``error: <file>:<line>: ...`` lines (SPEC §2, §3). ``validate`` runs in-process.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kling_render.cli import cli

WORK = Path(tempfile.mkdtemp(prefix="kling-fuzz-"))
(WORK / "images").mkdir()
Image.new("RGB", (640, 360), (10, 20, 30)).save(WORK / "images" / "a.png")
PROJECT = WORK / "project.yaml"
ERROR_LINE = re.compile(r"^error: \S*project\.yaml:\d+(?::\d+)?: ")  # line, and the column for YAML syntax

VALID: dict[str, Any] = {
    "version": 1,
    "name": "fuzz",
    "provider": "local",
    "budget": {"max_usd": 10},
    "vars": {"product": "mug", "light": "soft"},
    "prompts": {"base": "a {{ product }} in {{ light }} light"},
    "defaults": {"model": "kling-v3.0-std/image-to-video", "duration": 5, "sound": False},
    "shots": [
        {"id": "intro", "prompt": "{{ prompts.base }}, push-in", "image": "images/a.png"},
        {
            "id": "pour",
            "model": "kling-video-o3-std/image-to-video",
            "prompt": "pour {{ product }}",
            "image": "images/a.png",
            "end_image": "images/a.png",
            "duration": 4,
            "sound": True,
            "transition": {"type": "fade", "duration": 0.5},
            "trim": {"start": 0.25, "end": 3.75},
        },
        {
            "id": "story",
            "model": "kling-v3.0-pro/image-to-video",
            "image": "images/a.png",
            "multi_prompt": [{"prompt": "wide", "duration": 3}, {"prompt": "close", "duration": 2}],
            "negative_prompt": "blur",
            "cfg_scale": 0.6,
            "take": 2,
        },
        {
            "id": "hero",
            "model": "kling-video-o3-std/reference-to-video",
            "prompt": "spin",
            "images": ["images/a.png"],
            "aspect_ratio": "16:9",
        },
    ],
    "output": {"path": "renders/final.mp4", "width": 640, "height": 360, "fps": 24, "fit": "contain"},
}

JINJA = st.sampled_from(
    ["{{", "}}", "{%", "%}", "{#", "#}", "|", "(", ")", ".", "__class__", "attr", "range", "lipsum", "x", " ",
     "'", '"', "for", "endfor", "if", "set", "=", "*", "**", "%", "10**9", "product", "prompts", "shot", "self",
     "~", "[", "]", "'x'*99999", "|join", "|replace('x','yy')", "namespace()", "cycler", "|list", "none", "loop",
     "macro", "endmacro", "recursive", "in", "|random", "range(9)", "1e308*10", "'\\ud800'", "(1,)"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(JINJA, max_size=8).map("".join),
    st.sampled_from(["../../etc/passwd", "/etc/passwd", "https://x.invalid/a.png", "images/a.png", "ftp://x/y",
                     "file:///etc/passwd", "\x00", "é🎬", "16:9", "kling-video-o1-std/image-to-video", "1e400"]),
)  # fmt: skip
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``doc`` (keys and list indexes)."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for n, value in enumerate(doc):
            out += paths(value, (*prefix, n))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> str:
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(paths(doc)))
        action = draw(st.sampled_from(["replace", "delete", "add", "template"]))
        if not where:
            doc = draw(JUNK) if action == "replace" else doc
            continue
        parent: Any = doc
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        if action == "replace":
            parent[last] = draw(JUNK)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(JUNK)
        elif action == "template" and isinstance(parent, dict | list):
            parent[last] = draw(st.lists(JINJA, min_size=1, max_size=12).map("".join))
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:  # pragma: no cover - safe_dump takes any of the values drawn
        return "{}"


YAMLISH = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "version: 1\n",
                "shots:\n",
                "  - id: a\n",
                "    prompt: ",
                "name: x\n",
                "- ",
                ": ",
                "\t",
                "{",
                "}",
                "[",
                "]",
                "&a ",
                "*a ",
                "!!python/object:os.system ",
                "<<: ",
                "---\n",
                "...\n",
                "? ",
                "|\n",
                ">\n",
                "%YAML 1.2\n",
                "'",
                '"',
                "#",
                "\n",
                "  ",
                "{{ x }}",
                "!!binary ",
                "1e999",
                "0x1F",
                "~",
                "yes",
                "no",
                "\ufeff",
                "\u2028",
                "&r [*r]",
                ".nan",
                "-.inf",
                "9" * 30,
                "!!binary aGk=",
                "2024-01-01",
                "<<: *a",
                "[[[[[[[[",
            ]
        ),
        st.text(max_size=10),
    ),
    max_size=30,
).map("".join)


def check(text: str) -> None:
    PROJECT.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = CliRunner().invoke(cli, ["validate", str(PROJECT)])
    output = result.output
    assert result.exit_code in (0, 2), (result.exit_code, output, text)
    assert "Traceback" not in output and "internal error" not in output, (output, text)
    if result.exit_code == 2:
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        assert errors, (output, text)
        bad = [line for line in errors if not ERROR_LINE.match(line)]
        assert not bad, (bad, text)


FAST = settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=3000, derandomize=False, deadline=None, suppress_health_check=list(HealthCheck))


def test_valid_project_is_valid() -> None:
    check(yaml.safe_dump(VALID, sort_keys=False))
    result = CliRunner().invoke(cli, ["validate", str(PROJECT)])
    assert result.exit_code == 0, result.output


@FAST
@given(mutated())
def test_mutated_projects(text: str) -> None:
    check(text)


@FAST
@given(YAMLISH)
def test_yamlish_text(text: str) -> None:
    check(text)


@pytest.mark.slow
@SLOW
@given(st.one_of(mutated(), YAMLISH, st.text(max_size=400)))
def test_fuzz_many(text: str) -> None:
    check(text)


@FAST
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    PROJECT.write_bytes(b"version: 1\nname: x\n" + data)
    result = CliRunner().invoke(cli, ["validate", str(PROJECT)])
    assert result.exit_code in (0, 2), (result.exit_code, result.output, data)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors and all(ERROR_LINE.match(line) for line in errors), (result.output, data)
