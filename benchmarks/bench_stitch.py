"""Stitching: kling-render against hand-written ffmpeg commands and MoviePy, and the segmented
stitch's memory and time at several sizes.

Clips: ``--seconds`` (5) s at ``--height`` (1080: 1920x1080), 24 fps, H.264 of realistic bitrate
(~1.5 MB/s at 1080p: testsrc2 with per-clip hue and temporal noise) + AAC, made once with ffmpeg
into ``--clip-cache`` (a temp directory; never committed). Measures:

(a) cuts only: the engine's whole stitch of a project (``pipeline.stitch`` with ``force``: load
    the project, find each shot's clip in the cache, take its stream headers from the cache
    sidecar, stream-copy join, rename, hash the cut for the stitch manifest) vs
    ``ffmpeg -f concat -c copy`` -- target <= 1.2x; beside it the same with sidecars that lack
    the headers (a probe per clip, as before they were kept);
(b) cross-fades (``--fade`` s between each pair), ``--compare-clips`` clips: stitch() from an
    empty segment store vs one hand-written xfade + acrossfade command with the engine's own
    encoder flags -- target: at least as fast; each with the peak RSS of its process tree;
(c) the same cross-faded cut with MoviePy -- target: stitch() at least 3x faster; skipped with a
    clear line when moviepy is not installed (not a dependency);
(d) for each of ``--clips`` (20,60,120): the segmented stitch with cross-fades from an empty
    segment store, then one trim edit re-stitched with the store it filled. Peak RSS of the
    WHOLE process tree (the Python process and every ffmpeg under it; /proc sampled every 50 ms,
    the sum over the tree at one instant) -- target < 1.5 GB at every size; time per clip --
    target: at 120 within 1.1x of 20; the trim edit -- target >= 5x faster than a full stitch at 60.

    python benchmarks/bench_stitch.py [--clips 20,60,120] [--height 1080] [--parts a,b,c,d]
        [--compare-clips 20] [--seconds 5] [--fade 0.5] [--repeat 1] [--skip-moviepy]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from kling_render.app import cut as app_cut
from kling_render.media import ffmpeg
from kling_render.media.probe import check_clip
from kling_render.plan.plan import shot_key
from kling_render.project.loader import load_project
from kling_render.project.project import Project
from kling_render.stitch import CutClip, probe
from kling_render.stitch.cut import AUDIO_CODEC, BITEXACT, VIDEO_CODEC, X264_PRESET, X264_THREADS
from kling_render.store.cache import ClipCache, ClipMeta

FPS = 24


def make_clips(cache: Path, n: int, seconds: float, width: int, height: int) -> list[Path]:
    """``n`` distinct clips of realistic bitrate (~1.5 MB/s at 1080p, like Kling's): testsrc2 with
    per-clip hue and temporal noise (a clean test pattern compresses to a few hundred kB/s, which
    makes decoding and the join unrealistically cheap). Made once into ``cache``, never committed."""
    cache.mkdir(parents=True, exist_ok=True)
    rate = max(1, round(12 * width * height / (1920 * 1080)))  # Mbit/s: 12 at 1080p, 5 at 720p
    paths = []
    for i in range(n):
        path = cache / f"real-{width}x{height}-{seconds:g}s-{i:03d}.mp4"
        if not path.exists():
            tmp = path.with_suffix(".part.mp4")
            source = (
                f"testsrc2=size={width}x{height}:rate={FPS}:duration={seconds},"
                f"hue=h={(i * 37) % 360},noise=alls=10:allf=t+u:all_seed={i + 1}"
            )
            ffmpeg.run(
                ["-y", "-f", "lavfi", "-i", source,
                 "-f", "lavfi", "-i", f"sine=frequency={220 + 20 * (i % 40)}:sample_rate=48000:duration={seconds}",
                 "-c:v", "libx264", "-preset", "ultrafast", "-b:v", f"{rate}M", "-maxrate", f"{rate + 2}M",
                 "-bufsize", f"{rate}M", "-pix_fmt", "yuv420p",
                 "-c:a", "aac", "-ar", "48000", "-ac", "2", "-shortest", str(tmp)],
                f"making clip {i}",
            )  # fmt: skip
            tmp.rename(path)
        paths.append(path)
    return paths


def cut_clips(paths: list[Path], fade: float) -> list[CutClip]:
    return [
        CutClip(f"s{i:03d}", p, probe(p), transition="fade" if fade and i else "cut",
                transition_duration=fade if i else 0.0)
        for i, p in enumerate(paths)
    ]  # fmt: skip


def cached_project(root: Path, paths: list[Path], width: int, height: int, *, fade: float = 0.0) -> Project:
    """A project of one shot per clip whose clips are already in its cache, put there the way a
    render puts them (checked, headers in the sidecar): what ``kling-render stitch`` starts from.
    With ``fade``, every shot after the first fades in from the previous one."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    Image.new("RGB", (max(width, 640), max(height, 360)), (30, 60, 90)).save(root / "images" / "a.png")
    fades = [f", transition: {{type: fade, duration: {fade:g}}}" if fade and i else "" for i in range(len(paths))]
    shots = "".join(f"  - {{id: s{i:03d}, prompt: take {i}{fades[i]}}}\n" for i in range(len(paths)))
    (root / "project.yaml").write_text(
        "version: 1\nname: bench\nprovider: local\n"
        "defaults: {model: kling-v3.0-std/image-to-video, image: images/a.png, duration: 5}\n"
        f"shots:\n{shots}output: {{path: out.mp4, width: {width}, height: {height}, fps: {FPS}}}\n"
    )
    project = load_project(root / "project.yaml")
    cache = ClipCache.for_project(project.path)
    cache.prepare()
    for shot, path in zip(project.shots, paths, strict=True):
        check = check_clip(path)
        tmp = cache.tmp_dir / path.name
        shutil.copyfile(path, tmp)
        meta = ClipMeta(check.duration, shot.model.id, None, check.headers.to_json())
        cache.put("local", shot_key("local", shot), tmp, meta)
    return project


def drop_headers(project: Project) -> None:
    """Sidecars as they were before the headers were kept: the stitch probes every clip."""
    for sidecar in ClipCache.for_project(project.path).root.glob("local/*/*.json"):
        doc = json.loads(sidecar.read_text())
        doc.pop("media", None)
        sidecar.write_text(json.dumps(doc))


def engine_stitch(project: Project) -> bool:
    """``kling-render stitch --force`` minus interpreter start-up (the whole stitch, the cut's
    sha256 for the stitch manifest included); True when it took the stream-copy path."""
    events = io.StringIO()
    app_cut.stitch(project, "local", stream=events, json_events=True, force=True)
    return any(json.loads(line).get("stream_copy") for line in events.getvalue().splitlines())


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def plain_concat(paths: list[Path], out: Path) -> None:
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{p}'\n" for p in paths))
    ffmpeg.run(["-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)], "concat")


def plain_xfade(paths: list[Path], seconds: float, fade: float, out: Path) -> None:
    """One ffmpeg command: xfade/acrossfade chained over every pair, the engine's encoder flags."""
    chains = []
    v, a = "[0:v]", "[0:a]"
    for i in range(1, len(paths)):
        offset = i * (seconds - fade)
        chains.append(f"{v}[{i}:v]xfade=transition=fade:duration={fade}:offset={offset:g}[v{i}]")
        chains.append(f"{a}[{i}:a]acrossfade=d={fade}:c1=tri:c2=tri[a{i}]")
        v, a = f"[v{i}]", f"[a{i}]"
    inputs = [arg for p in paths for arg in ("-i", str(p))]
    ffmpeg.run(
        ["-y", *inputs, "-filter_complex", ";".join(chains), "-map", v, "-map", a,
         *VIDEO_CODEC, *AUDIO_CODEC, *BITEXACT, str(out)],
        "hand-written xfade",
    )  # fmt: skip


def moviepy_xfade(paths: list[Path], fade: float, out: Path) -> None:
    from moviepy import CompositeVideoClip, VideoFileClip, afx, vfx

    sources = [VideoFileClip(str(p)) for p in paths]
    layers, at = [], 0.0
    for i, clip in enumerate(sources):
        if i:
            clip = clip.with_effects([vfx.CrossFadeIn(fade), afx.AudioFadeIn(fade)])
        if i < len(sources) - 1:
            clip = clip.with_effects([afx.AudioFadeOut(fade)])
        layers.append(clip.with_start(at))
        at += clip.duration - fade
    final = CompositeVideoClip(layers)
    final.write_videofile(
        str(out), fps=FPS, codec="libx264", preset=X264_PRESET, ffmpeg_params=["-crf", "18", "-pix_fmt", "yuv420p"],
        audio_codec="aac", audio_bitrate="192k", threads=int(X264_THREADS), logger=None,
    )  # fmt: skip
    for clip in sources:
        clip.close()


# The stitch (or the hand-written command) runs in a child process so that its whole process
# tree -- the Python process and every ffmpeg it starts -- can be measured from outside.
TREE_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    job = json.loads(sys.argv[1])
    if job["kind"] == "xfade":
        sys.path.insert(0, job["bench_dir"])
        from bench_stitch import plain_xfade
        t0 = time.perf_counter()
        plain_xfade([Path(p) for p in job["paths"]], job["seconds"], job["fade"], Path(job["dest"]))
        print(json.dumps({"seconds": time.perf_counter() - t0}))
        raise SystemExit
    from kling_render.store.cache import ClipCache
    from kling_render.fsutil import sha256_file
    from kling_render.stitch import CutClip, OutputSettings, SegmentStore, probe, stitch
    fade, n = job["fade"], len(job["paths"])
    clips = []
    for i, p in enumerate(job["paths"]):
        p = Path(p)
        trim_end = job["seconds"] - 0.5 if i == job.get("trim_edit") else None
        clips.append(CutClip(f"s{i:03d}", p, probe(p), transition="fade" if fade and i else "cut",
                             transition_duration=fade if i else 0.0, trim_end=trim_end,
                             sha256=sha256_file(p)))  # a render's cache has the digests already
    store = SegmentStore(ClipCache(Path(job["store"])))
    t0 = time.perf_counter()
    result = stitch(clips, OutputSettings(job["width"], job["height"], 24), None, Path(job["dest"]), segments=store)
    print(json.dumps({"seconds": time.perf_counter() - t0, "encoded": result.encoded_segments,
                      "segments": len(result.segments), "frames": result.frames}))
    """
)


def _tree_rss(root: int, page: int) -> tuple[int, int, int]:
    """(sum of RSS, largest RSS, processes) over ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(statm.split()[1]) * page
    todo, total, largest, count = [root], 0, 0, 0
    while todo:
        pid = todo.pop()
        if pid in rss:
            total += rss[pid]
            largest = max(largest, rss[pid])
            count += 1
        todo.extend(children.get(pid, []))
    return total, largest, count


def tree_run(job: dict[str, object], interval: float = 0.05) -> dict[str, float]:
    """Run ``job`` in a child Python process; sample the RSS of its whole process tree (the child
    and every ffmpeg under it) every ``interval`` s. Adds peak_tree_mb (largest sum over the tree
    at one instant), peak_proc_mb (largest single process) and max_procs to the child's result."""
    import os
    import threading

    page = os.sysconf("SC_PAGE_SIZE")
    proc = subprocess.Popen([sys.executable, "-c", TREE_CHILD, json.dumps(job)], stdout=subprocess.PIPE, text=True)
    peak = {"tree": 0, "proc": 0, "procs": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total, largest, count = _tree_rss(proc.pid, page)
            peak["tree"], peak["proc"] = max(peak["tree"], total), max(peak["proc"], largest)
            peak["procs"] = max(peak["procs"], count)
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"benchmark child failed ({proc.returncode}): {job['kind']}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result.update(peak_tree_mb=peak["tree"] / 2**20, peak_proc_mb=peak["proc"] / 2**20, max_procs=peak["procs"])
    return result


def stitch_job(paths: list[Path], args: argparse.Namespace, width: int, height: int, work: Path) -> dict[str, object]:
    return {
        "kind": "stitch", "paths": [str(p) for p in paths], "fade": args.fade, "seconds": args.seconds,
        "width": width, "height": height, "store": str(work / f"store-{len(paths)}"),
        "dest": str(work / f"d{len(paths)}.mp4"),
    }  # fmt: skip


def segmented(job: dict[str, object], full: dict[str, float] | None = None) -> dict[str, float]:
    """(d) one size: a full stitch with an empty segment store (or ``full``, its result measured
    already), then one trim edit (the middle clip ends 0.5 s earlier) re-stitched with that store."""
    paths = job["paths"]
    assert isinstance(paths, list)
    full = full or tree_run(job)
    edit = tree_run({**job, "trim_edit": len(paths) // 2})
    shutil.rmtree(str(job["store"]), ignore_errors=True)
    return {
        "clips": len(paths), "full_s": full["seconds"], "per_clip_s": full["seconds"] / len(paths),
        "peak_tree_mb": full["peak_tree_mb"], "peak_proc_mb": full["peak_proc_mb"], "procs": full["max_procs"],
        "encoded": full["encoded"], "edit_s": edit["seconds"], "edit_encoded": edit["encoded"],
        "edit_peak_tree_mb": edit["peak_tree_mb"],
    }  # fmt: skip


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default="20,60,120", help="sizes (clips) of the segmented-stitch runs (d)")
    parser.add_argument("--compare-clips", type=int, default=0, help="size of (a)-(c) (default: smallest --clips)")
    parser.add_argument("--parts", default="a,b,c,d", help="which of (a), (b), (c), (d) to run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fade", type=float, default=0.5)
    parser.add_argument("--height", type=int, default=1080, help="16:9 frames of this height (1080: 1920x1080)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the re-encodes (b) and (c)")
    parser.add_argument("--copy-repeat", type=int, default=25, help="runs of each cuts-only join (interleaved)")
    parser.add_argument("--skip-moviepy", action="store_true")
    parser.add_argument("--clip-cache", type=Path, default=Path(tempfile.gettempdir()) / "kling-render-bench-media")
    args = parser.parse_args()
    height = args.height
    width = round(height * 16 / 9 / 2) * 2
    sizes = [int(n) for n in args.clips.split(",") if n]
    parts = set(args.parts.split(","))
    compare = args.compare_clips or min(sizes)
    paths = make_clips(args.clip_cache, max([compare, *sizes]), args.seconds, width, height)
    clips_paths = paths[:compare]
    mb = sum(p.stat().st_size for p in clips_paths) / 2**20 / (compare * args.seconds)
    print(f"clips: {args.seconds:g} s at {width}x{height} {FPS} fps, H.264 ({mb:.2f} MB/s) + AAC; "
          f"cross-fades {args.fade:g} s; encoder {' '.join(VIDEO_CODEC)}", flush=True)  # fmt: skip
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "a" in parts:
            project = cached_project(work / "project", clips_paths, width, height)
            stream_copy = engine_stitch(project)
            # (a) is a short operation: many runs, the two commands taking turns, and the figure is
            # the median of the per-pair ratios, so drift in the machine's load hits both alike.
            a_times: dict[str, list[float]] = {"ours": [], "ref": []}
            for _ in range(args.copy_repeat):
                a_times["ours"].append(timed(lambda: engine_stitch(project), 1)[0])
                a_times["ref"].append(timed(lambda: plain_concat(clips_paths, work / "a_ref.mp4"), 1)[0])
            a_ours = min(a_times["ours"]), statistics.median(a_times["ours"])
            a_ref = min(a_times["ref"]), statistics.median(a_times["ref"])
            a_pairs = statistics.median(o / r for o, r in zip(a_times["ours"], a_times["ref"], strict=True))
            drop_headers(project)
            a_probing = timed(lambda: engine_stitch(project), 5)
            rows += [(f"(a) kling-render stitch, cuts ({compare})", *a_ours), ("(a) ffmpeg -f concat -c copy", *a_ref),
                     ("(a) the same, sidecars without headers", *a_probing)]  # fmt: skip
            print(f"{rows[-3][0]}: {a_ours[1]:.3f} s median; plain concat {a_ref[1]:.3f} s", flush=True)
            ra = a_ours[0] / a_ref[0]
            print(f"target (a) cuts <= 1.2x plain concat: {a_pairs:.2f}x (median of {args.copy_repeat} back-to-back "
                  f"pairs; best-to-best {ra:.2f}x) {verdict(a_pairs <= 1.2 and stream_copy)}", flush=True)  # fmt: skip
        have_moviepy = False
        skip_reason = "--skip-moviepy"
        if "c" in parts and not args.skip_moviepy:
            try:
                import moviepy  # noqa: F401
            except ImportError:
                skip_reason = "moviepy is not installed (pip install moviepy to compare)"
            else:
                have_moviepy = True
        # (b) and (c) take minutes each and the machine drifts between them, so they run in rounds
        # (ours, hand-written, MoviePy) and the ratios are taken within a round.
        b_full: dict[str, float] | None = None
        if "b" in parts or have_moviepy:
            b: dict[str, list[dict[str, float]]] = {"ours": [], "ref": []}
            mp: list[float] = []
            job = stitch_job(clips_paths, args, width, height, work)
            for n in range(args.repeat):
                if n:
                    shutil.rmtree(str(job["store"]), ignore_errors=True)  # every round from an empty store
                b["ours"].append(tree_run(job))
                ref_job = {"kind": "xfade", "bench_dir": str(Path(__file__).parent), "paths": job["paths"],
                           "seconds": args.seconds, "fade": args.fade, "dest": str(work / "b_ref.mp4")}  # fmt: skip
                b["ref"].append(tree_run(ref_job))
                if have_moviepy:
                    mp.append(timed(lambda: moviepy_xfade(clips_paths, args.fade, work / "c.mp4"), 1)[0])
            b_full = b["ours"][-1]
            for who, label in (("ours", "kling-render stitch"), ("ref", "hand-written xfade command")):
                secs = [r["seconds"] for r in b[who]]
                peak = max(r["peak_tree_mb"] for r in b[who])
                rows.append((f"(b) {label}, cross-fades ({compare})", min(secs), statistics.median(secs)))
                print(f"{rows[-1][0]}: {statistics.median(secs):.1f} s, peak RSS of its process tree {peak:.0f} MB",
                      flush=True)  # fmt: skip
            rb = statistics.median(o["seconds"] / r["seconds"] for o, r in zip(b["ours"], b["ref"], strict=True))
            print(f"target (b) cross-fades at least as fast as one hand-written xfade command: {rb:.2f}x "
                  f"{verdict(rb <= 1.0)}", flush=True)  # fmt: skip
            if have_moviepy:
                rows.append(("(c) MoviePy cross-fades", min(mp), statistics.median(mp)))
                rc = statistics.median(m / o["seconds"] for m, o in zip(mp, b["ours"], strict=True))
                print(f"target (c) >= 3x faster than MoviePy: {rc:.2f}x {verdict(rc >= 3)}", flush=True)
            elif "c" in parts:
                print(f"target (c) >= 3x faster than MoviePy: SKIPPED ({skip_reason})")
        results = []
        if "d" in parts:
            print(f"(d) segmented stitch with cross-fades, {width}x{height}: whole process tree sampled every 50 ms")
            print(f"{'clips':>6} {'full s':>8} {'s/clip':>7} {'peak tree MB':>13} {'largest proc MB':>16} "
                  f"{'procs':>6} {'edit s':>7} {'edit segs':>10} {'full/edit':>10}", flush=True)  # fmt: skip
            for n in sizes:
                job = stitch_job(paths[:n], args, width, height, work)
                r = segmented(job, b_full if n == compare and b_full is not None else None)
                results.append(r)
                print(f"{n:>6} {r['full_s']:>8.1f} {r['per_clip_s']:>7.2f} {r['peak_tree_mb']:>13.0f} "
                      f"{r['peak_proc_mb']:>16.0f} {r['procs']:>6.0f} {r['edit_s']:>7.1f} "
                      f"{r['edit_encoded']:>6.0f}/{r['encoded']:<3.0f} {r['full_s'] / r['edit_s']:>10.1f}",
                      flush=True)  # fmt: skip

    if rows:
        print(f"{'what':<48} {'best s':>8} {'median s':>9}")
        for name, best, med in rows:
            print(f"{name:<48} {best:>8.2f} {med:>9.2f}")
    if results:
        worst = max(max(r["peak_tree_mb"], r["edit_peak_tree_mb"]) for r in results)
        print(f"target (d) peak RSS of the process tree < 1.5 GB at every size: {worst:.0f} MB "
              f"{verdict(worst < 1536)}")  # fmt: skip
        first, last = results[0], results[-1]
        if len(results) > 1:
            growth = last["per_clip_s"] / first["per_clip_s"]
            print(f"target (d) s/clip at {last['clips']:.0f} within 1.1x of {first['clips']:.0f}: {growth:.2f}x "
                  f"{verdict(growth <= 1.1)}")  # fmt: skip
        for r in results:
            speedup = r["full_s"] / r["edit_s"]
            print(
                f"(d) one trim edit at {r['clips']:.0f} clips re-stitches {speedup:.1f}x faster than a full stitch"
                + (f" (target >= 5x at 60: {verdict(speedup >= 5)})" if r["clips"] == 60 else "")
            )


if __name__ == "__main__":
    main()
