"""Stitching: kling-render's stitch() against hand-written ffmpeg commands and MoviePy.

Clips: ``--clips`` (default 20) × ``--seconds`` (5) at 1920x1080, 24 fps, H.264 + AAC, made once
with ffmpeg lavfi into a cache directory. Measures:

(a) cuts only: the engine's whole stitch of a project (``pipeline.stitch`` with ``force``: load
    the project, find each shot's clip in the cache, take its stream headers from the cache
    sidecar, stream-copy join, rename, hash the cut for the stitch manifest) vs
    ``ffmpeg -f concat -c copy`` — target <= 1.2x; beside it
    the same with sidecars that lack the headers (a probe per clip, as before they were kept);
(b) cross-fades (``--fade`` s between each pair): stitch() vs one hand-written
    xfade + acrossfade command with the engine's own encoder flags (libx264, its preset and
    CRF 18, pinned threads, AAC 192k) — target <= 1.2x;
(c) the same cross-faded cut with MoviePy (libx264, same preset and CRF) — target: stitch() at
    least 3x faster; skipped with a clear line when moviepy is not installed (not a dependency);
(d) peak memory of the Python process running stitch() (its own RUSAGE_SELF, in a child
    process that does nothing else) and of its ffmpeg children (RUSAGE_CHILDREN), for
    5, 10 and 20 clips — target: the Python process does not grow with the number of clips.

    python benchmarks/bench_stitch.py [--clips 20] [--seconds 5] [--fade 0.5] [--repeat 2]
        [--memory-sizes 5,10,20] [--skip-moviepy] [--size 1920x1080]
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

from kling_render import ffmpeg, pipeline
from kling_render.cache import ClipCache, ClipMeta
from kling_render.plan import shot_key
from kling_render.project import Project, load_project
from kling_render.stitch import CutClip, OutputSettings, probe, stitch
from kling_render.stitch.cut import AUDIO_CODEC, BITEXACT, VIDEO_CODEC, X264_PRESET, X264_THREADS
from kling_render.stitch.probe import check_clip

FPS = 24


def make_clips(cache: Path, n: int, seconds: float, width: int, height: int) -> list[Path]:
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = cache / f"clip-{width}x{height}-{seconds:g}s-{i:03d}.mp4"
        if not path.exists():
            tmp = path.with_suffix(".part.mp4")
            ffmpeg.run(
                ["-y", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}:duration={seconds}",
                 "-f", "lavfi", "-i", f"sine=frequency={220 + 20 * i}:sample_rate=48000:duration={seconds}",
                 "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
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
    Image.new("RGB", (width, height), (30, 60, 90)).save(root / "images" / "a.png")
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
    pipeline.stitch(project, "local", stream=events, json_events=True, force=True)
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


MEMORY_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from kling_render.stitch import CutClip, OutputSettings, probe, stitch
    paths, fade, w, h, dest = json.loads(sys.argv[1])
    clips = [CutClip(f"s{i:03d}", Path(p), probe(Path(p)), transition="fade" if fade and i else "cut",
                     transition_duration=fade if i else 0.0) for i, p in enumerate(paths)]
    stitch(clips, OutputSettings(w, h, 24), None, Path(dest))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child started by a
    # parent that just ran MoviePy would report the parent's ~900 MB as its own.
    hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
    me = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"self_mb": me, "children_mb": kids}))
    """
)


def memory(paths: list[Path], fade: float, width: int, height: int, dest: Path) -> dict[str, float]:
    arg = json.dumps([[str(p) for p in paths], fade, width, height, str(dest)])
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, arg], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fade", type=float, default=0.5)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the re-encodes (b) and (c)")
    parser.add_argument("--copy-repeat", type=int, default=25, help="runs of each cuts-only join (interleaved)")
    parser.add_argument("--memory-sizes", default="5,10,20")
    parser.add_argument("--memory-fades", action="store_true", help="measure memory on the re-encode path")
    parser.add_argument("--skip-moviepy", action="store_true")
    parser.add_argument("--clip-cache", type=Path, default=Path(tempfile.gettempdir()) / "kling-render-bench-clips")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    output = OutputSettings(width, height, FPS)
    mem_sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    paths = make_clips(args.clip_cache, max([args.clips, *mem_sizes]), args.seconds, width, height)
    clips_paths = paths[: args.clips]
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fades = cut_clips(clips_paths, args.fade)
        project = cached_project(work / "project", clips_paths, width, height)
        stream_copy = engine_stitch(project)
        # (a) is a 0.2 s operation: many runs, the two commands taking turns, and the figure is
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
        rows += [("(a) kling-render stitch, cuts", *a_ours), ("(a) ffmpeg -f concat -c copy", *a_ref),
                 ("(a) the same, sidecars without headers", *a_probing)]  # fmt: skip
        # (b) and (c) take minutes each and the machine drifts by several % between them, so they
        # run in rounds (ours, hand-written, MoviePy) and the ratios are taken within a round.
        have_moviepy = False
        skip_reason = "--skip-moviepy"
        if not args.skip_moviepy:
            try:
                import moviepy  # noqa: F401
            except ImportError:
                skip_reason = "moviepy is not installed (pip install moviepy to compare)"
            else:
                have_moviepy = True
        b_times: dict[str, list[float]] = {"ours": [], "ref": [], "moviepy": []}
        for _ in range(args.repeat):
            b_times["ours"].append(timed(lambda: stitch(fades, output, None, work / "b_ours.mp4"), 1)[0])
            b_times["ref"].append(
                timed(lambda: plain_xfade(clips_paths, args.seconds, args.fade, work / "b_ref.mp4"), 1)[0]
            )
            if have_moviepy:
                b_times["moviepy"].append(timed(lambda: moviepy_xfade(clips_paths, args.fade, work / "c.mp4"), 1)[0])
        b_ours = min(b_times["ours"]), statistics.median(b_times["ours"])
        b_ref = min(b_times["ref"]), statistics.median(b_times["ref"])
        rows += [("(b) kling-render stitch, cross-fades", *b_ours), ("(b) hand-written xfade command", *b_ref)]
        rb = statistics.median(o / r for o, r in zip(b_times["ours"], b_times["ref"], strict=True))
        rc: float | None = None
        if have_moviepy:
            rows.append(("(c) MoviePy cross-fades", min(b_times["moviepy"]), statistics.median(b_times["moviepy"])))
            rc = statistics.median(m / o for m, o in zip(b_times["moviepy"], b_times["ours"], strict=True))
        mem = {n: memory(paths[:n], args.fade if args.memory_fades else 0.0, width, height, work / f"m{n}.mp4")
               for n in mem_sizes}  # fmt: skip

    print(f"{args.clips} clips x {args.seconds:g} s at {width}x{height} {FPS} fps, H.264 + AAC; "
          f"cross-fades {args.fade:g} s; encoder {' '.join(VIDEO_CODEC)}")  # fmt: skip
    print(f"{'what':<40} {'best s':>8} {'median s':>9}")
    for name, best, med in rows:
        print(f"{name:<40} {best:>8.2f} {med:>9.2f}")
    print(f"(a) stitch took the stream-copy path: {stream_copy}")
    path_kind = "re-encode with fades" if args.memory_fades else "stream copy"
    print(f"(d) peak memory, {path_kind}: {'clips':>5} {'python MB':>10} {'ffmpeg MB':>10}")
    for n, m in mem.items():
        print(f"{'':<36}{n:>5} {m['self_mb']:>10.1f} {m['children_mb']:>10.1f}")
    ra = a_ours[0] / a_ref[0]
    print(f"target (a) cuts <= 1.2x plain concat: {a_pairs:.2f}x (median of {args.copy_repeat} back-to-back "
          f"pairs; best-to-best {ra:.2f}x) {verdict(a_pairs <= 1.2 and stream_copy)}")  # fmt: skip
    rounds = f"median of {args.repeat} round(s)"
    print(f"target (b) cross-fades <= 1.2x hand-written xfade: {rb:.2f}x ({rounds}) {verdict(rb <= 1.2)}")
    if rc is None:
        print(f"target (c) >= 3x faster than MoviePy: SKIPPED ({skip_reason})")
    else:
        print(f"target (c) >= 3x faster than MoviePy: {rc:.2f}x ({rounds}) {verdict(rc >= 3)}")
    if len(mem) >= 2:
        selfs = [m["self_mb"] for m in mem.values()]
        growth = max(selfs) - min(selfs)
        print(f"target (d) python peak memory flat in the number of clips: {min(selfs):.1f}-{max(selfs):.1f} MB "
              f"(spread {growth:.1f} MB) {verdict(growth <= 0.1 * min(selfs) + 2)}")  # fmt: skip


if __name__ == "__main__":
    main()
