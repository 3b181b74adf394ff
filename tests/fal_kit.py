"""The fal stand-in (tests/fake_fal.py) as its own process, for end-to-end tests of the real CLI
against fal: start it, steer it, read what it received and what it would bill."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from e2e_cli import SECRET, SMALL_PROJECT, base_env
from stand_in_http import StandInProcess

HERE = Path(__file__).resolve().parent

# SMALL_PROJECT on fal: fal publishes no price for O3 std reference-to-video, so the project gives one.
FAL_SMALL_PROJECT = SMALL_PROJECT.replace("provider: wavespeed", "provider: fal").replace(
    "shots:\n", "pricing:\n  kling-video-o3-std/reference-to-video: {fal: {per_second: 0.084}}\nshots:\n", 1
)
FAL_SMALL_COST = {"alpha": 0.252, "beta": 0.252, "gamma": 0.252}  # 3 s x 0.084 each on fal


def fal_env(base_url: str, key: str = SECRET, **extra: str) -> dict[str, str]:
    return base_env(FAL_KEY=key, KLING_RENDER_FAL_URL=base_url, **extra)


class FalProcess(StandInProcess):
    """``with FalProcess(api_key, latency=1.0) as fake: fake.base_url ...``; stopped by its own pid."""

    script = HERE / "fake_fal.py"
    key_variable = "FAL_KEY"  # the fake's --api-key default: no key in argv
    what = "the fake fal"

    def submits(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] == "POST" and _is_submit(r["path"])]

    def submits_by_shot(self) -> Counter[str]:
        """Submit POSTs per shot (the e2e projects' prompts say ``shot <id>``)."""
        return Counter(_shot(r["body"]) for r in self.submits() if isinstance(r["body"], dict))

    def created_by_shot(self) -> Counter[str]:
        """Requests that exist at fal per shot (a lost answer's included)."""
        return Counter(_shot(q["body"]) for q in self.stats()["queue"].values())

    def charged_by_shot(self) -> Counter[str]:
        """Requests fal would bill, per shot (see fake_fal's money rule)."""
        return Counter(_shot(q["body"]) for q in self.stats()["queue"].values() if q["charged"])


def _is_submit(path: str) -> bool:
    other = path.startswith(("/v1/", "/storage/", "/files/", "/upload/", "/_fake/"))
    return path.count("/") >= 3 and "/requests/" not in path and not other


def _shot(body: Any) -> str:
    prompt = body.get("prompt", "") if isinstance(body, dict) else ""
    match = re.match(r"shot (\w+)", prompt)
    return match.group(1) if match else "?"


__all__ = ["FAL_SMALL_COST", "FAL_SMALL_PROJECT", "FalProcess", "fal_env"]
