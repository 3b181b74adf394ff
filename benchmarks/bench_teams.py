"""Two machines rendering one project at once against one remote (issue 14 item 7): tasks paid and
wall time, against one machine alone.

Every scenario gets a fresh stand-in WaveSpeed process (tests/fake_wavespeed.py, each task takes
``--latency`` seconds) and a fresh bucket on moto's S3 server on 127.0.0.1 (tests/moto_s3.py);
each "machine" is the real CLI in its own subprocess, with its own checkout directory and local
cache (tests/teams_kit.py). Scenarios:

- ``alone``: one machine renders every shot (``render --no-stitch``);
- ``two at once``: two machines start the same render at the same moment: claims split the shots,
  each machine follows the other's tasks or pulls its clips;
- ``two shards``: ``--shard 1/2`` and ``--shard 2/2`` at once (the CI matrix), then ``stitch`` on a
  third machine with an empty cache (pulls every clip, makes the cut).

Target: the two-machine scenarios pay exactly one task per shot (the stand-in counts every task it
creates), and finish in clearly less time than one machine alone.

    python benchmarks/bench_teams.py [--shots 60] [--latency 1.0] [--concurrency 4] [--poll-interval 0.5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import S3_KEY_ID, S3_SECRET, S3_TOKEN  # noqa: E402
from e2e_cli import SECRET  # noqa: E402
from e2e_fake import FakeProcess  # noqa: E402
from moto_s3 import MotoS3  # noqa: E402
from teams_kit import checkouts, kinds, paid_by_shot, tasks, team_env  # noqa: E402


def s3_env(moto: MotoS3, bucket: str) -> dict[str, str]:
    return {
        "KLING_RENDER_REMOTE": f"s3://{bucket}/bench",
        "AWS_ENDPOINT_URL": moto.endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_SESSION_TOKEN": S3_TOKEN,
        "AWS_REGION": "us-east-1",
    }


def scenario(name: str, args: argparse.Namespace, moto: MotoS3, work: Path) -> dict[str, Any]:
    root = work / name.replace(" ", "-")
    with FakeProcess(SECRET, latency=args.latency) as fake:
        env = team_env(fake, s3_env(moto, moto.new_bucket()))
        machines = checkouts(root, env, 3, shots=args.shots)
        common = ("--no-stitch", "--concurrency", str(args.concurrency), "--poll-interval", str(args.poll_interval))
        if name == "alone":
            runs = [(machines[0], ())]
        elif name == "two at once":
            runs = [(machines[0], ()), (machines[1], ())]
        else:
            runs = [(machines[0], ("--shard", "1/2")), (machines[1], ("--shard", "2/2"))]
        start = time.monotonic()
        procs = [(m, m.start_render(*common, *extra), time.monotonic()) for m, extra in runs]
        per: list[dict[str, Any]] = []
        for machine, proc, began in procs:
            rc, events, err = machine.finish(proc, timeout=3600)
            if rc != 0:
                raise SystemExit(f"{name}: a render failed (exit {rc}):\n{err}")
            counts = Counter(kinds(events))
            per.append(
                {
                    "seconds": time.monotonic() - began,
                    "claimed": counts["claimed"],
                    "following": counts["following"],
                    "pulled": counts["pulled"],
                }
            )
        wall = time.monotonic() - start
        stitch_s = None
        if name == "two shards":
            began = time.monotonic()
            done = machines[2].cli("stitch", str(machines[2].project), timeout=3600)
            if done.returncode != 0:
                raise SystemExit(f"{name}: the stitch on a third machine failed:\n{done.stderr}")
            stitch_s = time.monotonic() - began
        paid = paid_by_shot(fake)
        return {
            "name": name,
            "tasks": len(tasks(fake)),
            "shots_paid_twice": sum(1 for n in paid.values() if n > 1),
            "wall": wall,
            "machines": per,
            "stitch": stitch_s,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=60)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds each stand-in task takes")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once per machine")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between polls of a task")
    args = parser.parse_args()
    moto = MotoS3.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-teams-") as tmp:
            results = []
            for name in ("alone", "two at once", "two shards"):
                results.append(scenario(name, args, moto, Path(tmp)))
                print(f"{name}: {results[-1]['tasks']} tasks, {results[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    finally:
        moto.stop()
    print(
        f"{args.shots} shots, stand-in task latency {args.latency:g} s, concurrency {args.concurrency} per machine, "
        f"poll every {args.poll_interval:g} s\n"
    )
    print("| scenario | tasks paid | shots paid twice | wall s | per machine: s (claimed/following/pulled) |")
    print("|---|---|---|---|---|")
    for r in results:
        machines = ", ".join(
            f"{m['seconds']:.1f} ({m['claimed']}/{m['following']}/{m['pulled']})" for m in r["machines"]
        )
        stitch = f"; stitch on a third machine {r['stitch']:.1f} s" if r["stitch"] is not None else ""
        print(f"| {r['name']} | {r['tasks']} | {r['shots_paid_twice']} | {r['wall']:.1f} | {machines}{stitch} |")
    alone = results[0]["wall"]
    ok = all(r["tasks"] == args.shots and r["shots_paid_twice"] == 0 for r in results)
    faster = all(r["wall"] < alone for r in results[1:])
    print("\nspeed-up against one machine: " + ", ".join(f"{r['name']} x{alone / r['wall']:.2f}" for r in results[1:]))
    print(f"target one task per shot, two machines at once: {'OK' if ok else 'MISSED'}")
    print(f"target two machines faster than one: {'OK' if faster else 'MISSED'}")
    return 0 if ok and faster else 1


if __name__ == "__main__":
    raise SystemExit(main())
