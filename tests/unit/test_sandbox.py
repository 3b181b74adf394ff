"""Templates cannot reach Python internals, the file system or the environment (SPEC §3, §8).

Every attack is a prompt of an otherwise valid project; ``validate`` must refuse it with exit 2
and one located line (``error: project.yaml:<line>: shots[0].prompt: ...``), in well under a
second (the bounds of ``sandbox.Sandbox`` and ``template_limits``).
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
# Issue 12: CPU time and output size, per field (each must be refused in well under a second).
RESOURCES = [
    "{% for a in 'x' * 1000 %}{% for b in 'x' * 1000 %}{% endfor %}{% endfor %}",
    "{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{{ b }}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% macro f() %}{{ caller() }}{% endmacro %}{% call f() %}{{ f() }}{% endcall %}",
    "{{ lipsum(100000, false, 100000, 100000) }}",
    "{% set ns = namespace(x=2) %}{% for i in range(100) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
    "{% set ns = namespace(x=3) %}{% for i in range(99999) %}{% set ns.x = ns.x * 3 %}{% endfor %}{{ ns.x }}",
    "{% set ns = namespace(x=1) %}{% for i in range(99999) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
    "{{ ('9' * 5000)|int }}",
    "{{ ('9' * 1200)|int * ('9' * 1200)|int }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s|replace('a', 'aaaa') %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(l=[0]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{{ ('x' * 100000)|replace('', 'y' * 100000) }}",
    "{{ ('x' * 100000).replace('x', 'y' * 100000) }}",
    "{{ ('x' * 100000).join(['a'] * 100000) }}",
    "{{ (['x' * 100000] * 100000)|join }}",
    "{{ (['x' * 1000] * 1000)|join }}",
    "{{ ('\\t' * 100000).expandtabs(100000) }}",
    "{{ ('\\n' * 100000)|indent(100000) }}",
    "{{ ('a ' * 50000)|wordwrap(1, wrapstring='x' * 100000) }}",
    "{{ ('%(a)s' * 20000) % {'a': 'x' * 100000} }}",
    "{{ ('{0}' * 30000).format('x' * 100000) }}",
    "{{ ('%s' * 30000)|format(*(['x' * 100000] * 30000)) }}",
    "{% set t = (0,) * 100000 %}{{ ([t] * 100000)|unique|list|length }}",
    "{% set t = (0,) * 100000 %}{% set u = (0,) * 100000 %}{{ u in [t] * 100000 }}",
    "{% set a = [0] * 100 %}{% set b = [a,a,a,a,a,a,a,a,a,a] %}{% set c = [b,b,b,b,b,b,b,b,b,b] %}"
    "{% set d = [c,c,c,c,c,c,c,c,c,c] %}{% set e = [d,d,d,d,d,d,d,d,d,d] %}{{ e|tojson|length }}",
    "{% set a = (0,) * 100 %}{% set b = (a,a,a,a,a,a,a,a,a,a) %}{% set c = (b,b,b,b,b,b,b,b,b,b) %}"
    "{% set d = (c,c,c,c,c,c,c,c,c,c) %}{% set e = (d,d,d,d,d,d,d,d,d,d) %}{{ {e: 1}|length }}",
    "{% set a = (0,) * 100 %}{% set b = (a,a,a,a,a,a,a,a,a,a) %}{% set c = (b,b,b,b,b,b,b,b,b,b) %}"
    "{% set d = (c,c,c,c,c,c,c,c,c,c) %}{% set e = (d,d,d,d,d,d,d,d,d,d) %}{{ dict.fromkeys([e])|length }}",
    "{% set x %}{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}{% endset %}{{ x|length }}",
    "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "{% for i in range(1000) %}{% set x = range(100000)|list %}{% endfor %}",
    "{{ 'x' * 100000 ~ 'y' }}",
    "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "{{ 'a'.translate({97: 'b' * 100000}) }}",
    "{% set big = 'x' * 100000 %}{% for i in range(50000) %}{% if big.count('y') %}{% endif %}{% endfor %}",
    "{% set big = 'x' * 100000 %}{% for i in range(50000) %}{% if 'y' in big %}{% endif %}{% endfor %}",
    "{% set big = 'x' * 100000 %}{% for i in range(50000) %}{% set y = big[1:] %}{% endfor %}",
    "{% set big = ['x'] * 100000 %}{% for i in range(50000) %}{% set y = big[1:] %}{% endfor %}",
    "{% set big = 'x ' * 50000 %}{% for i in range(50000) %}{% set y = big|wordcount %}{% endfor %}",
    "{{ x }}" * 1001,
]
# Issue 12: anything printed must be text or a number, never a repr (which can hold an address).
NOT_TEXT = [
    "{{ prompts }}",
    "{{ range(3) }}",
    "{{ lipsum }}",
    "{{ cycler }}",
    "{{ cycler('a', 'b') }}",
    "{{ joiner() }}",
    "{{ namespace() }}",
    "{{ [1, 2] }}",
    "{{ (1, 2) }}",
    "{{ {'a': 1} }}",
    "{{ none }}",
    "{{ shot }}",
    "{{ project }}",
    "{{ dict }}",
    "{{ dict.items }}",
    "{{ 'abc'|list }}",
    "{{ [1, 2]|map('abs') }}",
    "{{ 'abc'|batch(2) }}",
    "{% for i in range(2) %}{{ loop }}{% endfor %}",
    "{% macro m() %}{% endmacro %}{{ m }}",
    "{{ self }}",
    "{{ 'a' ~ range(2) }}",
    "{{ 'a' ~ [1] }}",
    "{{ prompts|string }}",
    "{{ [1]|string }}",
    "{{ '%s' % ([1],) }}",
    "{{ '%s'|format(cycler) }}",
    "{{ '{}'.format(namespace) }}",
    "{{ 1e308 * 10 }}",
    "{{ (1, 2)|join(range(2)) }}",
    "{{ 'a'|replace('a', range(3)) }}",
    "{{ 'a'|truncate(1, end=[1]) }}",
    "{{ [[1]]|join }}",
    "{{ [3, 1]|random }}",
    "{{ [3, 1]|pprint }}",
    "{{ 1 is sameas 1 }}",
    "{{ {'a': 1}.keys() - ['a'] }}",
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
    ("{{ ['b', 'a']|sort|join(', ') }}", "a, b"),
    ("{% for k, v in {'b': 1, 'a': 2}|dictsort %}{{ k }}{{ v }}{% endfor %}", "a2b1"),
    ("{% set c = cycler('x', 'y') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}", "xyx"),
    ("{% set j = joiner('+') %}{% for i in range(3) %}{{ j() }}{{ i }}{% endfor %}", "0+1+2"),
    ("{% set ns = namespace(n=1) %}{% for i in range(3) %}{% set ns.n = ns.n * 2 %}{% endfor %}{{ ns.n }}", "8"),
    ("{{ {'b': [1], 'a': 'x'}|tojson }}", '{"a": "x", "b": [1]}'),
    ("{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m('a') }}", "<a>"),
    ("{{ 'a' in ['a'] }} {{ [1, 2] == [1, 2] }} {{ none is none }}", "True True True"),
    ("{{ 0.1 + 0.2 }} {{ 2 ** 64 }} {{ 7 // 2 }} {{ -3 % 5 }}", "0.30000000000000004 18446744073709551616 3 2"),
    ("{{ 'a-b'.split('-')|reverse|join }} {{ 'ab'|upper ~ 1 }} {{ '%s=%d' % ('a', 1) }}", "ba AB1 a=1"),
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


@pytest.mark.parametrize("prompt", INTERNALS + RESOURCES + NOT_TEXT)
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
    from kling_render.project.templates import render

    context = {"vars_product": "mug", "shot": {"id": "a", "index": 0}, "project": {"name": "t"}}
    assert render(prompt, context) == rendered


PYTHON_NAMES = re.compile(
    r"_Prompts|_LazyPrompts|Labelled|Undefined|jinja2|kling_render|NoneType|0x[0-9a-f]|<\w+ object"
    r"|'(str|int|dict|list|tuple)' object"
)


@pytest.mark.parametrize(
    "prompt",
    [
        *NOT_TEXT,
        "{{ prompts.nope }}",
        "{{ prompts + 1 }}",
        "{{ prompts|upper }}",
        "{{ shot.nope }}",
        "{{ project.id }}",
        "{{ 'a'.nope }}",
        "{{ [1, 'a']|sort|join }}",
        "{{ 'x'|round }}",
        "{{ range('a') }}",
        "{{ 1 + 'a' }}",
        "{{ prompts['x'] }}",
        "{{ ''.__class__ }}",
        "{{ prompts.__class__ }}",
        "{% for i in 3 %}{% endfor %}",
    ],
)
def test_messages_name_no_python_internals(workdir: Path, prompt: str) -> None:
    code, output, _ = validate(workdir, prompt)
    assert code == 2
    assert not PYTHON_NAMES.search(output), output


def test_a_printed_mapping_is_named_as_written(workdir: Path) -> None:
    _, output, _ = validate(workdir, "{{ prompts }} and {{ range(3) }}")
    assert "{{ prompts }} is the prompts mapping, not text or a number (use prompts.<name>)" in output
    _, output, _ = validate(workdir, "{{ prompts.nope }}")
    assert "'prompts.nope' is undefined (prompts has: " in output


def test_the_project_budget_stops_many_heavy_fields(workdir: Path) -> None:
    """Each field stays under its own bound; together they exceed the project's, quickly."""
    heavy = "{% for i in range(45000) %}{% set x = i + 1 %}{% endfor %}ok"
    shots = "".join(
        f"  - id: s{i}\n    model: kling-video-o3-std/image-to-video\n    prompt: {json.dumps(heavy)}\n"
        "    image: images/a.png\n"
        for i in range(40)
    )
    path = workdir / "project.yaml"
    path.write_text(f"version: 1\nname: t\nprovider: local\nshots:\n{shots}", encoding="utf-8")
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors  # said once, where the budget ran out
    assert "shots[5].prompt: template refused by the sandbox: the project's templates together would take " in errors[0]
    assert "more than 500,000 steps" in errors[0]
    assert time.monotonic() - started < 30


def test_the_project_budget_bounds_compiling(workdir: Path) -> None:
    """Compiling costs about 70 us a tag: many distinct dense templates are refused, once."""
    shots = "".join(
        f"  - id: s{i}\n    model: kling-video-o3-std/image-to-video\n"
        f"    prompt: {json.dumps(f'{i} ' + '{{ vars_product }}' * 999)}\n    image: images/a.png\n"
        for i in range(40)
    )
    path = workdir / "project.yaml"
    path.write_text(f"version: 1\nname: t\nprovider: local\nvars: {{vars_product: x}}\nshots:\n{shots}")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "shots[30].prompt: " in errors[0], errors
    assert "the project's templates together have more than 30,000 tags to compile" in errors[0]


def test_a_snippet_that_uses_itself(workdir: Path) -> None:
    path = workdir / "project.yaml"
    snippets = 'prompts: {a: "x {{ prompts.b }}", b: "{{ prompts.a }}"}\nshots:'
    text = project_text("{{ prompts.a }}").replace("shots:", snippets)
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    expected = "project.yaml:5: shots[0].prompt: in prompts.a: template error: prompts.a uses itself"
    assert expected in result.output, result.output
