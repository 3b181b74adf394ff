"""Issue 23, items 7, 10, 11, 13 and 28: what a newcomer reads when something is wrong.

YAML errors point at the broken line; "did you mean" for near misses; ``validate --json`` and
``--format github`` list the errors for machines; PROJECT defaults to the current directory;
``models --check-prices --json`` is strict JSON. The commands run in this process (``kr``: click's
runner with the environment and working directory given, as the process would have them); the
real CLI where a whole stderr is compared (``--only``'s suggestion, a missing key) and for one
YAML error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import EXAMPLE, Workspace, base_env, invoke, ws_env
from e2e_fake import FakeProcess
from fake_wavespeed import FakeWaveSpeed

LOCATED = re.compile(r"^error: (?P<file>[^:]+):(?P<line>\d+)(?::(?P<col>\d+))?: (?P<rest>.+)$")

HEAD = """\
version: 1
name: t
provider: local
vars: {mood: calm, product: mug}
prompts:
  base: "a {{ product }} on a table"
defaults: {model: kling-v3.0-std/image-to-video, duration: 5}
shots:
"""
SHOT = """\
  - id: {id}
    prompt: "{prompt}"
    image: images/mug.png
"""


def kr(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``kling-render ARGS`` in this process (see e2e_cli.invoke)."""
    return invoke(list(args), env=env or base_env(), cwd=cwd)


def kr_process(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``kling-render ARGS`` as its own process: the real CLI."""
    return subprocess.run(
        [sys.executable, "-m", "kling_render", *args],
        cwd=cwd, env=env or base_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE / "images", tmp_path / "images")
    return tmp_path


def files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def errors_of(root: Path, text: str, *args: str, real: bool = False) -> list[tuple[int, int, str]]:
    """validate p.yaml: exit 2, located lines only, nothing written; (line, column, rest) per error
    (``real``: the real CLI)."""
    (root / "p.yaml").write_text(text)
    before = files(root)
    done = (kr_process if real else kr)("validate", "p.yaml", *args, cwd=root)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[-1].endswith("nothing was written")
    out = []
    for line in lines[:-1]:
        m = LOCATED.match(line)
        assert m, line
        out.append((int(m["line"]), int(m["col"] or 0), m["rest"]))
    assert files(root) == before
    return out


def shots(n: int = 3) -> str:
    return "".join(SHOT.format(id=f"s{i}", prompt=f"shot {i}") for i in range(n))


# -- item 10: a YAML error points at the broken line --------------------------------------------


def _break(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


GOOD = HEAD + shots(4)  # shot s3's lines are 18-20


@pytest.mark.parametrize(
    ("name", "line_no", "new", "at", "words"),
    [
        # a list item's key indented one space less: the parser finds it on line 17, not at the list's start
        ("bad indentation", 17, "   prompt: \"shot 2\"", 17, "check this line's indentation"),
        ("over-indented key", 18, "       image: images/mug.png", 18, "indentation"),
        ("a tab", 17, "\tprompt: \"shot 2\"", 17, "indent with spaces, not tabs"),
        ("an unclosed quote", 14, "    prompt: \"shot 1", 14, "closing quote is missing"),
        ("an unclosed single quote", 17, "    prompt: 'shot 2", 17, "closing quote is missing"),
        ("an unclosed bracket", 4, "vars: [calm, mug", 4, "this [ is never closed"),
        ("an unclosed brace", 4, "vars: {mood: calm, product: mug", 4, "this { is never closed"),
        ("a key without its colon", 15, "    image images/mug.png", 15, "a key without its ':'"),
        ("a second document", 9, "---", 9, "a second document"),
    ],
)
def test_a_yaml_error_is_reported_at_the_broken_line(
    root: Path, name: str, line_no: int, new: str, at: int, words: str
) -> None:
    ((line, column, rest),) = errors_of(root, _break(GOOD, line_no, new), real=name == "a tab")
    assert line == at, (name, line, rest)
    assert column >= 1 and rest.startswith("invalid YAML: ") and words in rest, rest
    assert "{{" not in rest, f"no quoting hint where no {{{{ is involved: {rest}"


def test_a_duplicate_key_points_at_the_second_one(root: Path) -> None:
    lines = GOOD.splitlines()
    text = "\n".join([*lines[:13], "    prompt: again", *lines[13:]]) + "\n"
    assert errors_of(root, text) == [(14, 5, "shots[1].prompt: duplicate key")]


def test_the_quoting_hint_only_where_a_template_is_unquoted(root: Path) -> None:
    text = _break(GOOD, 17, "    prompt: {{ prompts.base }}, slow push-in")
    ((line, _, rest),) = errors_of(root, text)
    assert line == 17 and rest.endswith("values starting with {{ must be quoted"), rest
    # a quoted template elsewhere in the same block does not earn the hint for a broken indent
    text = _break(HEAD + SHOT.format(id="a", prompt="{{ prompts.base }}") + shots(2), 11, "     image: images/mug.png")
    ((line, _, rest),) = errors_of(root, text)
    assert line == 11 and "{{" not in rest, rest


# -- item 11: did you mean ----------------------------------------------------------------------


def test_near_misses_get_one_suggestion_on_their_own_line(root: Path) -> None:
    text = (
        HEAD
        + SHOT.format(id="a", prompt="{{ moood }}")
        + SHOT.format(id="b", prompt="{{ prompts.bsae }}")
        + "  - id: c\n    prompt: x\n    image: images/mugg.png\n"
        + "  - id: d\n    model: kling-v3.0-std/image-to-vidoe\n    prompt: x\n    image: images/mug.png\n"
        + "  - id: e\n    model: kling-v9-ultra/image-to-video\n    prompt: x\n    image: images/mug.png\n"
        + "  - id: f\n    prompt: x\n    image: imgs/mug-side.png\n"
    )
    found = {rest.split(":", 1)[0]: rest for _, _, rest in errors_of(root, text)}
    assert found["shots[0].prompt"].endswith("'moood' is undefined (did you mean 'mood'?)")
    assert found["shots[1].prompt"].endswith("'prompts.bsae' is undefined (did you mean 'prompts.base'?)")
    assert found["shots[2].image"].endswith("file not found: images/mugg.png (did you mean 'images/mug.png'?)")
    assert found["shots[3].model"].endswith(
        "unknown model 'kling-v3.0-std/image-to-vidoe' (did you mean 'kling-v3.0-std/image-to-video'?)"
    )
    # nothing close: no guess, and not every id of the catalog on one line either
    assert found["shots[4].model"].endswith("(kling-render models lists them)")
    assert "kling-video-o1-std" not in found["shots[4].model"]
    assert found["shots[5].image"].endswith("(did you mean 'images/mug-side.png'?)")


def test_only_suggests_the_shot_id(root: Path) -> None:
    (root / "project.yaml").write_text(HEAD + SHOT.format(id="intro", prompt="x") + SHOT.format(id="pour", prompt="y"))
    done = kr_process("plan", "--only", "intr", cwd=root)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --only: no shot named intr in project.yaml (did you mean 'intro'?)"
    done = kr("plan", "--only", "zzz", cwd=root)
    assert done.returncode == 2 and "did you mean" not in done.stderr


# -- item 13: PROJECT defaults to the current directory ------------------------------------------


@pytest.mark.parametrize("command", ["validate", "plan", "status", "stitch", "render", "report"])
def test_project_defaults_to_the_current_directory(root: Path, command: str) -> None:
    (root / "project.yaml").write_text(HEAD + shots(1))
    done = kr(command, "--help", cwd=root)
    assert "[PROJECT]" in done.stdout, done.stdout
    if command in ("validate", "plan", "status"):
        done = kr(command, cwd=root)
        assert done.returncode == 0, done.stderr
    empty = root / "empty"
    empty.mkdir()
    done = kr(command, cwd=empty)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: no project.yaml in the current directory ("), done.stderr
    assert list(empty.iterdir()) == []


# -- item 7: validate --json and --format github ------------------------------------------------


def test_validate_json_lists_every_error(root: Path) -> None:
    text = HEAD + SHOT.format(id="a", prompt="{{ moood }}") + "  - id: b\n    prompt: x\n    image: images/nope.png\n"
    (root / "p.yaml").write_text(text)
    for args in (["--json"], ["--format", "json"]):
        done = kr("validate", "p.yaml", *args, cwd=root)
        assert done.returncode == 2
        doc = json.loads(done.stdout)  # one strict JSON document on stdout
        assert doc["valid"] is False
        assert [(e["file"], e["line"], e["path"]) for e in doc["errors"]] == [
            ("p.yaml", 10, "shots[0].prompt"), ("p.yaml", 14, "shots[1].image")
        ]  # fmt: skip
        assert doc["errors"][1]["message"] == "file not found: images/nope.png"
        assert set(doc["errors"][0]) == {"file", "line", "column", "path", "message", "text"}
    # a YAML error has its column; a usage error has no location
    (root / "p.yaml").write_text(_break(GOOD, 17, "   prompt: x"))
    doc = json.loads(kr("validate", "p.yaml", "--json", cwd=root).stdout)
    assert (doc["errors"][0]["line"], doc["errors"][0]["column"]) == (17, 4) and doc["errors"][0]["path"] is None
    done = kr("validate", "missing.yaml", "--json", cwd=root)
    assert done.returncode == 2 and json.loads(done.stdout)["errors"][0]["message"] == "file not found"
    done = kr("validate", "--json", cwd=root / "images")
    assert done.returncode == 2 and json.loads(done.stdout)["errors"][0]["file"] is None


def test_validate_format_github_annotates_the_lines(root: Path) -> None:
    text = (
        HEAD
        + SHOT.format(id="a", prompt="{{ moood }}")
        + "  - id: b\n    prompt: x\n    image: \"images/a,b:c%.png\"\n"
    )
    (root / "p.yaml").write_text(text)
    done = kr("validate", "p.yaml", "--format", "github", cwd=root)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "::error file=p.yaml,line=10,title=kling-render::shots[0].prompt: template error: "
        "'moood' is undefined (did you mean 'mood'?)"
    )
    # GitHub's escapes: % in data, and also , and : in properties
    assert lines[1].startswith("::error file=p.yaml,line=14,title=kling-render::shots[1].image: ")
    assert lines[1].endswith("images/a,b:c%25.png")
    assert done.stderr.strip() == "2 error(s); nothing was written"
    (root / "p.yaml").write_text(_break(GOOD, 17, "   prompt: x"))
    done = kr("validate", "p.yaml", "--format", "github", cwd=root)
    assert done.stdout.startswith("::error file=p.yaml,line=17,col=4,title=kling-render::invalid YAML: ")
    (root / "p.yaml").write_text(GOOD)
    done = kr("validate", "p.yaml", "--format", "github", cwd=root)
    assert done.returncode == 0 and done.stdout.strip() == "p.yaml: valid (4 shots)"


# -- item 28: strict JSON from --check-prices ------------------------------------------------------


def strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), -0.5])
def test_a_non_finite_price_is_an_error_and_the_json_stays_strict(
    tmp_path: Path, fake_wavespeed: FakeWaveSpeed, bad: float
) -> None:
    fake_wavespeed.prices["kling-v3.0-pro/image-to-video"] = (bad, 1.5, None)
    ws = Workspace(tmp_path, ws_env(fake_wavespeed.base_url), in_process=True)
    done = ws.cli("models", "--check-prices", "--json")
    assert done.returncode == 1, done.stderr
    checks = {(c["model"], c["case"]): c for c in strict(done.stdout)}
    pro = checks[("kling-v3.0-pro/image-to-video", "defaults")]
    assert pro["status"] == "error" and pro["live_usd"] is None
    assert "is not a price" in pro["error"]
    assert checks[("kling-v3.0-std/image-to-video", "defaults")]["status"] == "match"
    table = ws.cli("models", "--check-prices")
    # +2 image models, +5 Kling 4.0 models (4 match; video-edit unknown: no WaveSpeed page prices it)
    assert table.returncode == 1 and table.stdout.rstrip().endswith("2 error, 14 match, 2 unknown")
    ws.assert_no_secret()


# -- item 8: a missing or rejected key is exit 2; only a balance problem asks for a top-up ------------


@pytest.mark.parametrize(
    ("kind", "code", "says", "never"),
    [
        ("401", 2, "the API key was rejected (401)", "top up"),
        ("403", 2, "the API key was rejected (403)", "top up"),
        ("402", 1, "cannot pay (402)", "WAVESPEED_API_KEY"),
        ("balance", 1, "cannot pay (code 400): Insufficient balance", "WAVESPEED_API_KEY"),
    ],
)
def test_key_and_account_problems_say_what_to_fix(
    tmp_path: Path, fake_process: FakeProcess, kind: str, code: int, says: str, never: str
) -> None:
    from e2e_cli import small_workspace

    ws = small_workspace(tmp_path / "small", ws_env(fake_process.base_url), in_process=True)
    fake_process.fault(kind, "/api/v3/kwaivgi/", count=100)
    done = ws.render("--no-stitch")
    assert done.returncode == code, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert says in line and never not in line, line
    if code == 2:  # the key first, and what to do about it
        assert line.index("rejected") < line.index("WAVESPEED_API_KEY"), line
    else:
        assert "top up the WaveSpeed balance" in line, line
    ws.assert_no_secret()


def test_a_missing_key_is_exit_2_with_nothing_written(tmp_path: Path) -> None:
    from e2e_cli import small_workspace

    ws = small_workspace(tmp_path / "small", base_env())
    before = sorted(ws.root.rglob("*"))
    done = ws.render()
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: WAVESPEED_API_KEY is not set; set it, or render offline with --provider local"
    )
    assert sorted(ws.root.rglob("*")) == before
