"""A render with nothing changed: how long it takes, and that the final cut is left alone.

(a) ``--clips`` (default 20) shots × ``--seconds`` (5) s at 1920x1080, their clips already in
    the cache (made once with ffmpeg lavfi, as bench_stitch.py makes them), cross-faded
    (``--fade`` 0.5 s): one ``kling-render render --provider local`` makes the cut, then
    ``--repeat`` (7) more through the real CLI (a new Python process each, start-up included)
    find it up to date. Target: median well under a second (< 1 s).
(b) the shipped example project (``projects/mug-teaser``: five local animatics, music, ducking,
    loudness) rendered once, then ``--repeat`` no-op renders. Target: < 2 s (issue 13).

Each no-op must print "final cut up to date" and leave the cut's inode, mtime and bytes as they
were. Beside the wall times: where the time of one no-op goes, measured in-process (project load,
plan, cache lookups, hashing the cut against the stitch manifest).

    python benchmarks/bench_noop.py [--clips 20] [--seconds 5] [--fade 0.5] [--repeat 7] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_stitch import cached_project, make_clips

from kling_render.app import cut as app_cut
from kling_render.app.commands import plan_for
from kling_render.media import caps as ffmpeg_caps
from kling_render.project.loader import load_project
from kling_render.records import manifest
from kling_render.store.cache import ClipCache

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "projects" / "mug-teaser"


def cli(project: Path, env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kling_render", *args, str(project), "--provider", "local"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"kling-render {' '.join(args)} failed:\n{done.stderr}")
    return elapsed, done


def stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def noop_runs(project: Path, cut: Path, env: dict[str, str], repeat: int) -> tuple[list[float], list[float]]:
    """``repeat`` no-op renders and stitches; each must leave the cut exactly as it was."""
    before = stamp(cut)
    renders, stitches = [], []
    for _ in range(repeat):
        t, done = cli(project, env, "render")
        assert "final cut up to date" in done.stderr, done.stderr
        renders.append(t)
        t, done = cli(project, env, "stitch")
        assert "final cut up to date" in done.stderr, done.stderr
        stitches.append(t)
        assert stamp(cut) == before, "a no-op touched the cut"
    return renders, stitches


def startup() -> float:
    """A new Python process that imports what a render imports, and exits (best of 5)."""
    code = (
        "import kling_render.cli, kling_render.app.pipeline, kling_render.app.commands, "
        "kling_render.project.schema, jsonschema, PIL"
    )
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def breakdown(project_file: Path) -> list[tuple[str, float]]:
    """Where one no-op's time goes: start-up, then each step in-process (modules already imported)."""
    steps: list[tuple[str, float]] = [("python start-up + imports (a new process, best of 5)", startup())]
    t0 = time.perf_counter()
    project = load_project(project_file)
    steps.append(("load + validate project (ffmpeg facts cached)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    plan_for(project, "local", None)
    steps.append(("plan (keys, cache lookups, lock)", time.perf_counter() - t0))
    cache = ClipCache.for_project(project.path)
    t0 = time.perf_counter()
    prepared = app_cut.prepare_cut(project, "local", cache)
    steps.append(("stitch inputs (sidecars, music digest)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    fresh = manifest.check(app_cut.manifest_file(project), prepared.inputs, project.output.path)
    steps.append((f"hash the cut ({project.output.path.stat().st_size / 1e6:.0f} MB) vs manifest",
                  time.perf_counter() - t0))  # fmt: skip
    assert fresh.up_to_date, fresh.reasons
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fade", type=float, default=0.5)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--skip-example", action="store_true")
    parser.add_argument("--clip-cache", type=Path, default=Path(tempfile.gettempdir()) / "kling-render-bench-clips")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_RENDER_", "WAVESPEED_"))}
    paths = make_clips(args.clip_cache, args.clips, args.seconds, width, height)
    build = ffmpeg_caps.current()
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(shared with other work); Python {sys.version.split()[0]}; {build.label}")  # fmt: skip
    results: list[tuple[str, list[float], list[float], float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        project = cached_project(work / "p20", paths, width, height, fade=args.fade)
        first, _ = cli(project.path, env, "render")
        cut = project.output.path
        renders, stitches = noop_runs(project.path, cut, env, args.repeat)
        label = f"(a) {args.clips} x {args.seconds:g} s {width}x{height}, fades {args.fade:g} s"
        results.append((label, renders, stitches, first))
        steps = breakdown(project.path)
        if not args.skip_example:
            example = work / "mug-teaser"
            shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns(".kling-render", "renders", "*.lock"))
            first_ex, _ = cli(example / "project.yaml", env, "render")
            ex_cut = load_project(example / "project.yaml").output.path
            ex_renders, ex_stitches = noop_runs(example / "project.yaml", ex_cut, env, args.repeat)
            results.append(("(b) projects/mug-teaser (5 local animatics)", ex_renders, ex_stitches, first_ex))

    print(f"{'what':<52} {'first render':>12} {'no-op render':>13} {'no-op stitch':>13}")
    print(f"{'':<52} {'s':>12} {'median (best) s':>13} {'median s':>13}")
    for label, renders, stitches, first in results:
        print(f"{label:<52} {first:>12.2f} {statistics.median(renders):>6.3f} ({min(renders):.3f}) "
              f"{statistics.median(stitches):>13.3f}")  # fmt: skip
    print(f"one no-op of (a), where the time goes ({sum(t for _, t in steps):.3f} s; the rest is click and the lock):")
    for name, seconds in steps:
        print(f"  {name:<58} {seconds:.3f} s")
    a = statistics.median(results[0][1])
    print(f"target (a) no-op render of {args.clips} shots < 1 s: {a:.3f} s median of {args.repeat} "
          f"{'OK' if a < 1.0 else 'MISSED'}; the cut untouched (inode, mtime, size) every time: OK")  # fmt: skip
    if len(results) > 1:
        b = statistics.median(results[1][1])
        print(f"target (b) no-op render of the example < 2 s: {b:.3f} s median of {args.repeat} "
              f"{'OK' if b < 2.0 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
