"""Planning generated inputs (issue 21): keys of stills, takes and continuity children, what waits
for what, and the cost of the stills stage and of the video stage.

Through the real CLI (``kling-render plan --json``, local provider) with real clips in the real
clip cache where an upstream must be made; the keys a child gets are recomputed here from the
clip's own bytes and frame count, independently of the plan.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REPO, make_image
from mediagen import make_clip

from kling_render.cli import cli
from kling_render.jobs import MediaRef
from kling_render.media.frames import ClipFrames
from kling_render.plan.inputs import (
    ClipFacts,
    StillFacts,
    edges,
    resolve,
    still_key,
    take_key,
    take_name,
)
from kling_render.plan.plan import build_plan, shot_key
from kling_render.project.loader import load_project
from kling_render.records import manifest
from kling_render.store.cache import ClipCache, ClipMeta

CHAIN = """\
version: 1
name: chain
provider: local
budget: {max_usd: 1}
stills:
  - {id: hero, model: bytedance/seedream-v4.5, prompt: "a mug", size: "1280*720"}
defaults: {model: kling-v3.0-std/image-to-video, duration: 3}
shots:
  - id: a
    prompt: first
    image: images/good.png
    takes: 2
    trim: {end: 2.5}
  - id: b
    prompt: second
    image: {from: a, frame: last}
  - id: c
    prompt: third
    image: {from: b, frame: first}
  - id: d
    prompt: fourth
    image: {still: hero}
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_image(tmp_path / "images" / "good.png", 640, 360)
    monkeypatch.delenv("KLING_RENDER_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def plan_json(root: Path, text: str, *args: str) -> dict[str, Any]:
    (root / "p.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["plan", "p.yaml", "--json", *args])
    assert result.exit_code in (0, 3), result.output
    return dict(json.loads(result.stdout))


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["shots"]}


def cache_clip(root: Path, key: str, tmp: Path, *, pattern: str = "testsrc", seconds: float = 3.0) -> tuple[str, int]:
    """A real clip in the local provider's cache under ``key``; its sha256 and frame count."""
    src = make_clip(tmp / f"{key[:8]}.mp4", duration=seconds, fps=24, audio=False, pattern=pattern)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    cache = ClipCache.for_project(root / "p.yaml")
    cache.tmp_dir.mkdir(parents=True, exist_ok=True)
    staged = cache.tmp_dir / f"123-{key[:12]}.mp4"
    shutil.copyfile(src, staged)
    cache.put("local", key, staged, ClipMeta(duration=seconds, model="kling-v3.0-std/image-to-video"))
    return digest, round(seconds * 24)


def test_takes_and_stills_are_named_and_the_stages_priced_apart(root: Path) -> None:
    doc = plan_json(root, CHAIN)
    shots = by_id(doc)
    assert list(shots) == ["a", "a#2", "b", "c", "d"]
    assert (shots["a"]["take"], shots["a"]["picked"], shots["a#2"]["take"], shots["a#2"]["picked"]) == (
        1,
        True,
        2,
        False,
    )
    assert "take" not in shots["b"]  # a shot with one take looks as it always did
    assert shots["a"]["key"] and shots["a#2"]["key"] and shots["a"]["key"] != shots["a#2"]["key"]
    assert [s["id"] for s in doc["stills"]] == ["still:hero"]
    assert doc["stills"][0]["cost_usd"] == 0.04 and doc["stills"][0]["key"]
    stages = doc["stages"]
    assert stages["stills"] == {"count": 1, "to_render": 1, "total_cost_usd": 0.04, "to_render_cost_usd": 0.04}
    assert stages["video"]["count"] == 5 and stages["video"]["to_render_cost_usd"] == pytest.approx(5 * 0.252)
    assert doc["total_cost_usd"] == pytest.approx(0.04 + 5 * 0.252)
    assert doc["to_render_cost_usd"] == doc["total_cost_usd"]


def test_children_wait_for_their_own_upstream_and_say_why(root: Path) -> None:
    shots = by_id(plan_json(root, CHAIN))
    assert shots["b"]["key"] is None and shots["b"]["waits_for"] == ["a"]
    assert shots["b"]["reason"] == "will render: its start frame comes from a, which is not made yet"
    assert shots["c"]["waits_for"] == ["b"]
    assert shots["d"]["waits_for"] == ["still:hero"]
    assert shots["d"]["reason"] == "will render: its start image comes from still:hero, which is not made yet"
    assert all(shots[s]["status"] == "render" for s in ("b", "c", "d"))
    text = CliRunner().invoke(cli, ["plan", "p.yaml"]).stdout
    assert "b: will render: its start frame comes from a, which is not made yet" in text
    assert "stages: stills $0.0400 to render" in text and "still:hero" in text


def test_waiting_steps_count_as_spent_for_the_budget(root: Path) -> None:
    doc = plan_json(root, CHAIN, "--provider", "wavespeed")
    assert doc["over_budget"] is True and doc["budget_usd"] == 1
    assert doc["to_render_cost_usd"] == doc["total_cost_usd"] > 1
    # every step counted once: a budget above the whole plan fits it
    assert plan_json(root, CHAIN.replace("max_usd: 1", "max_usd: 2"), "--provider", "wavespeed")["over_budget"] is False


def test_take_one_is_todays_key_and_pick_is_never_in_a_key(root: Path) -> None:
    one = "version: 1\nname: t\nprovider: local\nshots:\n  - id: a\n    model: kling-v3.0-std/image-to-video\n"
    one += "    prompt: x\n    image: images/good.png\n"
    plain = by_id(plan_json(root, one))["a"]["key"]
    three = by_id(plan_json(root, one + "    takes: 3\n"))
    assert three["a"]["key"] == plain and len({three[n]["key"] for n in ("a", "a#2", "a#3")}) == 3
    picked = by_id(plan_json(root, one + "    takes: 3\n    pick: 3\n"))
    assert {n: s["key"] for n, s in picked.items()} == {n: s["key"] for n, s in three.items()}
    assert [n for n, s in picked.items() if s["picked"]] == ["a#3"]
    # take: 2, takes: 3 renders takes 2, 3 and 4: the keys of take: 2, take: 3 and take: 4
    shifted = by_id(plan_json(root, one + "    take: 2\n    takes: 3\n"))
    assert list(shifted) == ["a", "a#3", "a#4"]
    singles = [by_id(plan_json(root, one + f"    take: {k}\n"))["a"]["key"] for k in (2, 3, 4)]
    assert [shifted[n]["key"] for n in ("a", "a#3", "a#4")] == singles
    # Lowering takes keeps the remaining takes' keys (their clips stay cached).
    two = by_id(plan_json(root, one + "    takes: 2\n"))
    assert [two[n]["key"] for n in ("a", "a#2")] == [three[n]["key"] for n in ("a", "a#2")]


def test_a_made_upstream_gives_its_child_a_key_from_the_clip_and_the_frame(root: Path, tmp_path_factory: Any) -> None:
    tmp = tmp_path_factory.mktemp("clips")
    first = by_id(plan_json(root, CHAIN))
    sha_a, frames = cache_clip(root, first["a"]["key"], tmp)
    doc = plan_json(root, CHAIN)
    shots = by_id(doc)
    assert shots["a"]["status"] == "cached" and shots["a#2"]["status"] == "render"
    # a keeps 0..2.5 s of 72 frames at 24 fps: its last kept frame is ceil(2.5 * 24) - 1 = 59.
    project = load_project(root / "p.yaml")
    b = project.shot("b")
    expected = take_key("local", b, params={**b.params, "image": MediaRef(key=f"frame:{sha_a}@59")})
    assert frames == 72 and shots["b"]["key"] == expected and "waits_for" not in shots["b"]
    assert shots["b"]["status"] == "render"
    assert shots["c"]["waits_for"] == ["b"]  # c waits only for b, which is not made

    # Editing only a's trim moves b's frame (a stays cached: the trim is not in a clip's key).
    trimmed = by_id(plan_json(root, CHAIN.replace("trim: {end: 2.5}", "trim: {end: 2}")))
    assert trimmed["a"]["key"] == shots["a"]["key"] and trimmed["a"]["status"] == "cached"
    assert trimmed["b"]["key"] == take_key("local", b, params={**b.params, "image": MediaRef(key=f"frame:{sha_a}@47")})

    # Picking the other take changes no take's key, only the child's start frame.
    sha_a2, _ = cache_clip(root, shots["a#2"]["key"], tmp, pattern="testsrc2")
    assert sha_a2 != sha_a
    picked = by_id(plan_json(root, CHAIN.replace("takes: 2", "takes: 2\n    pick: 2")))
    assert (picked["a"]["key"], picked["a#2"]["key"]) == (shots["a"]["key"], shots["a#2"]["key"])
    assert picked["b"]["key"] == take_key("local", b, params={**b.params, "image": MediaRef(key=f"frame:{sha_a2}@59")})


def test_a_child_of_an_upstream_that_changes_will_re_render(root: Path) -> None:
    (root / "p.yaml").write_text(CHAIN)
    project = load_project(root / "p.yaml")
    lock = {"a": {"key": "0" * 64, "model": "kling-v3.0-std/image-to-video"}, "b": {"key": "1" * 64}}
    plan = build_plan(project, "local", is_cached=lambda key, provider: False, lock=lock)
    b = next(p for p in plan.shots if p.id == "b")
    assert b.reason == "will re-render: its start frame comes from a, which changes"
    assert (b.change, b.changed_fields, b.key) == ("changed", ("image",), None)
    c = next(p for p in plan.shots if p.id == "c")
    assert (c.change, c.reason) == ("added", "will re-render: its start frame comes from b, which changes")
    d = next(p for p in plan.shots if p.id == "d")
    assert d.reason == "will render: its start image comes from still:hero, which is not made yet"


def test_changing_pick_only_re_stitches(root: Path) -> None:
    (root / "p.yaml").write_text(CHAIN)
    before = load_project(root / "p.yaml")
    keys = {take_name(s, t): shot_key("local", s, take=t) for s in before.shots[:1] for t in s.take_numbers}
    lock = {name: {"key": key, "model": "kling-v3.0-std/image-to-video", **manifest.shot_cut_settings(before.shots[0])}
            for name, key in keys.items()}  # fmt: skip
    (root / "p.yaml").write_text(CHAIN.replace("takes: 2", "takes: 2\n    pick: 2"))
    after = load_project(root / "p.yaml")
    plan = build_plan(
        after, "local", is_cached=lambda key, provider: True, lock=lock, cut_settings=manifest.shot_cut_settings
    )
    a = {p.id: p for p in plan.shots}
    # the take now cut says so; neither take's clip changes, so nothing is paid
    assert (a["a#2"].change, a["a#2"].changed_fields) == ("re-stitch", ("pick",))
    assert a["a"].change == "unchanged" and a["a"].status == a["a#2"].status == "cached"


def test_edges_run_from_each_maker_to_every_take_that_uses_it(root: Path) -> None:
    (root / "p.yaml").write_text(CHAIN.replace("image: images/good.png", "image: {still: hero}"))
    project = load_project(root / "p.yaml")
    assert [(e.upstream, e.downstream, e.field) for e in edges(project)] == [
        ("still:hero", "a", "image"), ("still:hero", "a#2", "image"), ("a", "b", "image"), ("b", "c", "image"),
        ("still:hero", "d", "image"),
    ]  # fmt: skip
    (root / "p.yaml").write_text(CHAIN.replace("takes: 2", "takes: 2\n    pick: 2"))
    assert ("a#2", "b") in {(e.upstream, e.downstream) for e in edges(load_project(root / "p.yaml"))}


class FakeOutputs:
    """Made outputs by key, for the pure resolution."""

    def __init__(
        self,
        stills: dict[str, StillFacts],
        clips: dict[str, ClipFacts] | None = None,
        frames: dict[str, StillFacts] | None = None,
    ) -> None:
        self.stills, self.clips, self.frames = stills, clips or {}, frames or {}

    def still(self, provider: str, key: str) -> StillFacts | None:
        return self.stills.get(key)

    def clip(self, provider: str, key: str) -> ClipFacts | None:
        return self.clips.get(key)

    def frame(self, key_value: str) -> StillFacts | None:
        return self.frames.get(key_value)


def test_a_made_still_keys_its_shots_exactly_as_a_local_file_of_the_same_bytes(root: Path) -> None:
    (root / "p.yaml").write_text(CHAIN)
    project = load_project(root / "p.yaml")
    hero = project.stills[0]
    image = (root / "images" / "good.png").read_bytes()
    made = FakeOutputs({still_key("local", hero): StillFacts(hashlib.sha256(image).hexdigest())})
    res = resolve(project, "local", made)
    # the same shot with the file itself as its start image
    (root / "q.yaml").write_text(CHAIN.replace("image: {still: hero}", "image: images/good.png"))
    plain = load_project(root / "q.yaml").shot("d")
    assert res.units["d"].key == shot_key("local", plain)
    assert res.units["d"].waits == ()


def test_a_stills_key_covers_model_prompt_references_and_take(root: Path) -> None:
    edit = "  - {id: e, model: bytedance/seedream-v4.5/edit, prompt: z, images: [images/good.png]}"
    base = CHAIN.replace('size: "1280*720"}', f'size: "1280*720"}}\n{edit}')

    def keys(text: str) -> dict[str, str | None]:
        return {s["id"]: s["key"] for s in plan_json(root, text)["stills"]}

    now = keys(base)
    assert keys(base.replace('"a mug"', '"a cup"'))["still:hero"] != now["still:hero"]
    assert keys(base.replace('size: "1280*720"', 'size: "720*720"'))["still:hero"] != now["still:hero"]
    assert keys(base.replace("prompt: z, images", "prompt: z, take: 2, images"))["still:e"] != now["still:e"]
    make_image(root / "images" / "good.png", 640, 360, color=(1, 2, 3))  # same path, other bytes
    assert keys(base)["still:e"] != now["still:e"]
    assert keys(base)["still:hero"] == now["still:hero"]
    # the still's key is not a clip's: another kind, provider and model in its document
    assert now["still:hero"] != shot_key("local", load_project(root / "p.yaml").shot("a"))


def test_the_example_project_validates_and_plans(tmp_path: Path) -> None:
    shutil.copytree(REPO / "projects" / "mug-story", tmp_path / "mug-story")
    result = CliRunner().invoke(cli, ["plan", str(tmp_path / "mug-story"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [s["id"] for s in doc["stills"]] == ["still:packshot"]
    assert [s["id"] for s in doc["shots"]] == ["intro", "intro#2", "pour", "outro"]
    assert [s.get("waits_for") for s in doc["shots"]] == [["still:packshot"], ["still:packshot"], ["intro"], ["pour"]]
    assert doc["stages"]["stills"]["total_cost_usd"] == 0.04
    assert Fraction(str(doc["total_cost_usd"])) == Fraction("0.04") + 4 * Fraction("0.252")


def test_rows_share_a_still_and_the_shot_that_waits_for_it(tmp_path: Path) -> None:
    project = tmp_path / "cat"
    shutil.copytree(
        REPO / "projects" / "mug-catalog", project, ignore=shutil.ignore_patterns(".kling-render", "renders")
    )
    text = (project / "project.yaml").read_text()
    text = text.replace(
        "shots:\n",
        'stills:\n  - {id: logo, model: bytedance/seedream-v4.5, prompt: "our logo"}\n'
        '  - {id: pack, model: bytedance/seedream-v4.5, prompt: "the {{ row.name }}"}\nshots:\n',
        1,
    )
    text = text.replace("    image: images/mug.jpg\n", "    image: {still: logo}\n", 1)
    (project / "project.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["plan", str(project), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = len(doc["rows"]["rows"])
    stills = {s["id"]: s["key"] for s in doc["stills"]}
    assert len(stills) == 2 * rows and len({k for i, k in stills.items() if i.endswith("/logo")}) == 1
    assert doc["stages"]["stills"]["total_cost_usd"] == pytest.approx(0.04 * (1 + rows))  # logo once, a pack per row
    intros = [s for s in doc["shots"] if s["shot"] == "intro"]
    assert len(intros) == rows and all(s["waits_for"] == [f"still:{s['row']}/logo"] for s in intros)
    (shared,) = doc["rows"]["shared"]["clips"]  # the intros will have one key: priced once
    assert (shared["shot"], shared["key"], len(shared["rows"])) == ("intro", None, rows)
    # status lists the stills as the plan does; with --row, that row's alone
    status = CliRunner().invoke(cli, ["status", str(project), "--json"])
    assert status.exit_code == 0, status.output
    assert sorted(s["id"] for s in json.loads(status.stdout)["stills"]) == sorted(stills)
    first = doc["rows"]["rows"][0]["key"]
    status = CliRunner().invoke(cli, ["status", str(project), "--json", "--row", first])
    assert status.exit_code == 0, status.output
    chosen = sorted(s["id"] for s in json.loads(status.stdout)["stills"])
    assert chosen == [f"still:{first}/logo", f"still:{first}/pack"]


def test_what_the_scheduler_gets_once_inputs_are_made(root: Path) -> None:
    """A made still gives its shots its file; an extracted frame gives its child the PNG to
    upload, keyed by the clip and the frame, not by the PNG's bytes; a still's Job is a still."""
    (root / "p.yaml").write_text(CHAIN)
    project = load_project(root / "p.yaml")
    a, hero = project.shot("a"), project.stills[0]
    png = root / "images" / "good.png"
    clip = ClipFacts("c" * 64, ClipFrames(Fraction(24), 72), root / "a.mp4")
    made = FakeOutputs(
        {still_key("local", hero): StillFacts("f" * 64, png)},
        {shot_key("local", a): clip},
        {f"frame:{'c' * 64}@59": StillFacts("e" * 64, png)},
    )
    res = resolve(project, "local", made)
    b = res.units["b"].params
    assert b is not None and b["image"] == MediaRef(path=png, sha256="e" * 64, key=f"frame:{'c' * 64}@59")
    assert b["image"].key_value == f"frame:{'c' * 64}@59"
    d = res.units["d"].params
    assert d is not None and d["image"] == MediaRef(path=png, sha256="f" * 64)
    assert d["image"].key_value == "sha256:" + "f" * 64
    plan = build_plan(project, "local", is_cached=lambda key, provider: False, outputs=made)
    job = plan.stills[0].job
    assert job is not None and (job.kind, job.duration, job.key, job.shot_id) == ("still", 0, plan.stills[0].key,
                                                                                  "still:hero")  # fmt: skip
    assert job.wire_model == "bytedance/seedream-v4.5" and job.params == {"prompt": "a mug", "size": "1280*720"}
    assert {p.id: p.job.kind for p in plan.shots} == dict.fromkeys(["a", "a#2", "b", "c", "d"], "clip")


def test_a_reviewed_plan_still_holds_once_a_waiting_step_gets_its_key(root: Path, tmp_path_factory: Any) -> None:
    from kling_render.app.commands import plan_for
    from kling_render.plan.plan import stale_reasons

    saved = plan_json(root, CHAIN)
    project = load_project(root / "p.yaml")
    assert stale_reasons(saved, plan_for(project, "local", None)) == []
    cache_clip(root, by_id(saved)["a"]["key"], tmp_path_factory.mktemp("clips"))  # a is made: b gets its key
    now = plan_for(project, "local", None)
    assert next(p for p in now.shots if p.id == "b").key is not None
    assert stale_reasons(saved, now) == []
    # a key the reviewed plan knew must still be the same one
    changed = dict(saved, shots=[dict(s, key="0" * 64) if s["id"] == "a#2" else s for s in saved["shots"]])
    assert stale_reasons(changed, now) == ["shots differ from the plan: a#2"]
