"""Templates cannot reach Python internals, the file system or the environment (SPEC §3, §8).

Every attack is a prompt of an otherwise valid project; ``validate`` must refuse it with exit 2
and one located line (``error: project.yaml:<line>: shots[0].prompt: ...``), in well under a
second (the resource bounds of ``templates._Sandbox``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from kling_render.cli import cli

INTERNALS = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{{ dict.mro() }}",
    "{{ ''|attr('__class__') }}",
    "{{ (''|attr('__class__')).__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler(1, 2).__dict__ }}",
    "{{ joiner.__init__.__globals__['os'] }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].environ }}",
    "{{ range.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ shot.__class__ }}",
    "{{ prompts.__class__.__base__ }}",
    "{{ '{0.__class__.__base__}'.format(1) }}",
    "{{ '{0.__globals__}'.format(cycler.__init__) }}",
    "{{ '%s'|format(''.__class__) }}",
    "{{ [].append(1) }}",
    "{{ {}.update(a=1) }}",
    "{{ config }}",
    "{{ request }}",
    "{{ __builtins__ }}",
    "{{ __import__('os') }}",
    "{{ os }}",
    "{{ HOME }}",
    "{{ environ }}",
    "{{ vars }}",
    "{{ env }}",
    "{{ range(10**9)|list }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ lipsum(1000000) }}",
    "{{ 'a' * 1000000000 }}",
    "{{ [0] * 10**9 }}",
    "{{ 2 ** 100000000 }}",
    "{{ 'a'|center(10**9) }}",
    "{{ 'a'.ljust(10**9) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%999999999s'|format(1) }}",
    "{% include '/etc/passwd' %}",
    "{% import '/etc/passwd' as x %}",
    "{% from '/etc/passwd' import x %}",
    "{% extends '/etc/passwd' %}",
    "{% include 'project.yaml' %}",
]
FINE = [
    ("{{ vars_product }}", "mug"),
    ("{{ '%05d' % 7 }}", "00007"),
    ("{{ '{:>4}'.format(1) }}", "   1"),
    ("{{ 'ab' * 3 }}", "ababab"),
    ("{{ 2 ** 10 }}", "1024"),
    ("{% for i in range(3) %}{{ i }}{% endfor %}", "012"),
    ("{{ 'x'|center(5) }}", "  x  "),
    ("{{ shot.id }}-{{ shot.index }}-{{ project.name }}", "a-0-t"),
]


def project_text(prompt: str) -> str:
    return (
        "version: 1\nname: t\nprovider: local\nvars: {vars_product: mug}\nshots:\n"
        "  - id: a\n    model: kling-video-o3-std/image-to-video\n"
        f"    prompt: {json.dumps(prompt)}\n    image: images/a.png\n"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sandbox")
    (root / "images").mkdir()
    Image.new("RGB", (640, 360), (10, 20, 30)).save(root / "images" / "a.png")
    return root


def validate(workdir: Path, prompt: str, **env: str) -> tuple[int, str, float]:
    path = workdir / "project.yaml"
    path.write_text(project_text(prompt), encoding="utf-8")
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["validate", str(path)], env=env or None)
    return result.exit_code, result.output, time.monotonic() - started


@pytest.mark.parametrize("prompt", INTERNALS)
def test_refused_with_a_located_line(workdir: Path, prompt: str) -> None:
    code, output, seconds = validate(workdir, prompt)
    assert code == 2, output
    assert "Traceback" not in output and "internal error" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert re.match(r"error: \S*project\.yaml:8: shots\[0\]\.prompt: \S", errors[0]), errors[0]
    assert seconds < 5, (prompt, seconds)


def test_include_says_there_is_no_loader(workdir: Path) -> None:
    _, output, _ = validate(workdir, "{% include '/etc/passwd' %}")
    assert "no loader" in output and "root:" not in output


def test_environment_variables_never_reach_templates(workdir: Path) -> None:
    marker = "zz-marker-7f1e"
    for prompt in ("{{ HOME }}", "{{ KLING_SANDBOX_MARKER }}", "{{ environ }}"):
        code, output, _ = validate(workdir, prompt, KLING_SANDBOX_MARKER=marker, HOME=f"/home/{marker}")
        assert code == 2 and marker not in output, output
    # what the context does hold renders, and holds no environment values
    path = workdir / "project.yaml"
    everything = "{{ shot.id }} {{ shot.index }} {{ project.name }} {{ prompts|join(',') }} {{ vars_product }}"
    path.write_text(project_text(everything), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["plan", str(path), "--json"], env={"KLING_SANDBOX_MARKER": marker, "HOME": f"/home/{marker}"}
    )
    assert result.exit_code == 0, result.output
    assert marker not in result.output


@pytest.mark.parametrize(("prompt", "rendered"), FINE)
def test_ordinary_templates_still_render(prompt: str, rendered: str) -> None:
    from kling_render.templates import render

    context = {"vars_product": "mug", "shot": {"id": "a", "index": 0}, "project": {"name": "t"}}
    assert render(prompt, context) == rendered
