"""Distributed stitch (issue 20, "Done when"): two shards render and encode their segments, a third
machine makes the cut encoding only what is missing.

``--shots`` (24) distinct shots at ``--media`` (720p, with sound, 5 s each), most fading in from the
one before (``--fade`` 0.5 s). One stand-in WaveSpeed process and one moto S3 server on 127.0.0.1
(one bucket: the team's remote); four checkouts of the project, each its own directory, cache and
state, each the real CLI in its own process:

1. machines 1 and 2 at once: ``render --json --shard 1/2`` and ``--shard 2/2`` (with the remote);
   the segment records on the remote afterwards are the segments the shards made;
2. machine 4 (no remote): ``render --no-stitch`` fetches the same clips (the stand-in serves one
   clip per prompt), not timed;
3. machine 3 (the remote, an empty cache, no API key): ``stitch --json``, timed: it pulls the
   clips and the shards' segments and encodes what is missing;
4. machine 4: ``stitch --json --force``, timed: the full local stitch of the same clips.

Target, all three: the third machine encodes no segment the shards made (its segments encoded +
the shards' segments <= the cut's segments, the shards having made some); its stitch is >=
``--speedup`` (4) x faster than the full local stitch; the two cuts are byte-identical.

    python benchmarks/bench_distributed.py [--shots 24] [--media 720p] [--latency 1] [--concurrency 4]
        [--poll-interval 0.5] [--fade 0.5] [--speedup 4] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from issue20_kit import (
    OUTPUT,
    BenchError,
    Result,
    StitchFigures,
    checkout,
    cli_env,
    common_args,
    log,
    main_frame,
    parse,
    premake_clips,
    remote_segments,
    s3_env,
    servers,
    sha256,
    stitch_figures,
    verdict,
    write_project,
)

QUICK = {"shots": 6, "media": "tiny", "timeout": 120.0}


def shard_line(k: int, result: Result) -> str:
    counts: dict[str, int] = {}
    for event in result.events:
        counts[event["event"]] = counts.get(event["event"], 0) + 1
    segments = result.of_kind("segments")  # what a shard says of its share of the stitch
    share = f"; {segments[-1].get('message')}" if segments else "; no segment event"
    return (f"shard {k}/2: {result.wall:.2f} s, {counts.get('done', 0)} clips made, "
            f"{counts.get('pulled', 0)} pulled{share}")  # fmt: skip


def reused(f3: StitchFigures | None, finish: Result, videos: int, audios: int) -> tuple[bool, str]:
    """Did the third machine encode nothing the shards made? Its segments encoded + the shards'
    video segments must not exceed the cut's segments (the shards having made some); and when the
    shards mixed the audio and the stitch says whether it mixed it (``audio_encoded``), not again."""
    if f3 is None:
        return False, "the third machine's stitch gave no segment figures"
    if videos == 0:
        return False, "the shards put no segment on the remote"
    ok = f3.encoded + videos <= f3.segments
    why = (f"it encoded {f3.encoded} of {f3.segments} segments; the shards made {videos}, so at most "
           f"{max(0, f3.segments - videos)} were left to it")  # fmt: skip
    audio_again = finish.doc.get("audio_encoded")
    if audios and audio_again is not None:
        ok = ok and not audio_again
        why += f"; the shards mixed the audio, the third machine {'mixed it again' if audio_again else 'pulled it'}"
    return ok, why


def measure(work: Path, args: argparse.Namespace) -> bool:
    n = args.shots
    log(f"making {n} distinct {args.media} clips for the stand-in (kept in the temp dir across runs)")
    made = premake_clips(args.media, n, seconds=5, sound=True)
    log(f"clips ready ({made:.1f} s)")
    template = write_project(work / "template", n, media=args.media, fade=args.fade).parent
    common = ("--concurrency", str(args.concurrency), "--poll-interval", str(args.poll_interval))
    with servers(work, latency=args.latency, media=args.media, variants=n, remote=True) as (fake, moto):
        bucket = moto.new_bucket()
        remote = s3_env(moto, bucket)
        shards = [checkout(template, work / f"machine-{k}", cli_env(fake, remote=remote)) for k in (1, 2)]
        third = checkout(template, work / "machine-3", cli_env(fake, key=False, remote=remote))
        local = checkout(template, work / "machine-4", cli_env(fake))
        log("machines 1 and 2: render --shard 1/2 and 2/2 at once")
        running = [m.start("render", str(m.project), "--json", "--shard", f"{k}/2", *common)
                   for k, m in enumerate(shards, 1)]  # fmt: skip
        shard_results = [r.finish(args.timeout).check() for r in running]
        made_by_shards = remote_segments(moto, bucket)
        walls = ", ".join(f"{r.wall:.1f} s" for r in shard_results)
        log(f"  {walls}; {len(made_by_shards)} step records on the remote")
        log("machine 4: render --no-stitch (the same clips, no remote; not timed)")
        local.render("--no-stitch", *common, timeout=args.timeout)
        log("machine 3: stitch (remote, empty cache, no API key)")
        finish = third.stitch(timeout=args.timeout)
        log(f"  {finish.wall:.2f} s")
        log("machine 4: stitch --force (the full local stitch)")
        full = local.stitch("--force", timeout=args.timeout)
        log(f"  {full.wall:.2f} s")
        after = remote_segments(moto, bucket)
    if not third.cut.exists() or not local.cut.exists():
        raise BenchError("a stitch exited 0 but wrote no cut")

    print(f"\n{n} shots x 5 s at {args.media} with sound, fades {args.fade:g} s on most shots; stand-in latency "
          f"{args.latency:g} s, concurrency {args.concurrency} per shard; one moto remote")  # fmt: skip
    for k, result in enumerate(shard_results, 1):
        print(shard_line(k, result))
    videos = sorted(k for k, kind in made_by_shards.items() if kind == "video")
    audios = sorted(k for k, kind in made_by_shards.items() if kind == "audio")
    print(f"step records on the remote after the shards: {len(videos)} video segments, {len(audios)} audio pass(es); "
          f"after the third machine's stitch: {len(after)} records")  # fmt: skip
    f3, f4 = stitch_figures(finish), stitch_figures(full)
    print(f"\n{'stitch':<52} {'wall s':>8} {'tree MB':>8}  segments")
    print(f"{'machine 3: remote, empty cache, no API key':<52} {finish.wall:>8.2f} {finish.peak_tree_mb:>8.0f}  "
          f"{f3.text() if f3 else 'no stitch figures found'}")  # fmt: skip
    print(f"{'machine 4: the full local stitch (--force)':<52} {full.wall:>8.2f} {full.peak_tree_mb:>8.0f}  "
          f"{f4.text() if f4 else 'no stitch figures found'}")  # fmt: skip

    reuse, why = reused(f3, finish, len(videos), len(audios))
    speedup = full.wall / finish.wall
    fast = bool(speedup >= args.speedup)
    a, b = sha256(third.cut), sha256(local.cut)
    same = a == b
    print(f"\nthe third machine encodes no segment the shards made: {why}: {verdict(reuse)}")
    print(f"its stitch against the full local stitch: {speedup:.2f}x faster (>= {args.speedup:g}x: {verdict(fast)})")
    print(f"the cuts byte-identical: {a[:16]} vs {b[:16]}: {verdict(same)}")
    ok = reuse and fast and same
    print(f"target: no shard segment encoded again, stitch >= {args.speedup:g}x faster ({speedup:.2f}x), cut "
          f"byte-identical {verdict(ok)}")  # fmt: skip
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=24)
    parser.add_argument("--media", choices=list(OUTPUT), default="720p")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds each stand-in task takes")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once per shard")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--fade", type=float, default=0.5)
    parser.add_argument("--speedup", type=float, default=4.0, help="target: full local stitch / third machine's")
    common_args(parser)
    args = parse(parser, QUICK)
    return main_frame("distributed", args, lambda work: measure(work, args))


if __name__ == "__main__":
    sys.exit(main())
