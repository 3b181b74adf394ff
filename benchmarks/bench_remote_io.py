"""Memory and time of moving clips to and from the remote (push = upload + create-only record,
pull = streamed download + sha256 check + local cache put), against moto's S3 server on
127.0.0.1 (tests/moto_s3.py) and a file:// remote.

Each measurement runs in a fresh child process that does nothing else, after a 1 MB warm-up
transfer (imports, the I/O runtime, connections); a thread samples its resident set
(VmRSS) every 2 ms during the transfer, and the highest sample minus the one before is the
memory the transfer took. Target: flat —
the growth for the largest clip is at most the growth for the smallest + 8 MB (a clip is
never held whole in memory; obstore uploads 5 MB parts, two at a time, and the download
streams 1 MB chunks).

    python benchmarks/bench_remote_io.py [--sizes 5,10,20,40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

KEY = "ab" * 32


def child(mode: str, size_mb: int, workdir: Path) -> dict[str, float]:
    from kling_render.store.cache import ClipCache, ClipMeta
    from kling_render.store.remote.clips import Pushed
    from kling_render.store.remote.connect import remote_for

    remote = remote_for(None)
    assert remote is not None
    key = f"{size_mb:02x}" * 32
    src = workdir / f"clip-{size_mb}.bin"
    cache = ClipCache(workdir / f"cache-{mode}-{size_mb}-{os.getpid()}")
    warm = workdir / f"warm-{os.getpid()}.bin"
    warm.write_bytes(os.urandom(1_000_000))
    warm_key = f"{os.getpid():08x}" * 8
    asyncio.run(remote.clips.push("wavespeed", warm_key, warm, ClipMeta(5.0, "m", "t")))
    asyncio.run(remote.clips.pull("wavespeed", warm_key, cache))

    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mb())
            time.sleep(0.002)

    base = rss_mb()
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        if mode == "push":
            outcome = asyncio.run(remote.clips.push("wavespeed", key, src, ClipMeta(5.0, "m", "t")))
            assert isinstance(outcome, Pushed), outcome
        else:
            entry = asyncio.run(remote.clips.pull("wavespeed", key, cache))
            assert entry is not None and entry.size == size_mb * 1_000_000
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        sampler.join()
    return {"growth_mb": max([base, *samples]) - base, "seconds": seconds}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(mode: str, size_mb: int, workdir: Path, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(size_mb), str(workdir)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5,10,20,40", help="clip sizes in MB")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, size, workdir = args.child
        print(json.dumps(child(mode, int(size), Path(workdir))))
        return 0
    from moto_s3 import MotoS3

    sizes = [int(s) for s in args.sizes.split(",")]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for size in sizes:
            (workdir / f"clip-{size}.bin").write_bytes(os.urandom(size * 1_000_000))
        server = MotoS3.start()
        try:
            bucket = server.new_bucket()
            base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            remotes = {
                "s3 (moto)": {
                    **base,
                    "KLING_RENDER_REMOTE": f"s3://{bucket}/bench",
                    "AWS_ENDPOINT_URL": server.endpoint,
                    "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench-secret",
                    "AWS_REGION": "us-east-1",
                },
                "file://": {**base, "KLING_RENDER_REMOTE": f"file://{workdir / 'remote'}"},
            }
            print("| remote | op | clip MB | peak RSS growth MB | seconds |")
            print("|---|---|---|---|---|")
            for name, env in remotes.items():
                for mode in ("push", "pull"):
                    growth = {}
                    for size in sizes:
                        figures = measure(mode, size, workdir, env)
                        growth[size] = figures["growth_mb"]
                        print(f"| {name} | {mode} | {size} | {figures['growth_mb']:.1f} | {figures['seconds']:.2f} |")
                    flat = growth[max(sizes)] <= growth[min(sizes)] + 8.0
                    ok &= flat
                    print(
                        f"target {name} {mode}: growth at {max(sizes)} MB <= growth at {min(sizes)} MB + 8 MB: "
                        f"{'OK' if flat else 'MISSED'}"
                    )
        finally:
            server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
