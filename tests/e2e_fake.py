"""The fake WaveSpeed server as a separate process, for end-to-end tests of the real CLI.

``python tests/e2e_fake.py --port 0 --latency L`` runs ``tests/fake_wavespeed.py`` (its
``trickle`` output fault is the slow download a test kills the CLI in the middle of).

In a test, ``FakeProcess`` starts it, reads the base URL from its first stdout line, steers it
over HTTP (``fault``) and reads what it received (``requests``, ``submits_by_shot``).
"""

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

HERE = Path(__file__).resolve().parent
SUBMIT_PREFIX = "/api/v3/kwaivgi/"


class FakeProcess:
    """``with FakeProcess(api_key, latency=1.0) as fake: fake.base_url ...``; stopped by its own pid."""

    def __init__(self, api_key: str, *, latency: float = 0.3, args: tuple[str, ...] = ()) -> None:
        self.api_key = api_key
        self.latency = latency
        self.args = args  # more options of tests/fake_wavespeed.py (``--no-list-inputs``, ...)
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> FakeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAVESPEED_")}
        env["WAVESPEED_API_KEY"] = self.api_key  # the fake's --api-key default: no key in argv
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--port", "0", "--latency", str(self.latency), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise RuntimeError(f"the fake server did not start (first line {line!r})")
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

    # -- steering and inspecting ----------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def fault(self, kind: str, path_prefix: str, count: int = 1, **options: Any) -> None:
        self._call("/_fake/faults", {"kind": kind, "path_prefix": path_prefix, "count": count, **options})

    def clear_faults(self) -> None:
        self._call("/_fake/clear", {})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("/_fake/stats")
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("/_fake/requests")
        return result

    def submits(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] == "POST" and r["path"].startswith(SUBMIT_PREFIX)]

    def submits_by_shot(self) -> Counter[str]:
        """Submit POSTs per shot, the shot read from the prompt (the e2e projects say ``shot <id>:``)."""
        counts: Counter[str] = Counter()
        for record in self.submits():
            body = record["body"]
            if not isinstance(body, dict):
                # A body cut short by a kill mid-POST: not JSON, refused with a 400, no task created.
                continue
            prompt = body.get("prompt", "")
            match = re.match(r"shot (\w+):", prompt)
            counts[match.group(1) if match else "?"] += 1
        return counts

    def gets(self, prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] == "GET" and r["path"].startswith(prefix)]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    import fake_wavespeed

    sys.exit(fake_wavespeed.main())
