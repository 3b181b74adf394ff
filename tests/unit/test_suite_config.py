"""The test command is written in three places that must agree: the README says it, `.ci/run` runs
it, and pyproject.toml's test extra and pytest options make it run on every core (pytest-xdist)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_command() -> str:
    """The command in the fenced block right after the README's "Run the tests" line."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^Run the tests\b.*?\n```sh\n(.+?)\n```", text, re.MULTILINE | re.DOTALL)
    assert match, "README: no 'Run the tests' paragraph followed by a ```sh block"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert script[-1].strip() == readme_command()


def names(specs: list[str]) -> set[str]:
    """Distribution names of requirement strings (``moto[server]>=5.2`` -> ``moto``)."""
    return {re.split(r"[<>=\[ ;]", spec, maxsplit=1)[0].lower() for spec in specs}


def test_the_test_extra_installs_what_the_pytest_options_need() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    test_extra = names(project["project"]["optional-dependencies"]["test"])
    addopts = project["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-n auto" in addopts and "pytest-xdist" in test_extra, "-n needs pytest-xdist in the test extra"
    assert "-m 'not slow'" in addopts  # the slow rounds run only when asked: python -m pytest -m slow
    assert "pip install -q -e '.[test]'" in readme_command() and readme_command().endswith("python -m pytest")
    assert "ffmpeg-python" not in names(project["project"]["dependencies"]) | test_extra  # dropped: see the README
