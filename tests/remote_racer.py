"""One side of a race on the remote's claims, run as its own process by the tests.

    python tests/remote_racer.py acquire --keys K1,K2,... --go FILE --tag A
    python tests/remote_racer.py record  --keys K1,K2,... --go FILE --tag A

The remote comes from the environment (KLING_RENDER_REMOTE and the AWS variables), as in a
real run. ``record`` reads every claim first, then waits for the go file like ``acquire``, so
both racers hold the same ETags when they start writing. The go file holds a start time; key i
is written at start + i * STEP by both racers, so their requests for one key meet (a process
that merely started first would otherwise take every key before the other began). Prints one
JSON line per key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from kling_render.store.remote.claims import Lost, Owner, Won
from kling_render.store.remote.connect import remote_for

STEP = 0.03  # seconds between keys


def wait_for(go: Path) -> float:
    """The start time (time.time()) written in the go file, once it exists."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return float(go.read_text())
        except (OSError, ValueError):  # not there yet, or being written
            if time.monotonic() > deadline:
                raise SystemExit("no go file") from None
            time.sleep(0.001)


async def race(mode: str, keys: list[str], go: Path, tag: str) -> None:
    remote = remote_for(None, owner=Owner.here(run_id=f"racer-{tag}"))
    assert remote is not None, "KLING_RENDER_REMOTE is not set"
    claims = {}
    if mode == "record":
        for key in keys:
            claim = await remote.claims.read(key)
            assert claim is not None, key
            claims[key] = claim
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    start = wait_for(go)
    for n, key in enumerate(keys):
        time.sleep(max(0.0, start + n * STEP - time.time()))
        if mode == "acquire":
            outcome = await remote.claims.acquire(key, provider="wavespeed", model="m")
        else:
            outcome = await remote.claims.record_task(claims[key], f"task-{tag}-{key[:8]}")
        if isinstance(outcome, Won):
            doc = {"key": key, "won": True, "run": outcome.claim.record.owner.run_id, "task": outcome.claim.task_id}
        else:
            assert isinstance(outcome, Lost)
            current = outcome.current
            doc = {
                "key": key,
                "won": False,
                "run": None if current is None else current.record.owner.run_id,
                "task": None if current is None else current.task_id,
            }
        sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("acquire", "record"))
    parser.add_argument("--keys", required=True)
    parser.add_argument("--go", required=True, type=Path)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()
    asyncio.run(race(args.mode, args.keys.split(","), args.go, args.tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
