"""The fal stand-in (tests/fake_fal.py) as its own process, for end-to-end tests of the real CLI
against fal: start it, steer it, read what it received and what it would bill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from e2e_cli import SECRET, SMALL_PROJECT, base_env

HERE = Path(__file__).resolve().parent

# SMALL_PROJECT on fal: fal publishes no price for O3 std reference-to-video, so the project gives one.
FAL_SMALL_PROJECT = SMALL_PROJECT.replace("provider: wavespeed", "provider: fal").replace(
    "shots:\n", "pricing:\n  kling-video-o3-std/reference-to-video: {fal: {per_second: 0.084}}\nshots:\n", 1
)
FAL_SMALL_COST = {"alpha": 0.252, "beta": 0.252, "gamma": 0.252}  # 3 s x 0.084 each on fal


def fal_env(base_url: str, key: str = SECRET, **extra: str) -> dict[str, str]:
    return base_env(FAL_KEY=key, KLING_RENDER_FAL_URL=base_url, **extra)


class FalProcess:
    """``with FalProcess(api_key, latency=1.0) as fake: fake.base_url ...``; stopped by its own pid."""

    def __init__(self, api_key: str, *, latency: float = 0.3, args: tuple[str, ...] = ()) -> None:
        self.api_key, self.latency, self.args = api_key, latency, args
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> FalProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
        env["FAL_KEY"] = self.api_key  # the fake's --api-key default: no key in argv
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fake_fal.py"), "--port", "0", "--latency", str(self.latency), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise RuntimeError(f"the fake fal did not start (first line {line!r})")
        self.base_url = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def fault(self, kind: str, path_prefix: str = "/", count: int = 1, **options: Any) -> None:
        self._call("/_fake/faults", {"kind": kind, "path_prefix": path_prefix, "count": count, **options})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("/_fake/stats")
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("/_fake/requests")
        return result

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
