"""Templates render the same text in every process, whatever PYTHONHASHSEED is, so a shot's key
never drifts and an unchanged project re-renders nothing (SPEC §3, §6; issue 12 item 2).

The project below uses every template feature whose output could depend on the process: dict
and set order, hashing, sorting, grouping, cyclers, joiners, namespaces, JSON, float and big
integer formatting, snippets. Each run is a separate ``python -m kling_render`` process.
"""

from __future__ import annotations

import json
from pathlib import Path

from e2e_cli import Workspace, base_env, small_workspace, ws_env
from e2e_fake import FakeProcess

from kling_render.project.loader import load_project

EVERYTHING = (
    "{% set ns = namespace(n=0) %}"
    "{% for k, v in {'b': 2, 'a': 1, 'c': 3}|dictsort %}{{ k }}={{ v }},{% endfor %}"
    "{% for k in {'zeta': 1, 'eta': 2, 'theta': 3} %}{{ k }}{% endfor %} "
    "{{ ['pear', 'apple', 'fig']|sort|join(',') }} {{ 'banana'|unique|join }} "
    "{{ ['x', 'y', 'x', 'z']|unique|join }} {{ [3, 1, 2]|map('string')|join('-') }} "
    "{{ {'y': [1, 2], 'x': 'a'}|tojson }} "
    "{{ [{'n': 'b'}, {'n': 'a'}, {'n': 'b'}]|groupby('n')|map(attribute='grouper')|join }} "
    "{% set c = cycler('r', 'g') %}{{ c.next() }}{{ c.next() }}{{ c.next() }} "
    "{% set j = joiner('+') %}{% for i in range(3) %}{{ j() }}{{ i }}{% set ns.n = ns.n + i %}{% endfor %} "
    "{{ ns.n }} {{ '%05.2f'|format(1 / 3) }} {{ 0.1 + 0.2 }} {{ 2 ** 70 }} {{ '{:>6}'.format(product) }} "
    "{{ product|title|center(12) }} {{ dict.fromkeys('cab')|list|join }} {{ {'a': 1, 'b': 2}.items()|list|length }} "
    "{{ 'a,b,c'.split(',')|reverse|join }} {{ 'x' in ['x'] }} {{ [1, 2] == [1, 2] }} "
    "{{ range(7)|select('odd')|join }} {{ prompts.base }} {{ prompts|join(',') }} "
    "{{ shot.id }}/{{ shot.index }}/{{ project.name }} {{ loop is defined }}"
)

PROJECT = f"""\
version: 1
name: determinism
provider: wavespeed
vars: {{product: ceramic mug, count: 3, ratio: 0.5}}
prompts:
  base: "a {{{{ product }}}} x{{{{ count }}}} at {{{{ ratio }}}}"
  extra: "{{{{ prompts.base|upper }}}}"
defaults: {{model: kling-v3.0-std/image-to-video, duration: 3, sound: false}}
shots:
  - id: alpha
    prompt: "shot alpha: {EVERYTHING}"
    negative_prompt: "{{{{ prompts.extra }}}}"
    image: images/mug.png
  - id: beta
    model: kling-video-o3-std/image-to-video
    prompt: "shot beta: {EVERYTHING}"
    image: "images/{{{{ 'mug' }}}}.png"
output: {{path: renders/final.mp4, width: 320, height: 180, fps: 24}}
"""

SEEDS = ("0", "1", "4242")


def _keys(ws: Workspace, seed: str) -> dict[str, str]:
    done = ws.cli("plan", str(ws.project), "--json", env={**ws.env, "PYTHONHASHSEED": seed})
    assert done.returncode == 0, done.stderr
    return {s["id"]: s["key"] for s in json.loads(done.stdout)["shots"]}


def test_keys_are_the_same_in_every_process(tmp_path: Path) -> None:
    ws = small_workspace(tmp_path / "p", base_env(), PROJECT)
    prompt = load_project(ws.project).shot("alpha").prompt
    assert "a=1,b=2,c=3," in prompt and "zetaetatheta" in prompt and "rgr" in prompt, prompt
    assert "0x" not in prompt and "object" not in prompt, prompt
    runs = [_keys(ws, seed) for seed in SEEDS for _ in range(3)]  # 3 seeds x 3 runs, 9 processes
    assert all(keys == runs[0] for keys in runs), runs
    assert set(runs[0]) == {"alpha", "beta"}


def test_an_unchanged_project_submits_nothing_again(tmp_path: Path, fake_process: FakeProcess) -> None:
    ws = small_workspace(tmp_path / "p", ws_env(fake_process.base_url), PROJECT)
    first = ws.render("--no-stitch", env={**ws.env, "PYTHONHASHSEED": "0"})
    assert first.returncode == 0, first.stderr
    paid = len(fake_process.submits())
    assert paid == 2
    for seed in SEEDS[1:]:
        again = ws.render("--no-stitch", env={**ws.env, "PYTHONHASHSEED": seed})
        assert again.returncode == 0, again.stderr
    assert len(fake_process.submits()) == paid, "a re-render of an unchanged project paid again"
    ws.assert_no_secret()


def test_an_unchanged_project_renders_nothing_again_locally(tmp_path: Path) -> None:
    ws = small_workspace(tmp_path / "p", base_env(), PROJECT.replace("provider: wavespeed", "provider: local"))
    assert ws.render("--no-stitch", env={**ws.env, "PYTHONHASHSEED": "0"}).returncode == 0
    clips = {p: p.stat().st_mtime_ns for p in ws.clips("local")}
    assert len(clips) == 2
    for seed in SEEDS[1:]:
        done = ws.render("--no-stitch", "--json", env={**ws.env, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        assert not [e for e in events if e.get("event") in ("submitting", "submitted")], events
    assert {p: p.stat().st_mtime_ns for p in ws.clips("local")} == clips
