"""Issue 15 item 1: hostile rows tables. ``validate`` of a rows: project whose data file is fuzzed
(CSV pieces that break quoting, ragged records, NULs, stray carriage returns, a byte-order mark in
the middle, formula-ish cells, random bytes; a YAML/JSON list of odd values) never crashes: exit 0,
or exit 2 with every error naming the data file (or the project file) and a line. Runs in-process."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kling_render.cli import cli

WORK = Path(tempfile.mkdtemp(prefix="kling-fuzz-rows-"))
(WORK / "images").mkdir()
(WORK / "data").mkdir()
Image.new("RGB", (640, 360), (10, 20, 30)).save(WORK / "images" / "a.png")
PROJECT_TEXT = """\
version: 1
name: fuzz
rows: {from: data/t.SUFFIX, key: sku}
defaults: {model: kling-v3.0-std/image-to-video, duration: 3}
shots:
  - id: intro
    prompt: "the studio"
    image: images/a.png
  - id: hero
    prompt: "the {{ row.name }}"
    image: images/a.png
output: {path: "renders/{{ row.sku }}.mp4", width: 320, height: 180}
"""
ERROR_LINE = re.compile(r"^error: \S*(data/t\.(csv|yaml|json)|project\.yaml):\d+(?::\d+)?: ")

PIECES = st.sampled_from(
    [
        "sku", "name", "sku,name", "sku,name\n", ",", ",,", "\n", "\r\n", "\r", '"', '""', '"a,b"', '"x\ny"',
        "\x00", "\ufeff", "mug-01", "MUG-01", "mug 01", "../x", "con", "=HYPERLINK(\"http://x\",\"y\")",
        "+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3", "{{ 7*7 }}", "{% raw %}", "`", "|", "\t", "é", "\u202e",
        "x" * 300, "a-1,Blue Mug\n", "a-2,Red\n", "sku,name,name\n", " sku,name\n",
    ]
)  # fmt: skip
CSVISH = st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=40).map("".join)
SCALAR = st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner))
LISTISH = st.one_of(
    st.lists(st.dictionaries(st.sampled_from(["sku", "name", "SKU", "x"]), VALUE, max_size=4), max_size=5),
    VALUE,
)


def check(data: bytes, suffix: str) -> None:
    for old in (WORK / "data").iterdir():
        old.unlink()
    (WORK / "data" / f"t.{suffix}").write_bytes(data)
    project = WORK / "project.yaml"
    project.write_text(PROJECT_TEXT.replace("SUFFIX", suffix))
    result = CliRunner().invoke(cli, ["validate", str(project)])
    output = result.output
    assert result.exit_code in (0, 2), (result.exit_code, output, data)
    assert "Traceback" not in output and "internal error" not in output, (output, data)
    if result.exit_code == 2:
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        assert errors, (output, data)
        bad = [line for line in errors if not ERROR_LINE.match(line)]
        assert not bad, (bad, data)
    assert not (WORK / "renders").exists() and not (WORK / "project.lock").exists()


FAST = settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=3000, derandomize=False, deadline=None, suppress_health_check=list(HealthCheck))


def test_the_valid_table_is_valid() -> None:
    check(b"sku,name\na-1,Blue Mug\na-2,Red Mug\n", "csv")
    assert CliRunner().invoke(cli, ["validate", str(WORK / "project.yaml")]).exit_code == 0


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n\r\n", b"sku,name", b'"', b"\x00\x00"])
def test_degenerate_files(data: bytes) -> None:
    check(data, "csv")
    assert CliRunner().invoke(cli, ["validate", str(WORK / "project.yaml")]).exit_code == 2


@FAST
@given(CSVISH)
def test_csvish_tables(text: str) -> None:
    check(b"sku,name\n" + text.encode("utf-8", "surrogatepass"), "csv")


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_after_a_header(data: bytes) -> None:
    check(b"sku,name\n" + data, "csv")


@FAST
@given(LISTISH, st.sampled_from(["yaml", "json"]))
def test_list_tables(value: object, suffix: str) -> None:
    text = json.dumps(value, allow_nan=True)  # JSON is YAML too (flow style)
    check(text.encode(), suffix)


@pytest.mark.slow
@SLOW
@given(st.one_of(CSVISH, st.text(max_size=400)))
def test_fuzz_many_tables(text: str) -> None:
    check(text.encode("utf-8", "surrogatepass"), "csv")
