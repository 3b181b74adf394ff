"""What checking cached clips against their sha256 costs a no-op command, with and without the memo.

Clips: ``--clips`` (default 20) × ``--seconds`` (5) at 1920x1080, 24 fps, H.264 at ``--bitrate``
(12 Mbit/s, about what a 1080p Kling clip carries) + AAC, made once with the imageio-ffmpeg binary
into ``--work`` and put into a fresh clip cache. Measures, median of ``--repeat`` rounds, all 20:

- ``get``: presence and size only (what ``plan`` uses);
- ``use`` with the memo: a stat and a small read per clip (what a no-op render, stitch, status pay);
- ``use`` without it (memos deleted before each round): every clip re-hashed, page cache warm,
  so this is the *cheapest* re-hash can be; a cold cache or a slow disk only adds to it.

    python benchmarks/bench_cache_verify.py [--clips 20] [--seconds 5] [--repeat 7] [--work DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kling_render.media import ffmpeg
from kling_render.store.cache import ClipCache, ClipMeta


def make_clips(work: Path, n: int, seconds: float, bitrate: str) -> list[Path]:
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = work / f"clip-1080p-{seconds:g}s-{bitrate}-{i:03d}.mp4"
        if not path.exists():
            tmp = path.with_suffix(".part.mp4")
            ffmpeg.run(
                ["-y", "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=24:duration={seconds},noise=alls=12:allf=t",
                 "-f", "lavfi", "-i", f"sine=frequency={220 + 20 * i}:sample_rate=48000:duration={seconds}",
                 "-c:v", "libx264", "-preset", "ultrafast", "-b:v", bitrate, "-maxrate", bitrate,
                 "-bufsize", "24M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000", "-ac", "2",
                 "-shortest", str(tmp)],
                f"making clip {i}",
            )  # fmt: skip
            tmp.rename(path)
        paths.append(path)
    return paths


def timed(fn: object, rounds: int, before: object = None) -> float:
    samples = []
    for _ in range(rounds):
        if callable(before):
            before()
        start = time.perf_counter()
        assert callable(fn)
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bitrate", default="12M")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kling-bench-cache-verify")
    args = parser.parse_args()

    sources = make_clips(args.work / "sources", args.clips, args.seconds, args.bitrate)
    with tempfile.TemporaryDirectory(prefix="kling-cache-") as tmp:
        cache = ClipCache(Path(tmp))
        keys = []
        for i, source in enumerate(sources):
            key = f"{i:02x}" + "0" * 62
            with cache.temp_file() as staged:
                staged.write_bytes(source.read_bytes())
                cache.put("local", key, staged, ClipMeta(args.seconds, "bench"))
            keys.append(key)
        total = sum(p.stat().st_size for p in sources)

        def get_all() -> None:
            assert all(cache.get("local", k) is not None for k in keys)

        def use_all() -> None:
            assert all(cache.use("local", k) is not None for k in keys)

        def drop_memos() -> None:
            for k in keys:
                cache.memo_path("local", k).unlink(missing_ok=True)

        use_all()  # warm the page cache and the memos
        t_get = timed(get_all, args.repeat)
        t_memo = timed(use_all, args.repeat)
        t_hash = timed(use_all, args.repeat, before=drop_memos)
        assert not cache.quarantined

    n = len(keys)
    print(f"{n} clips of 1920x1080, {args.seconds:g} s, {total / n / 1e6:.1f} MB each ({total / 1e6:.0f} MB)")
    print(f"get (presence + size):           {t_get * 1e3:8.2f} ms  ({t_get / n * 1e6:6.0f} us a clip)")
    print(f"use with the memo (stat + read): {t_memo * 1e3:8.2f} ms  ({t_memo / n * 1e6:6.0f} us a clip)")
    print(f"use re-hashing (page cache warm):{t_hash * 1e3:8.2f} ms  ({total / t_hash / 1e6:6.0f} MB/s)")
    print(f"the memo saves {(t_hash - t_memo) * 1e3:.0f} ms per command ({t_hash / t_memo:.0f}x)")


if __name__ == "__main__":
    main()
