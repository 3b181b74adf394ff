"""The CLI against the fal stand-in (a separate process): fal's paths and Key header, one paid
request per shot, a 503 on status retried, a lost submit answer settled through the requests list,
a frame-exact cut, no key anywhere; providers compared and refused by name; a run of two providers.
The seed models' render and the interrupt are the real CLI; the other commands run in this process
(``in_process``: what a run decides and pays is the subject, not the interpreter)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cli import SECRET, SMALL_CUT_SECONDS, SMALL_SHOTS, Workspace, base_env, decodes, small_workspace, ws_env
from e2e_fake import FakeProcess
from fal_kit import FAL_SMALL_COST, FAL_SMALL_PROJECT, FalProcess, fal_env

FPS = 24

# Every seed model and v3.0 std text-to-video, on fal (prompts name their shots).
SEEDS_PROJECT = """\
version: 1
name: seeds
provider: fal
defaults: {duration: 3}
pricing:
  kling-video-o3-std/reference-to-video: {fal: {per_second: 0.084}}
shots:
  - {id: v3std, model: kling-v3.0-std/image-to-video, prompt: "shot v3std", image: images/mug.png}
  - {id: v3pro, model: kling-v3.0-pro/image-to-video, image: images/mug.png, negative_prompt: blur,
     multi_prompt: [{prompt: "shot v3pro wide", duration: 1}, {prompt: close, duration: 2}], sound: true}
  - {id: o3, model: kling-video-o3-std/image-to-video, prompt: "shot o3", image: images/mug.png,
     end_image: images/mug-full.png, transition: {type: fade, duration: 0.5}}
  - {id: o1, model: kling-video-o1-std/image-to-video, prompt: "shot o1", image: images/mug.png,
     end_image: images/mug-full.png, trim: {start: 0.5}}
  - {id: ref, model: kling-video-o3-std/reference-to-video, prompt: "shot ref",
     images: [images/mug.png, images/mug-side.png], aspect_ratio: "9:16"}
  - {id: t2v, model: kling-v3.0-std/text-to-video, prompt: "shot t2v", aspect_ratio: "1:1"}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
"""
SEEDS_ENDPOINTS = {
    "v3std": "fal-ai/kling-video/v3/standard/image-to-video",
    "v3pro": "fal-ai/kling-video/v3/pro/image-to-video",
    "o3": "fal-ai/kling-video/o3/standard/image-to-video",
    "o1": "fal-ai/kling-video/o1/standard/image-to-video",
    "ref": "fal-ai/kling-video/o3/standard/reference-to-video",
    "t2v": "fal-ai/kling-video/v3/standard/text-to-video",
}
SEEDS_CUT_SECONDS = 6 * 3 - 0.5 - 0.5  # six 3 s shots, one 0.5 s trim, one 0.5 s fade


@pytest.fixture
def fal() -> Iterator[FalProcess]:
    with FalProcess(SECRET, latency=0.4) as server:
        yield server


def fal_workspace(root: Path, fal: FalProcess, text: str = FAL_SMALL_PROJECT, **extra: str) -> Workspace:
    return small_workspace(root, fal_env(fal.base_url, **extra), text, in_process=True)


def cut_frames(ws: Workspace) -> int:
    done = ws.cli("stitch", str(ws.project), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["fps"] == FPS
    return int(doc["frames"])


def test_the_seed_models_render_through_fal(tmp_path: Path, fal: FalProcess) -> None:
    ws = fal_workspace(tmp_path / "seeds", fal, SEEDS_PROJECT)
    ws.in_process = False  # the real CLI
    done = ws.render()
    assert done.returncode == 0, done.stderr
    shots = list(SEEDS_ENDPOINTS)
    # fal's documented paths: the full endpoint to submit, owner and app only for status and result.
    submits = fal.submits()
    assert sorted(r["path"] for r in submits) == sorted(f"/{e}" for e in SEEDS_ENDPOINTS.values())
    for record in fal.requests():
        keyed = record["path"].startswith(("/upload/", "/files/"))
        assert (record["headers"].get("Authorization") == f"Key {SECRET}") != keyed, record["path"]
        if "/requests/" in record["path"]:
            assert record["path"].startswith("/fal-ai/kling-video/requests/"), record["path"]
    bodies = {r["body"]["prompt"].split()[1] if "prompt" in r["body"] else "v3pro": r["body"] for r in submits}
    assert bodies["v3pro"]["duration"] == "3" and bodies["v3pro"]["generate_audio"] is True
    assert bodies["v3pro"]["multi_prompt"] == [{"prompt": "shot v3pro wide", "duration": "1"},
                                               {"prompt": "close", "duration": "2"}]  # fmt: skip
    assert bodies["o3"]["image_url"] and bodies["o3"]["end_image_url"] and "start_image_url" not in bodies["o3"]
    assert len(bodies["ref"]["image_urls"]) == 2 and bodies["ref"]["aspect_ratio"] == "9:16"
    # One paid request per shot; the plan's costs are fal's.
    stats = fal.stats()
    assert len(stats["queue"]) == len(shots) and all(q["charged"] for q in stats["queue"].values())
    plan = ws.plan()
    assert plan["provider"] == "fal" and {s["status"] for s in plan["shots"]} == {"cached"}
    assert {s["id"]: s["cost_usd"] for s in plan["shots"]} == {
        "v3std": 0.252, "v3pro": 0.504, "o3": 0.252, "o1": 0.252, "ref": 0.252, "t2v": 0.252,
    }  # fmt: skip
    # The cut is frame-exact, and decodes.
    assert cut_frames(ws) == round(SEEDS_CUT_SECONDS * FPS)
    assert decodes(ws.final_cut).duration == pytest.approx(SEEDS_CUT_SECONDS, abs=1 / FPS)
    assert ws.state_path_of("fal").is_file() and not ws.state_path_of("wavespeed").exists()
    ws.assert_no_secret()


def test_a_503_on_status_is_retried_and_a_lost_submit_answer_is_settled_not_resent(
    tmp_path: Path, fal: FalProcess
) -> None:
    ws = fal_workspace(tmp_path / "small", fal)
    fal.fault("503", "/fal-ai/kling-video/requests/", count=3)
    fal.fault("lost", "/fal-ai/kling-video/v3/standard/")  # alpha's request is created, its answer lost
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert "reconciled" in done.stderr
    assert fal.submits_by_shot() == {sid: 1 for sid in SMALL_SHOTS}, "the lost submit was never sent again"
    assert fal.charged_by_shot() == {sid: 1 for sid in SMALL_SHOTS}
    assert fal.stats()["faults"] == {"503": 3, "lost": 1}
    assert {sid: s["cost_usd"] for sid, s in ws.state_of("fal").items()} == FAL_SMALL_COST
    assert cut_frames(ws) == round(SMALL_CUT_SECONDS * FPS)
    ws.assert_no_secret()


def test_a_request_that_fails_with_a_422_is_not_paid_again(tmp_path: Path, fal: FalProcess) -> None:
    ws = fal_workspace(tmp_path / "small", fal)
    fal.fault("fail", "/fal-ai/kling-video/v3/", status_code=422, error_type="content_policy_violation")
    done = ws.render()
    assert done.returncode == 1
    assert "alpha: failed" in done.stderr and "may have been charged" in done.stderr
    assert "flagged" in done.stderr
    assert ws.render().returncode == 1, "the same inputs are not paid again"
    assert fal.submits_by_shot()["alpha"] == 1 and fal.charged_by_shot()["alpha"] == 1
    report = json.loads(ws.render("--json").stdout.splitlines()[-1])
    assert report["spent_usd"] == 0.0  # this run: nothing


def test_plan_compare_providers_lists_both_prices_per_shot(tmp_path: Path) -> None:
    ws = small_workspace(
        tmp_path / "p", base_env(), SEEDS_PROJECT.replace("provider: fal", "provider: wavespeed"), in_process=True
    )
    done = ws.cli("plan", str(ws.project), "--compare-providers", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["providers"] == ["wavespeed", "fal"]
    by_id = {s["id"]: s for s in doc["shots"]}
    for shot in by_id.values():
        assert set(shot["prices"]) == {"wavespeed", "fal"}
        assert all(q["cost_usd"] is not None for q in shot["prices"].values()), shot
    assert by_id["o3"]["prices"] == {
        "wavespeed": {"offered": True, "cost_usd": 0.54, "status": "render"},
        "fal": {"offered": True, "cost_usd": 0.252, "status": "render"},
    }
    assert by_id["o3"]["cheapest"] == "fal" and by_id["v3std"]["cheapest"] == "wavespeed"  # a tie: the first
    assert doc["totals"]["fal"]["renders_all"] and doc["totals"]["wavespeed"]["renders_all"]
    table = ws.cli("plan", str(ws.project), "--compare-providers").stdout
    assert "cheapest per shot" in table and "o3" in table


def test_a_shot_on_a_model_only_one_provider_offers_is_refused_naming_it(tmp_path: Path, fal: FalProcess) -> None:
    text = FAL_SMALL_PROJECT.replace(
        "output:",
        "  - {id: longer, model: kling-v4.0/video-extend, video: {from: alpha}, prompt: \"shot longer\"}\noutput:",
    )
    ws = fal_workspace(tmp_path / "p", fal, text)
    for command in ("validate", "plan", "render"):
        done = ws.cli(command, str(ws.project))
        assert done.returncode == 2, (command, done.stderr)
        assert "shots[3].model: kling-v4.0/video-extend is not offered by fal (wavespeed offers it)" in done.stderr
    # --provider fal refuses a project that renders elsewhere, and a field fal does not take.
    other = small_workspace(tmp_path / "q", fal_env(fal.base_url), FAL_SMALL_PROJECT.replace(
        "    images: [images/mug.png, images/mug-side.png]\n",
        "    images: [images/mug.png, images/mug-side.png]\n    provider: wavespeed\n    video: images/ref.mp4\n",
    ), in_process=True)  # fmt: skip
    _reference_video(other.root / "images" / "ref.mp4")
    assert other.cli("validate", str(other.project)).returncode == 0
    done = other.cli("plan", str(other.project), "--provider", "fal")
    assert done.returncode == 2
    refused = "shots[2].video: video is not taken by kling-video-o3-std/reference-to-video on fal (wavespeed takes it)"
    assert refused in done.stderr
    assert fal.requests() == [] and not (other.root / ".kling-render").exists()


def _reference_video(path: Path) -> None:
    from mediagen import make_clip

    make_clip(path, duration=3.0, width=64, height=36)


def test_shots_on_two_providers_render_in_one_run(tmp_path: Path, fal: FalProcess) -> None:
    with FakeProcess(SECRET, latency=0.3) as wavespeed:
        env = {**fal_env(fal.base_url), **ws_env(wavespeed.base_url)}
        o3 = "    model: kling-video-o3-std/image-to-video\n"
        text = FAL_SMALL_PROJECT.replace(o3, o3 + "    provider: wavespeed\n")
        ws = small_workspace(tmp_path / "mixed", env, text, in_process=True)
        plan = ws.plan()
        assert {s["id"]: (s["provider"], s["cost_usd"]) for s in plan["shots"]} == {
            "alpha": ("fal", 0.252), "beta": ("wavespeed", 0.54), "gamma": ("fal", 0.252),
        }  # fmt: skip
        done = ws.render()
        assert done.returncode == 0, done.stderr
        assert fal.submits_by_shot() == {"alpha": 1, "gamma": 1}
        assert wavespeed.submits_by_shot() == {"beta": 1}
        assert set(ws.state_of("fal")) == {"alpha", "gamma"} and set(ws.state_of("wavespeed")) == {"beta"}
        assert {s["id"]: (s["provider"], s["status"]) for s in ws.status()["shots"]} == {
            "alpha": ("fal", "done"), "beta": ("wavespeed", "done"), "gamma": ("fal", "done"),
        }  # fmt: skip
        assert cut_frames(ws) == round(SMALL_CUT_SECONDS * FPS)
        lock = json.loads((ws.root / "project.lock").read_text())
        assert {sid: e["provider"] for sid, e in lock["shots"].items()} == {
            "alpha": "fal", "beta": "wavespeed", "gamma": "fal",
        }  # fmt: skip
        ws.assert_no_secret()


def test_one_budget_for_shots_on_two_providers_refuses_before_either_is_paid(tmp_path: Path, fal: FalProcess) -> None:
    """One purse for the run: each provider's share fits the budget, the two together do not, so the
    render is refused (exit 3) before either stand-in sees a request, and nothing is recorded."""
    with FakeProcess(SECRET, latency=0.3) as wavespeed:
        env = {**fal_env(fal.base_url), **ws_env(wavespeed.base_url)}
        o3 = "    model: kling-video-o3-std/image-to-video\n"
        text = FAL_SMALL_PROJECT.replace(o3, o3 + "    provider: wavespeed\n")
        ws = small_workspace(tmp_path / "mixed", env, text, in_process=True)
        costs = {s["provider"]: 0.0 for s in ws.plan()["shots"]}
        for shot in ws.plan()["shots"]:
            costs[shot["provider"]] += shot["cost_usd"]
        assert costs == pytest.approx({"fal": 0.504, "wavespeed": 0.54})
        budget = 1.0  # over each provider's share, under the two together ($1.044)
        assert max(costs.values()) < budget < sum(costs.values())
        done = ws.render("--max-cost", str(budget))
        assert done.returncode == 3, done.stdout + done.stderr
        assert "$1.0440, over the budget of $1.0000" in done.stderr
        assert fal.requests() == [] and wavespeed.requests() == [], "not one request, paid or not"
        assert fal.stats()["queue"] == {} and wavespeed.submits_by_shot() == {}
        for provider in ("fal", "wavespeed"):
            recorded = ws.state_of(provider) if ws.state_path_of(provider).exists() else {}
            assert not any(s.get("task_id") for s in recorded.values()), provider
        # The same budget with room for both renders them, each on its own provider, once.
        again = ws.render("--max-cost", "1.05")
        assert again.returncode == 0, again.stderr
        assert fal.submits_by_shot() == {"alpha": 1, "gamma": 1} and wavespeed.submits_by_shot() == {"beta": 1}
        ws.assert_no_secret()


def test_models_check_prices_asks_fals_pricing_api(tmp_path: Path, fal: FalProcess) -> None:
    ws = Workspace(tmp_path, fal_env(fal.base_url), in_process=True)
    done = ws.cli("models", "--check-prices", "--json")
    rows = {c["model"]: c for c in json.loads(done.stdout) if c["provider"] == "fal"}
    assert rows["kling-v3.0-pro/image-to-video"]["status"] == "match"
    v4 = rows["kling-v4.0/text-to-video"]
    assert v4["catalog_usd"] == 0.157 and v4["status"] == "match"
    # No price in the catalog for fal's O3 reference-to-video: shown, not counted as a difference.
    assert rows["kling-video-o3-std/reference-to-video"]["status"] == "unknown"
    assert "kling-v4.0/video-extend" not in rows, "not offered by fal: nothing to check there"
    assert done.returncode == 0, done.stdout
    assert all(r["path"].startswith("/v1/models/pricing") for r in fal.requests())
    ws.assert_no_secret()


def test_an_interrupt_cancels_a_request_still_queued_and_nothing_is_paid(tmp_path: Path) -> None:
    with FalProcess(SECRET, latency=100.0) as fal:  # queued for 10 s (a loaded CI machine), then running
        ws = fal_workspace(tmp_path / "small", fal)
        cmd = [sys.executable, "-m", "kling_render", "render", str(ws.project), "--poll-interval", "0.1",
               "--only", "alpha"]  # fmt: skip
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        with subprocess.Popen(cmd, env=ws.env, cwd=ws.root, **pipes) as proc:  # type: ignore[call-overload]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any("/status" in r["path"] for r in fal.requests()):
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        (request,) = fal.stats()["queue"].values()
        assert request["cancelled"] and not request["charged"]
        state = ws.state_of("fal")["alpha"]
        assert state["status"] == "pending" and state["task_id"] is None and "cancelled while queued" in state["error"]


ROWS_PROJECT = """\
version: 1
name: catalog
provider: fal
rows: {from: data/products.csv, key: sku}
defaults: {model: kling-v3.0-std/image-to-video, duration: 3, sound: false}
shots:
  - {id: intro, prompt: "shot intro: our studio in soft light", image: images/mug.png}
  - {id: hero, prompt: "shot hero: the {{ row.name }} on a walnut table", image: images/mug.png}
output: {path: "renders/{{ row.sku }}.mp4", width: 320, height: 180, fps: 24}
"""


def test_a_rows_project_on_fal_bills_a_shared_shot_once(tmp_path: Path, fal: FalProcess) -> None:
    ws = small_workspace(tmp_path / "catalog", fal_env(fal.base_url), ROWS_PROJECT, in_process=True)
    (ws.root / "data").mkdir()
    (ws.root / "data" / "products.csv").write_text("sku,name\nmug-01,Blue Mug\nmug-02,Red Mug\nmug-03,Green Mug\n")
    fal.fault("lost", "/fal-ai/kling-video/v3/", body_contains="Red Mug")  # one row's answer lost
    done = ws.render()
    assert done.returncode == 0, done.stderr
    bodies = [q["body"]["prompt"] for q in fal.stats()["queue"].values()]
    assert sorted(bodies) == sorted(["shot intro: our studio in soft light"] + [
        f"shot hero: the {name} on a walnut table" for name in ("Blue Mug", "Red Mug", "Green Mug")
    ])  # fmt: skip
    assert fal.charged_by_shot() == {"intro": 1, "hero": 3} and len(fal.submits()) == 4
    for sku in ("mug-01", "mug-02", "mug-03"):
        assert decodes(ws.root / "renders" / f"{sku}.mp4").duration == pytest.approx(6.0, abs=1 / FPS)
    again = ws.render()
    assert again.returncode == 0 and len(fal.submits()) == 4, "nothing is paid twice"
    ws.assert_no_secret()
