"""The stand-in's distinct clips (``variants``): one clip per prompt, for the stitch benchmarks."""

from __future__ import annotations

import time

import httpx
import pytest
from fake_wavespeed import FakeWaveSpeed, clip_bytes

KEY = "sk-test-variants-0123456789"
pytestmark = pytest.mark.stand_in(latency=0.05, api_key=KEY)
MODEL = "kling-v3.0-std/image-to-video"


def clip_for(client: httpx.Client, prompt: str) -> bytes:
    """Submit a task for ``prompt``, wait until it completes, download its clip."""
    body = {"prompt": prompt, "image": "https://cdn.example.com/a.png", "duration": 3}
    task = client.post(f"/api/v3/kwaivgi/{MODEL}", json=body).json()["data"]["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = client.get(f"/api/v3/predictions/{task}/result").json()["data"]
        if data["status"] == "completed":
            return client.get(data["outputs"][0]).content
        time.sleep(0.02)
    raise AssertionError(f"task {task} never completed")


@pytest.mark.stand_in(latency=0.05, api_key=KEY, variants=2)
def test_variants_give_each_prompt_its_own_clip_and_keep_it(fake_wavespeed: FakeWaveSpeed) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=fake_wavespeed.base_url, headers=headers, timeout=30) as client:
        a, b, a_again, c = (clip_for(client, p) for p in ("shot a", "shot b", "shot a", "shot c"))
    assert a == a_again  # one prompt, one clip, however often it is rendered
    assert a != b  # two prompts, two clips
    assert c == a  # a third prompt cycles back to the first of the 2 variants
    assert a != clip_bytes(3) and b != clip_bytes(3)  # neither is the one clip served without variants
    assert a[4:8] == b[4:8] == b"ftyp"  # real MP4s


def test_without_variants_every_task_gets_the_one_clip(fake_wavespeed: FakeWaveSpeed) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=fake_wavespeed.base_url, headers=headers, timeout=30) as client:
        clips = {clip_for(client, p) for p in ("shot a", "shot b")}
    assert clips == {clip_bytes(3)}
