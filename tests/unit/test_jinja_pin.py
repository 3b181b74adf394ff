"""Issue 23 item 30: the template code generator leans on Jinja internals, so Jinja is pinned to
the tested minor release (``jinja2>=3.1.6,<3.2`` in pyproject.toml) and this test fails loudly
when the methods we override, or the ones that call them, change in another Jinja release.

Why not a public hook: ``Environment.finalize`` sees each printed value but not the expression
that made it (messages name it: ``{{ prompts }} prints a mapping``), and nothing public lets the
literal text be counted or constant folding be limited (``template_codegen``'s docstring). A
template's printed text is every shot's key: a silent change there would re-render (and pay for)
every shot, so a change must be read before it is accepted.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path

import jinja2
from jinja2.compiler import CodeGenerator

from kling_render.project.template_codegen import Codegen

TESTED = "3.1.6"
# sha256 (first 16 hex digits) of Jinja's source of each CodeGenerator member that Codegen
# overrides, and of those that call the overrides (visit_Output, _default_finalize, _FinalizeInfo).
RECORDED = {
    "__init__": "498cbd6f7f901bbd",
    "_make_finalize": "07c21cbd55efb6b9",
    "_output_child_post": "d943023c1d348a9e",
    "_output_child_pre": "950d7b8230fc9ca2",
    "_output_child_to_const": "fcbb1f1cab1ce2b9",
    "_output_const_repr": "b511f1cec961abf9",
    "visit": "8aa072212db8e8d4",
    "visit_Compare": "1c17840ef2a28f0a",
    "visit_Concat": "be4721533d19611d",
    "visit_Dict": "4324dcc090d27d3c",
    "visit_For": "d4f9a74e3bdffca6",
    "visit_Getitem": "b92223dd11e789d1",
    "visit_Output": "c6adf91f7665468f",
    "_default_finalize": "c13b2c117e719344",
    "_FinalizeInfo": "92e81fe2db7bc7d7",
}
CALLERS = {"visit_Output", "_default_finalize", "_FinalizeInfo"}
RECHECK = (
    "Jinja {version} changed CodeGenerator.{name}, which kling_render/project/template_codegen.py "
    "overrides or relies on. Re-check: that every {{{{ expr }}}} still goes through kr_print with its "
    "source, literal text through kr_data, that only literal text and constants are folded, and that "
    "loops, ~, comparisons, dict keys and slices are still wrapped (tests/unit/test_sandbox.py, "
    "tests/e2e/test_determinism.py); that the same templates still render the same text (shot keys); "
    "then record the new digests here and widen the jinja2 pin in pyproject.toml."
)


def digest(name: str) -> str:
    return hashlib.sha256(inspect.getsource(getattr(CodeGenerator, name)).encode()).hexdigest()[:16]


def test_every_override_is_recorded() -> None:
    overridden = {n for n, v in vars(Codegen).items() if callable(v) and hasattr(CodeGenerator, n)}
    assert overridden == set(RECORDED) - CALLERS, (
        "Codegen overrides a CodeGenerator member whose Jinja source is not recorded here (or no longer "
        f"overrides one): {sorted(overridden ^ (set(RECORDED) - CALLERS))}"
    )


def test_the_overridden_jinja_internals_are_the_tested_ones() -> None:
    changed = [name for name in RECORDED if digest(name) != RECORDED[name]]
    for name in changed:
        raise AssertionError(RECHECK.format(version=jinja2.__version__, name=name))


def test_jinja_is_pinned_to_the_tested_minor_release() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    pins = re.findall(r'"jinja2([^"]*)"', pyproject)
    assert pins == [">=3.1.6,<3.2"], pins
    assert jinja2.__version__.startswith("3.1."), jinja2.__version__


KEYS_PROJECT = """\
version: 1
name: keys
provider: local
vars: {product: mug, n: 3, tags: 'warm,soft'}
prompts:
  base: "a {{ product }} ~ {{ n * 2 }}{% for t in tags.split(',') %} {{ t|upper }}{% endfor %}"
  tail: "{{ '%.2f'|format(1.5) }} shot {{ shot.index }}"
defaults: {model: kling-v3.0-std/text-to-video, duration: 3}
shots:
  - id: a
    prompt: "{{ prompts.base }}, {{ 'x' ~ n }} {{ tags.split(',')|join('/') }} {{ prompts.tail }}"
"""
# The key of that shot as Jinja 3.1.6 renders its prompt ("a mug ~ 6 WARM SOFT, x3 warm/soft 1.50
# shot 0"): a Jinja that prints any of it differently changes the key, and this test says so.
KEY = "903cf4e9815199fb08479a9e294c9a69de4827b8a3763464c46920bd4d6e67ad"


def test_a_templated_shot_keeps_its_key_through_the_cli(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    (tmp_path / "project.yaml").write_text(KEYS_PROJECT)
    done = subprocess.run(
        [sys.executable, "-m", "kling_render", "plan", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key = json.loads(done.stdout)["shots"][0]["key"]
    assert key == KEY, RECHECK.format(version=jinja2.__version__, name="(printed text of a template)")
