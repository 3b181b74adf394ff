"""A render in its own process, for kill -9 tests: ``python tests/runner_harness.py ROOT [options]``.

The provider is the file-backed StubProvider: its tasks live in ``ROOT/server/`` so they
outlive this process, like a real service's. Prints the run report as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner_stub import StubProvider, make_job

from kling_render.records.lockfile import LockFile
from kling_render.records.state import StateStore
from kling_render.run.scheduler import RunOptions, run
from kling_render.store.cache import ClipCache

SHOTS = ("intro", "pour", "hero", "outro")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--kill-at", default=None, help="submit|poll|download:<shot>")
    parser.add_argument("--polls", type=int, default=1, help="polls until a task completes")
    parser.add_argument("--resubmit-unknown", action="store_true")
    parser.add_argument("--no-list", action="store_true", help="the provider cannot list its tasks")
    args = parser.parse_args(argv)
    root: Path = args.root
    project = root / "teaser.yaml"
    provider = StubProvider(root / "sources", polls_to_complete=args.polls, journal=root / "server",
                            kill_at=args.kill_at)  # fmt: skip
    provider.lists_tasks = not args.no_list
    jobs = [make_job(shot, index=n) for n, shot in enumerate(SHOTS)]
    options = RunOptions(poll_interval=0.02, concurrency=2, resubmit_unknown=args.resubmit_unknown)
    with StateStore.for_project(project, "stub", lock_timeout=10) as state:
        report = run(jobs, provider, state=state, cache=ClipCache(root / "cache"), options=options,
                     lock=LockFile.for_project(project))  # fmt: skip
    sys.stdout.write(json.dumps(report.to_json()) + "\n")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
