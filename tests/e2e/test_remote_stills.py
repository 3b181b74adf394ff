"""Stills through the shared remote, against the WaveSpeed stand-in (an image model, every task its
own output) and a real S3 API (moto on 127.0.0.1), counting paid tasks; machines started together
are real CLI processes, one machine alone runs its commands in this process (``machines``):

- two machines sharing one remote pay for a still once (its claim), and for each clip it feeds once;
- a still lives in the remote's stills area, and a pulled still is checked as an image (not as a
  clip): right digest, wrong bytes never count, and nothing is paid for it or what it feeds;
- the remote's still is the team's: a different still made here for the same key is replaced
  before any key is computed, so the shots it feeds key on the team's still and are pulled, not
  paid again;
- a machine that rendered nothing stitches the team's cut (the still pulled first: it keys its shots).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import S3Case
from e2e_fake import FakeProcess
from mediagen import make_clip
from teams_kit import Checkout, team_env

from kling_render.media.image_check import check_image
from kling_render.store.remote.clips import STILLS, blob_path, record_path

IMAGE_MODEL = "acme/pix-1"  # served by the stand-in as an image model (--image-model)

PROJECT = """\
version: 1
name: story
provider: wavespeed
models:
  acme/pix-1:
    title: Acme Pix 1, text-to-image
    endpoint: acme/pix-1
    output: image
    fields:
      prompt: {type: text}
      size: {type: string, default: "640*360"}
    required: [prompt]
    price: {per_image: "0.03", date: "2026-12-07", source: "the stand-in"}
stills:
  - id: hero
    model: acme/pix-1
    prompt: "shot hero: a ceramic mug, studio packshot"
defaults: {model: kling-v3.0-std/image-to-video, duration: 3, sound: false}
shots:
  - id: a
    prompt: "shot a: slow push-in"
    image: {still: hero}
  - id: b
    prompt: "shot b: coffee pours"
    image: {from: a, frame: last}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
"""


# Each task takes a second, so two machines started together meet at the still's claim.
pytestmark = pytest.mark.stand_in(latency=1.0, args=("--image-model", IMAGE_MODEL, "--distinct"))


@pytest.fixture
def fake(fake_process: FakeProcess) -> FakeProcess:
    """The stand-in as its own process (conftest's ``fake_process``, options from this module's marker)."""
    return fake_process


def machines(tmp_path: Path, env: dict[str, str], count: int) -> list[Checkout]:
    """``count`` checkouts of the project (separate directories, separate local caches). Machines
    started together are real CLI processes (``start_render``); one machine's command while no other
    runs runs in this process (``in_process``, as teams_kit.checkouts)."""
    out = []
    for n in range(1, count + 1):
        root = tmp_path / f"machine-{n}"
        root.mkdir()
        (root / "project.yaml").write_text(PROJECT, encoding="utf-8")
        out.append(Checkout(root, dict(env), in_process=True))
    return out


def paid(fake: FakeProcess) -> Counter[str]:
    """Tasks created per step, from the prompts (``shot <id>: ...``)."""
    counts: Counter[str] = Counter()
    for task in fake.stats()["tasks"].values():
        match = re.match(r"shot (\w+):", str(task["body"].get("prompt", "")))
        counts[match.group(1) if match else "?"] += 1
    return counts


def both(one: Checkout, two: Checkout, *args: str) -> list[tuple[int, list[dict[str, Any]], str]]:
    """``render ARGS`` on both machines at once."""
    procs = [one.start_render(*args), two.start_render(*args)]
    return [one.finish(procs[0]), two.finish(procs[1])]


def lock(checkout: Checkout) -> dict[str, dict[str, Any]]:
    shots: dict[str, dict[str, Any]] = json.loads(checkout.project.with_suffix(".lock").read_text())["shots"]
    return shots


def still_files(checkout: Checkout) -> list[Path]:
    return sorted((checkout.cache_dir / "stills" / "wavespeed").rglob("*.img"))


def still_key(checkout: Checkout) -> str:
    [still] = checkout.plan()["stills"]
    return str(still["key"])


def remote_keys(s3: S3Case, area: str) -> list[str]:
    return [k for k in s3.server.list_raw(s3.bucket) if k.startswith(f"{s3.prefix}/{area}/")]


def test_two_machines_sharing_a_remote_pay_for_a_still_once(tmp_path: Path, fake: FakeProcess, s3: S3Case) -> None:
    one, two = machines(tmp_path, team_env(fake, s3.env()), 2)
    # The approval gate on both machines at once: one pays for the still, the other uses it.
    for code, _, err in both(one, two, "--until", "stills"):
        assert code == 0, err
    assert paid(fake) == Counter(hero=1)
    [mine], [theirs] = still_files(one), still_files(two)
    assert mine.read_bytes() == theirs.read_bytes()
    check_image(theirs)  # the pulled still is a whole image
    key = still_key(one)
    # In the stills area of the remote (a record and an image blob), never among the clips.
    assert remote_keys(s3, "stills") == [f"{s3.prefix}/{record_path('wavespeed', key, STILLS)}"]
    assert remote_keys(s3, "clips") == []
    record = json.loads(s3.server.get_raw(s3.bucket, f"{s3.prefix}/{record_path('wavespeed', key, STILLS)}"))
    assert s3.server.get_raw(s3.bucket, f"{s3.prefix}/{blob_path(record['sha256'], STILLS)}") == mine.read_bytes()

    # The video on both machines at once: each clip the still feeds is paid once, and both cut the same.
    for code, _, err in both(one, two):
        assert code == 0, err
    assert paid(fake) == Counter(hero=1, a=1, b=1)
    assert one.cut_bytes() == two.cut_bytes()
    ours, team = lock(one), lock(two)
    for step in ("still:hero", "a", "b"):
        assert ours[step]["key"] == team[step]["key"] and ours[step]["output_sha256"] == team[step]["output_sha256"]
    assert len(remote_keys(s3, "clips")) == 2


@pytest.mark.parametrize("junk", ["random bytes", "a clip"])
def test_a_pulled_still_is_checked_as_an_image_and_nothing_is_paid_for_it(
    tmp_path: Path, fake: FakeProcess, s3: S3Case, junk: str
) -> None:
    one, two, three = machines(tmp_path, team_env(fake, s3.env()), 3)
    gate = one.render("--until", "stills")
    assert gate.returncode == 0, gate.stderr
    key = still_key(one)
    # Bytes under their own digest, and the still's record pointing at them: size and sha256 agree.
    data = os.urandom(50_000) if junk == "random bytes" else make_clip(tmp_path / "clip.mp4", duration=1.0).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    s3.server.put_raw(s3.bucket, f"{s3.prefix}/{blob_path(digest, STILLS)}", data)
    path = f"{s3.prefix}/{record_path('wavespeed', key, STILLS)}"
    record = json.loads(s3.server.get_raw(s3.bucket, path))
    s3.server.put_raw(s3.bucket, path, json.dumps({**record, "sha256": digest, "size": len(data)}).encode())

    done = two.render()
    assert done.returncode == 1, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("  still:hero: failed: ")]
    assert "not a usable still" in line and blob_path(digest, STILLS) in line, done.stderr
    # Never paid again for a still the remote holds, nor for the shots waiting for it.
    assert paid(fake) == Counter(hero=1)
    assert not still_files(two) and not two.clips() and not two.final_cut.exists()
    stitched = three.cli("stitch", str(three.project))
    assert stitched.returncode == 1 and "not a usable still" in stitched.stderr, stitched.stderr
    assert not still_files(three) and not three.final_cut.exists()


def test_the_remotes_still_is_the_teams_and_keys_the_shots_it_feeds(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    env = team_env(fake, s3.env())
    one, two, three = machines(tmp_path, env, 3)
    first = one.render()
    assert first.returncode == 0, first.stderr
    assert paid(fake) == Counter(hero=1, a=1, b=1)
    # The second machine made its own still before the remote was set: another image, same key.
    alone = {k: v for k, v in env.items() if k != "KLING_RENDER_REMOTE"}
    local = two.cli("render", str(two.project), "--poll-interval", "0.05", "--until", "stills", env=alone)
    assert local.returncode == 0, local.stderr
    assert paid(fake) == Counter(hero=2, a=1, b=1)
    [own] = still_files(two)
    assert own.read_bytes() != still_files(one)[0].read_bytes()

    # With the remote: the team's still replaces it (said), a and b key on the team's still and are
    # pulled, nothing more is paid, and both machines cut and lock the same.
    done = two.render()
    assert done.returncode == 0, done.stderr
    assert "still:hero: replaced" in done.stderr and "differed from the remote's still" in done.stderr
    assert paid(fake) == Counter(hero=2, a=1, b=1)
    assert still_files(two)[0].read_bytes() == still_files(one)[0].read_bytes()
    assert two.cut_bytes() == one.cut_bytes()
    made = {k: v["output_sha256"] for k, v in lock(one).items()}
    assert {k: v["output_sha256"] for k, v in lock(two).items()} == made
    assert any((two.cache_dir / "stills" / "quarantine").rglob("*.img"))  # this machine's still set aside

    # A machine that rendered nothing plans with the team's still: its recorded digest keys a, whose
    # clip the remote holds (nothing is pulled or paid by a plan).
    doc = three.plan()
    assert [s["status"] for s in doc["stills"]] == ["cached"]
    assert {s["id"]: s["status"] for s in doc["shots"]}["a"] == "cached"
    assert not still_files(three) and not three.clips()
    # It stitches the team's cut: the still first (it keys a), then the clips.
    stitched = three.cli("stitch", str(three.project))
    assert stitched.returncode == 0, stitched.stderr
    assert three.cut_bytes() == one.cut_bytes()
    assert set(lock(three)) == {"still:hero", "a", "b"}
    assert paid(fake) == Counter(hero=2, a=1, b=1)
