"""``kling-render models --check-prices`` against the stand-in's pricing endpoint. The commands run
in this process (``in_process``); a changed price (exit 1) also goes through the real CLI.

The stand-in prices from its own table (``fake_wavespeed.PRICES``, WaveSpeed's page figures), not
from the catalog, so a price changed on the stand-in's side is a price WaveSpeed changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import Workspace, base_env, ws_env
from fake_wavespeed import FakeWaveSpeed

from kling_render.catalog.catalog import load_catalog

PRICING = "/api/v3/model/pricing"


@pytest.fixture
def ws(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> Workspace:
    return Workspace(tmp_path, ws_env(fake_wavespeed.base_url), in_process=True)


def pricing_bodies(fake_wavespeed: FakeWaveSpeed) -> list[Any]:
    return [r.body for r in fake_wavespeed.requests if r.method == "POST" and r.path == PRICING]


def checks(done: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["model"], c["case"]): c for c in json.loads(done.stdout)}


def test_every_catalog_price_matches_the_live_one(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    done = ws.cli("models", "--check-prices")
    assert done.returncode == 0, done.stdout + done.stderr
    for model_id in load_catalog():
        assert model_id in done.stdout
    assert "differs" not in done.stdout and "error" not in done.stdout

    bodies = pricing_bodies(fake_wavespeed)
    sound_takers = [m for m in load_catalog().values() if m.takes_sound]
    assert len(bodies) == len(load_catalog()) + len(sound_takers), "each model at its defaults, and with sound on"
    assert {"model_id": "kwaivgi/kling-video-o3-std/reference-to-video",
            "inputs": {"sound": False, "aspect_ratio": "16:9", "duration": 5}} in bodies
    assert {"model_id": "kwaivgi/kling-v3.0-pro/image-to-video",
            "inputs": {"cfg_scale": 0.5, "sound": True, "duration": 5}} in bodies
    assert {"model_id": "kwaivgi/kling-video-o1-std/image-to-video", "inputs": {"duration": 5}} in bodies
    # Kling 4.0: priced at its default resolution (its price depends on it), audio always included.
    assert {"model_id": "kwaivgi/kling-v4.0/image-to-video", "inputs": {"resolution": "720p", "duration": 5}} in bodies
    # an image model is priced per image: its defaults, no duration
    assert {"model_id": "bytedance/seedream-v4.5", "inputs": {"size": "2048*2048"}} in bodies
    assert all(r.status != 0 and "submit" not in r.path for r in fake_wavespeed.requests)
    assert fake_wavespeed.submits() == [] and fake_wavespeed.tasks == {}, "pricing never runs a paid task"  # fmt: skip

    result = checks(ws.cli("models", "--check-prices", "--json"))
    assert result[("kling-video-o3-std/image-to-video", "sound on")]["catalog_usd"] == 1.2
    assert result[("kling-video-o3-std/image-to-video", "sound on")]["live_usd"] == 1.2
    # No WaveSpeed page gave the text-to-video sound-on price: shown, not counted as a difference.
    assert result[("bytedance/seedream-v4.5/edit", "defaults")]["catalog_usd"] == 0.04
    assert result[("bytedance/seedream-v4.5/edit", "defaults")]["status"] == "match"
    t2v = result[("kling-v3.0-std/text-to-video", "sound on")]
    assert t2v["status"] == "unknown" and t2v["catalog_usd"] is None and t2v["live_usd"] == 0.63
    ws.assert_no_secret()


def test_a_changed_price_exits_1_and_names_the_model(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    ws.in_process = False
    fake_wavespeed.prices["kling-v3.0-pro/image-to-video"] = (0.14, 1.5, None)
    done = ws.cli("models", "--check-prices")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if " differs " in line]
    assert len(rows) == 2 and all(row.startswith("kling-v3.0-pro/image-to-video") for row in rows)
    assert "$0.5600" in rows[0] and "$0.7000" in rows[0]
    # 2 unknown: no WaveSpeed page gives v3.0 std text-to-video's sound-on price, nor any for v4.0 video-edit
    assert done.stdout.rstrip().endswith("2 differs, 14 match, 2 unknown")

    result = checks(ws.cli("models", "--check-prices", "--json"))
    assert {k for k, c in result.items() if c["status"] == "differs"} == {
        ("kling-v3.0-pro/image-to-video", "defaults"),
        ("kling-v3.0-pro/image-to-video", "sound on"),
    }
    fake_wavespeed.prices["kling-v3.0-pro/image-to-video"] = (0.112, 1.5, None)
    fake_wavespeed.prices["kling-video-o3-std/image-to-video"] = (0.18, 1.5, None)  # only the sound factor moved
    done = ws.cli("models", "--check-prices", "--json")
    assert done.returncode == 1
    assert [k for k, c in checks(done).items() if c["status"] == "differs"] == [
        ("kling-video-o3-std/image-to-video", "sound on")
    ]


def test_a_model_the_service_does_not_price_exits_1(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    del fake_wavespeed.prices["kling-video-o1-std/image-to-video"]
    done = ws.cli("models", "--check-prices", "--json")
    assert done.returncode == 1
    (row,) = [c for c in json.loads(done.stdout) if c["status"] == "error"]
    assert row["model"] == "kling-video-o1-std/image-to-video" and "not found" in row["error"]


def test_no_key_or_a_rejected_key_is_a_usage_error(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> None:
    ws = Workspace(tmp_path, base_env(WAVESPEED_BASE_URL=fake_wavespeed.base_url), in_process=True)
    done = ws.cli("models", "--check-prices")
    assert done.returncode == 2 and "WAVESPEED_API_KEY" in done.stderr and "FAL_KEY" in done.stderr
    assert done.stdout == ""
    assert fake_wavespeed.requests == []
    wrong = "sk-wrong-KEY-0987654321"
    done = ws.cli("models", "--check-prices", env=ws_env(fake_wavespeed.base_url, key=wrong))
    assert done.returncode == 2 and "rejected (401)" in done.stderr
    assert wrong not in done.stdout + done.stderr, "the key the server echoed must be redacted"
    assert "Traceback" not in done.stderr


def test_a_projects_declared_models_and_price_overrides_are_checked(
    ws: Workspace, fake_wavespeed: FakeWaveSpeed
) -> None:
    ws.project.write_text(
        "version: 1\nname: p\n"
        "models:\n"
        "  my-t2v:\n"
        "    endpoint: kwaivgi/kling-v3.0-pro/text-to-video\n"
        "    fields: {prompt: {type: text}, sound: {type: boolean, default: false}}\n"
        "    duration: {min: 3, max: 15, default: 5}\n"
        '    price: {per_second: "0.112", sound_multiplier: "1.5"}\n'
        "  elsewhere:\n"
        "    endpoint: acme/not-on-wavespeed\n"
        "    fields: {prompt: {type: text}}\n"
        "    duration: {min: 3, max: 15, default: 5}\n"
        '    price: {per_second: "0.1"}\n'
        "pricing:\n"
        '  kling-v3.0-std/image-to-video: {per_second: "0.09"}\n'
        "shots:\n  - {id: a, model: my-t2v, prompt: x}\n"
    )
    done = ws.cli("models", str(ws.project), "--check-prices", "--json")
    assert done.returncode == 1
    result = checks(done)
    assert result[("my-t2v", "defaults")]["status"] == "match"
    assert result[("my-t2v", "sound on")]["live_usd"] == 0.84 and result[("my-t2v", "sound on")]["status"] == "match"
    assert result[("elsewhere", "defaults")]["status"] == "error"
    assert result[("kling-v3.0-std/image-to-video", "defaults")]["status"] == "differs"
    assert result[("kling-v3.0-std/image-to-video", "defaults")]["catalog_usd"] == 0.45
    assert {"model_id": "acme/not-on-wavespeed", "inputs": {"duration": 5}} in pricing_bodies(fake_wavespeed)
