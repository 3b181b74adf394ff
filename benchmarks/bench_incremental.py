"""Incremental stitch (issue 20, "Done when"): one trim edit costs what changed, not the cut's length.

``--shots`` (48) distinct clips at ``--media`` (720p: 1280x720 H.264, 24 fps, ~1.3 MB/s, with sound)
from the stand-in, 5 s each, most shots fading in from the one before (``--fade`` 0.5 s). Through
the CLI, in one checkout:

1. ``render --no-stitch`` fills the clip cache (not timed);
2. ``stitch --json --force``: the full stitch, every segment encoded (timed);
3. ``--edits`` (2) times: one shot (the middle one, then others) gets ``trim: {end: 4.5}`` and
   ``stitch --json`` re-stitches (timed).

The resident memory of each stitch's whole process tree (the CLI and every ffmpeg under it, /proc
sampled every 50 ms, the largest sum at one instant) is recorded.

Target: a trim edit re-stitches >= ``--speedup`` (5) x faster than the full stitch (the median of
the edits), and the process tree peaks under ``--memory-mb`` (1024 MB) in every stitch.

    python benchmarks/bench_incremental.py [--shots 48] [--media 720p] [--fade 0.5] [--edits 2]
        [--speedup 5] [--memory-mb 1024] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from issue20_kit import (
    OUTPUT,
    BenchError,
    Result,
    checkout,
    cli_env,
    common_args,
    log,
    main_frame,
    median,
    parse,
    premake_clips,
    servers,
    stitch_figures,
    trim_shot,
    verdict,
    write_project,
)

QUICK = {"shots": 8, "media": "tiny", "edits": 1, "timeout": 120.0}


def edited_shots(shots: int, edits: int) -> list[int]:
    """The middle shot first, then shots spread over the cut (distinct)."""
    picks = [shots // 2]
    step = max(1, shots // (edits + 1))
    candidate = step // 2
    while len(picks) < min(edits, shots):
        if candidate % shots not in picks:
            picks.append(candidate % shots)
        candidate += step if step > 1 else 1
    return picks


def row(label: str, result: Result) -> str:
    figures = stitch_figures(result)
    what = figures.text() if figures else "no stitch figures found"
    return f"{label:<34} {result.wall:>8.2f} {result.peak_tree_mb:>10.0f} {result.peak_proc_mb:>10.0f}  {what}"


def measure(work: Path, args: argparse.Namespace) -> bool:
    n = args.shots
    log(f"making {n} distinct {args.media} clips for the stand-in (kept in the temp dir across runs)")
    made = premake_clips(args.media, n, seconds=5, sound=True)
    log(f"clips ready ({made:.1f} s)")
    template = write_project(work / "template", n, media=args.media, fade=args.fade).parent
    with servers(work, latency=args.latency, media=args.media, variants=n) as (fake, _):
        machine = checkout(template, work / "machine", cli_env(fake))
        log(f"render --no-stitch of {n} shots (fills the cache; not timed)")
        machine.render("--no-stitch", "--concurrency", "8", "--poll-interval", "0.25", timeout=args.timeout)
    log("full stitch (stitch --force)")
    full = machine.stitch("--force", timeout=args.timeout)
    log(f"  {full.wall:.2f} s")
    edits: list[tuple[int, Result]] = []
    for shot in edited_shots(n, args.edits):
        trim_shot(machine.project, shot, 5 - args.trim)
        log(f"trim edit of shot {shot}: stitch")
        result = machine.stitch(timeout=args.timeout)
        figures = stitch_figures(result)
        if figures is not None and figures.up_to_date:
            raise BenchError(f"the stitch after trimming shot {shot} said the cut was up to date")
        edits.append((shot, result))
        log(f"  {result.wall:.2f} s")

    print(f"\n{n} shots x 5 s at {args.media} with sound, fades {args.fade:g} s on most shots; "
          f"every figure a `python -m kling_render stitch` process (start-up included)")  # fmt: skip
    print(f"\n{'stitch':<34} {'wall s':>8} {'tree MB':>10} {'largest MB':>10}  segments")
    print(row("full (stitch --force)", full))
    for shot, result in edits:
        print(row(f"trim edit of s{shot:03d} (end {5 - args.trim:g} s)", result))
    edit_s = median([r.wall for _, r in edits])
    speedup = full.wall / edit_s
    peak = max([full.peak_tree_mb, *(r.peak_tree_mb for _, r in edits)])
    fast, small = bool(speedup >= args.speedup), bool(peak < args.memory_mb)
    print(f"\none trim edit (median of {len(edits)}): {edit_s:.2f} s against {full.wall:.2f} s for the full stitch: "
          f"{speedup:.1f}x faster (>= {args.speedup:g}x: {verdict(fast)})")  # fmt: skip
    print(f"peak resident memory of the process tree: {peak:.0f} MB (< {args.memory_mb:g} MB: {verdict(small)})")
    print(f"target: trim edit >= {args.speedup:g}x faster than a full stitch ({speedup:.1f}x) and process tree "
          f"under {args.memory_mb:g} MB ({peak:.0f} MB) {verdict(fast and small)}")  # fmt: skip
    return fast and small


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=48)
    parser.add_argument("--media", choices=list(OUTPUT), default="720p")
    parser.add_argument("--fade", type=float, default=0.5)
    parser.add_argument("--edits", type=int, default=2, help="trim edits, each re-stitched and timed")
    parser.add_argument("--trim", type=float, default=0.5, help="seconds an edit cuts off the end of a shot")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds each stand-in task takes (not timed)")
    parser.add_argument("--speedup", type=float, default=5.0, help="target: full stitch / trim edit")
    parser.add_argument("--memory-mb", type=float, default=1024.0, help="target: peak RSS of the process tree")
    common_args(parser)
    args = parse(parser, QUICK)
    return main_frame("incremental", args, lambda work: measure(work, args))


if __name__ == "__main__":
    sys.exit(main())
