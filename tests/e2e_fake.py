"""The fake WaveSpeed server as a separate process, for end-to-end tests of the real CLI.

``python tests/e2e_fake.py --port 0 --latency L`` runs ``tests/fake_wavespeed.py`` (its
``trickle`` output fault is the slow download a test kills the CLI in the middle of).

In a test, ``FakeProcess`` starts it, reads the base URL from its first stdout line, steers it
over HTTP (``fault``) and reads what it received (``requests``, ``submits_by_shot``).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from stand_in_http import StandInProcess

HERE = Path(__file__).resolve().parent
SUBMIT_PREFIX = "/api/v3/kwaivgi/"


class FakeProcess(StandInProcess):
    """``with FakeProcess(api_key, latency=1.0) as fake: fake.base_url ...``; stopped by its own pid."""

    script = Path(__file__).resolve()
    key_variable = "WAVESPEED_API_KEY"  # the fake's --api-key default: no key in argv
    what = "the fake server"

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
