"""Pipelined stitch (issue 20, "Done when"): does the stitch hide behind the provider's work?

``--shots`` (24) distinct shots at ``--media`` (720p: 1280x720 H.264, 24 fps, ~1.3 MB/s, from the
stand-in), 5 s each with sound, most of them fading in from the one before (``--fade`` 0.5 s: the
cut is re-encoded, as segments); the stand-in takes ``--latency`` (4) s per task, the CLI runs
``--concurrency`` (4) at a time, so ceil(24/4) = 6 waves. Each round renders the project twice
from nothing (a fresh checkout: fresh cache and state), in alternating order:

- ``render --json``: the clips, then (or, when pipelined, meanwhile) the cut;
- ``render --json --no-stitch``: the clips only.

Target: render with the stitch <= ``--target`` (1.15) x render --no-stitch, judged on the median
of the rounds' ratios. Also printed, from the JSON events: seconds from the last clip landing to
the cut being written (the part that must not grow with the number of clips), and the segments
the stitch encoded.

    python benchmarks/bench_pipelined.py [--shots 24] [--media 720p] [--latency 4] [--concurrency 4]
        [--poll-interval 0.5] [--rounds 2] [--fade 0.5] [--target 1.15] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from issue20_kit import (
    OUTPUT,
    BenchError,
    Checkout,
    Result,
    checkout,
    cli_env,
    common_args,
    event_time,
    log,
    main_frame,
    median,
    parse,
    premake_clips,
    servers,
    stitch_figures,
    verdict,
    write_project,
)

QUICK = {"shots": 6, "media": "tiny", "latency": 1.0, "concurrency": 3, "rounds": 1, "timeout": 120.0}


def timeline(result: Result) -> dict[str, Any]:
    """From a render's JSON events: when the last clip landed and when the cut was written,
    relative to the first event, and what the stitch did."""
    if not result.events:
        return {}
    start = event_time(result.events[0])
    done = [event_time(e) for e in result.events if e.get("event") in ("done", "skipped-cached")]
    stitched = [event_time(e) for e in result.of_kind("stitched")]
    # Whatever the stitch reports first (stitching, stitch-progress, a segment event): pipelined,
    # it comes before the last clip lands.
    began = [event_time(e) for e in result.events if str(e.get("event", "")).startswith(("stitch", "segment"))]
    figures = stitch_figures(result)
    out: dict[str, Any] = {"figures": figures.text() if figures else "no stitch figures found"}
    if done:
        out["last_clip"] = max(done) - start
    if began:
        out["began"] = min(began) - start
    if stitched:
        out["stitched"] = stitched[-1] - start
    if done and stitched:
        out["tail"] = stitched[-1] - max(done)
    return out


def one_render(template: Path, dest: Path, env: dict[str, str], args: argparse.Namespace, stitch: bool) -> Result:
    machine: Checkout = checkout(template, dest, env)
    extra = ["--concurrency", str(args.concurrency), "--poll-interval", str(args.poll_interval)]
    result = machine.render(*extra, *([] if stitch else ["--no-stitch"]), timeout=args.timeout)
    if stitch and not machine.cut.exists():
        raise BenchError(f"`render` exited 0 but wrote no cut:\n{result.stderr[-2000:]}")
    if not args.keep:
        machine.remove()  # 720p checkouts are ~7 MB a clip
    return result


def measure(work: Path, args: argparse.Namespace) -> bool:
    n, c, lat = args.shots, args.concurrency, args.latency
    log(f"making {n} distinct {args.media} clips for the stand-in (kept in the temp dir across runs)")
    made = premake_clips(args.media, n, seconds=5, sound=True)
    log(f"clips ready ({made:.1f} s)")
    template = write_project(work / "template", n, media=args.media, fade=args.fade).parent
    rows: list[tuple[int, str, Result]] = []
    with servers(work, latency=lat, media=args.media, variants=n) as (fake, _):
        env = cli_env(fake)
        for r in range(args.rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for stitch in order:
                label = "render" if stitch else "render --no-stitch"
                log(f"round {r + 1}/{args.rounds}: {label}")
                result = one_render(template, work / f"r{r}-{'stitch' if stitch else 'nostitch'}", env, args, stitch)
                rows.append((r, label, result))
                log(f"  {result.wall:.2f} s")
    ideal = math.ceil(n / c) * lat
    print(f"\n{n} shots x 5 s at {args.media} with sound, fades {args.fade:g} s on most shots; latency L={lat:g} s, "
          f"concurrency C={c} ({math.ceil(n / c)} waves, generation alone ideally {ideal:g} s), "
          f"poll every {args.poll_interval:g} s; a fresh checkout (cache, state) for every run")  # fmt: skip
    print("\nseconds from the run's first event: the last clip landing, the stitch's first event, the cut written;")
    print("tail = from the last clip landing to the cut written")
    print(f"\n{'round':<6} {'run':<20} {'wall s':>8} {'last clip':>10} {'stitch began':>13} {'cut written':>12} "
          f"{'tail s':>7}  stitch")  # fmt: skip
    for r, label, result in rows:
        t = timeline(result)
        cells = [f"{t[k]:.2f}" if k in t else "-" for k in ("last_clip", "began", "stitched", "tail")]
        print(f"{r + 1:<6} {label:<20} {result.wall:>8.2f} {cells[0]:>10} {cells[1]:>13} {cells[2]:>12} {cells[3]:>7}  "
              + (t.get("figures", "") if label == "render" else ""))  # fmt: skip
    ratios = []
    for r in range(args.rounds):
        walls = {label: res.wall for rr, label, res in rows if rr == r}
        ratios.append(walls["render"] / walls["render --no-stitch"])
    with_stitch = [res.wall for _, label, res in rows if label == "render"]
    without = [res.wall for _, label, res in rows if label != "render"]
    ratio = median(ratios)
    print(f"\nper-round ratio render / render --no-stitch: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"best to best {min(with_stitch) / min(without):.3f}")  # fmt: skip
    tails = [timeline(res).get("tail") for _, label, res in rows if label == "render"]
    known = [t for t in tails if t is not None]
    if known:
        print(f"from the last clip landing to the cut written: median {median(known):.2f} s "
              f"(must not grow with the number of clips)")  # fmt: skip
    ok = bool(ratio <= args.target)
    print(f"target: render with the stitch <= {args.target:g} x render --no-stitch: {ratio:.3f} x "
          f"(median of {len(ratios)} rounds) {verdict(ok)}")  # fmt: skip
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=24)
    parser.add_argument("--media", choices=list(OUTPUT), default="720p")
    parser.add_argument("--latency", type=float, default=4.0, help="seconds each stand-in task takes")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, alternating which goes first")
    parser.add_argument("--fade", type=float, default=0.5)
    parser.add_argument("--target", type=float, default=1.15)
    common_args(parser)
    args = parse(parser, QUICK)
    return main_frame("pipelined", args, lambda work: measure(work, args))


if __name__ == "__main__":
    sys.exit(main())
