"""Broken project files: each gets exit 2, one located line per error, no traceback, nothing written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kling_render.cli import cli

BROKEN = Path(__file__).parents[1] / "broken"
CASES = sorted(p.stem for p in BROKEN.glob("*.yaml"))
ERROR_LINE = re.compile(r"^error: (?P<file>[^:]+\.yaml):(?P<line>\d+)(?::\d+)?: (?P<rest>.+)$")


def _expectation(name: str) -> str:
    sidecar = BROKEN / f"{name}.expect"
    if sidecar.exists():
        return sidecar.read_text().strip()
    first = (BROKEN / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("# expect: "), name
    return first.removeprefix("# expect: ")


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_there_are_at_least_30_broken_projects() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("command", ["validate", "plan"])
@pytest.mark.parametrize("name", CASES)
def test_broken_project(
    name: str, command: str, image_dir: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = image_dir / f"{name}.yaml"
    shutil.copy(BROKEN / f"{name}.yaml", project)
    before = _listing(image_dir)
    monkeypatch.chdir(image_dir)
    result = runner.invoke(cli, [command, project.name])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    errors, summary = lines[:-1], lines[-1]
    assert errors, result.stderr
    assert summary.endswith("nothing was written")
    for line in errors:
        match = ERROR_LINE.match(line)
        assert match, f"not 'error: file:line: ...': {line!r}"
        assert match["file"] == project.name
    expected = _expectation(name)
    assert any(expected in line for line in errors), f"{expected!r} not in {errors}"
    assert _listing(image_dir) == before, "a failed command must write nothing"


def _located(stderr: str) -> list[tuple[int, str]]:
    out = []
    for line in stderr.splitlines():
        m = ERROR_LINE.match(line)
        if m:
            out.append((int(m["line"]), m["rest"]))
    return out


def test_line_numbers_point_at_the_field(
    image_dir: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(BROKEN / "o1_duration_rule.yaml", image_dir / "p.yaml")
    monkeypatch.chdir(image_dir)
    result = runner.invoke(cli, ["validate", "p.yaml"])
    text = (image_dir / "p.yaml").read_text().splitlines()
    located = _located(result.stderr)
    assert len(located) == 1
    line, rest = located[0]
    assert text[line - 1].strip() == "duration: 7"
    assert rest == (
        "shots[0].duration: 7 is not allowed for kling-video-o1-std/image-to-video "
        "(5 or 10 without end_image)"
    )


def test_every_error_in_a_file_is_reported(
    image_dir: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    (image_dir / "p.yaml").write_text(
        "version: 1\nname: many\nshots:\n"
        "  - id: a\n    model: kling-video-o1-std/image-to-video\n    prompt: x\n"
        "    image: images/good.png\n    duration: 7\n    sound: true\n"
        "  - id: b\n    model: kling-v3.0-pro/image-to-video\n    prompt: '{{ nope }}'\n"
        "    image: images/small.png\n    cfg_scale: 2\n"
    )
    monkeypatch.chdir(image_dir)
    result = runner.invoke(cli, ["validate", "p.yaml"])
    assert result.exit_code == 2
    paths = {rest.split(":")[0] for _, rest in _located(result.stderr)}
    assert paths == {
        "shots[0].duration",
        "shots[0].sound",
        "shots[1].prompt",
        "shots[1].image",
        "shots[1].cfg_scale",
    }


def test_errors_from_defaults_point_at_the_default(
    image_dir: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    (image_dir / "p.yaml").write_text(
        "version: 1\nname: d\ndefaults:\n  model: kling-video-o1-std/image-to-video\n  duration: 7\n"
        "shots:\n  - id: a\n    prompt: x\n    image: images/good.png\n"
    )
    monkeypatch.chdir(image_dir)
    result = runner.invoke(cli, ["validate", "p.yaml"])
    assert _located(result.stderr) == [
        (
            5,
            "shots[0].duration: 7 is not allowed for kling-video-o1-std/image-to-video "
            "(5 or 10 without end_image)",
        )
    ]


def test_real_process_prints_no_traceback(image_dir: Path) -> None:
    shutil.copy(BROKEN / "template_internals.yaml", image_dir / "p.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "kling_render", "validate", "p.yaml"],
        cwd=image_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "p.yaml:7: shots[0].prompt: template refused by the sandbox" in proc.stderr


def test_missing_file_is_a_usage_error(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "file not found" in result.stderr


def test_bad_var_override(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["validate", "projects/mug-teaser/project.yaml", "--var", "no-equals"])
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.stderr
