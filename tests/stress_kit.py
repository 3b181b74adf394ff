"""Helpers for the stress tests (chaos, locking, disk trouble, output safety, key hygiene).

A wavespeed project of N tiny shots, the real CLI as a subprocess (the stand-in is conftest's
``fake_process``), and the checks every stress test shares: the cache is sound, the final cut decodes.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from kling_render.media.ffmpeg import run as ffmpeg_run
from kling_render.records.lockfile import read_lock
from kling_render.records.state import ShotState, StateStore, read_state
from kling_render.store.cache import ClipCache

API_KEY = "stress-key-5f3c9a7e1d"
MODEL = "kling-video-o3-std/image-to-video"
OTHER_MODEL = "kling-v3.0-std/image-to-video"


def shot_id(n: int) -> str:
    return f"s{n:03d}"


def write_project(
    root: Path,
    shots: int,
    *,
    models: dict[int, str] | None = None,
    output: str = "renders/final.mp4",
    provider: str = "wavespeed",
) -> Path:
    """A project of ``shots`` 3-second shots on ``provider``; each prompt names its shot (``shot sNNN``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    Image.new("RGB", (640, 360), (40, 90, 120)).save(root / "images" / "a.png")
    lines = [
        "version: 1",
        "name: stress",
        f"provider: {provider}",
        f"defaults: {{model: {MODEL}, duration: 3, sound: false}}",
        f"output: {{path: {output}, width: 192, height: 108, fps: 24}}",
        "shots:",
    ]
    for n in range(shots):
        model = (models or {}).get(n, MODEL)
        lines += [
            f"  - id: {shot_id(n)}",
            f"    model: {model}",
            f'    prompt: "shot {shot_id(n)}, a mug on a table"',
            "    image: images/a.png",
        ]
    path = root / "project.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def shot_of(prompt: Any) -> str | None:
    """The shot a submit body belongs to (from its prompt)."""
    if not isinstance(prompt, str) or not prompt.startswith("shot "):
        return None
    return prompt.split(",", 1)[0].removeprefix("shot ")


def cli_env(base_url: str, key: str = API_KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAVESPEED_", "KLING_RENDER_", "FAL_"))}
    env.update(WAVESPEED_API_KEY=key, WAVESPEED_BASE_URL=base_url, **extra)
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kling_render", *args]


def render_args(project: Path, *extra: str, concurrency: int = 10, provider: str = "wavespeed") -> list[str]:
    return cli_cmd(
        "render", str(project), "--provider", provider, "--poll-interval", "0.05",
        "--concurrency", str(concurrency), "--no-stitch", *extra,
    )  # fmt: skip


def state_of(project: Path, provider: str = "wavespeed") -> dict[str, ShotState]:
    return read_state(StateStore.for_project(project, provider).path)


def submits_by_shot(requests: Sequence[dict[str, Any]], *, created_only: bool = True) -> Counter[str]:
    """Submit POSTs per shot; ``created_only`` drops the refused ones (429/4xx created nothing; the
    stand-in creates the task behind a 5xx or a dropped answer, as the real service may)."""
    counts: Counter[str] = Counter()
    for r in requests:
        if r["method"] != "POST" or not r["path"].startswith("/api/v3/kwaivgi/"):
            continue
        if created_only and r["status"] not in (0, 200, 500, 502, 503, 504):
            continue
        body = r["body"]
        sid = shot_of(body.get("prompt")) if isinstance(body, dict) else None
        if sid is not None:
            counts[sid] += 1
    return counts


def assert_cache_sound(project: Path, shots: int, cache_root: Path | None = None, provider: str = "wavespeed") -> None:
    """Every shot has one complete entry whose clip hashes to its sidecar; no temp files anywhere."""
    root = cache_root or project.parent / ".kling-render" / "cache"
    cache = ClipCache(root)
    clips = sorted((root / provider).rglob("*.mp4"))
    sidecars = sorted((root / provider).rglob("*.json"))
    assert len(clips) == len(sidecars) == shots, (len(clips), len(sidecars))
    for clip in clips:
        assert cache.verify(provider, clip.stem), f"{clip} does not match its sidecar"
    leftovers = list(cache.tmp_dir.iterdir()) if cache.tmp_dir.exists() else []
    assert not leftovers, leftovers
    temp = [p for p in project.parent.rglob("*.tmp")]
    assert not temp, temp
    state = state_of(project, provider)
    lock = read_lock(project.with_suffix(".lock"))
    for n in range(shots):
        sid = shot_id(n)
        entry = cache.get(provider, state[sid].key)
        assert entry is not None, sid
        assert state[sid].status == "done", (sid, state[sid])
        assert state[sid].output_sha256 == entry.sha256 == lock[sid].output_sha256


def assert_decodes(path: Path, min_seconds: float) -> float:
    """Decode ``path`` end to end (every frame); return its duration from the decoder's last timestamp."""
    assert path.is_file() and path.stat().st_size > 0
    ffmpeg_run(["-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"], "decoding the final cut")
    from kling_render.media.probe import probe

    duration = float(probe(path).duration)
    assert duration >= min_seconds - 0.1, duration
    return duration
