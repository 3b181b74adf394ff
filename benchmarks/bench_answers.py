"""Memory of the CLI when the service answers huge: peak resident memory of ``kling-render render``
while every poll is answered with a 256 MB JSON body (announced, unannounced, or a gzip bomb).

Issue 12 measured 815 MB before answers were capped. Target: the peak stays under 200 MB (the cap
is 8 MB of JSON; the rest is the interpreter, httpx and the engine).

    python benchmarks/bench_answers.py [--size-mb 256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MEASURE = textwrap.dedent(
    """
    import resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """
)


def peak_mb(kind: str, options: dict[str, object]) -> tuple[int, float]:
    from e2e_cli import SECRET, small_workspace, ws_env
    from e2e_fake import FakeProcess

    with FakeProcess(SECRET, latency=0.3) as fake, tempfile.TemporaryDirectory() as tmp:
        ws = small_workspace(Path(tmp) / "small", ws_env(fake.base_url))
        fake.fault(kind, "/api/v3/predictions/", count=1000, **options)
        cmd = [sys.executable, "-c", MEASURE, sys.executable, "-m", "kling_render", "render", str(ws.project),
               "--no-stitch", "--poll-interval", "0.05"]  # fmt: skip
        done = subprocess.run(cmd, env=ws.env, cwd=ws.root, capture_output=True, text=True, timeout=600, check=True)
        code, kb = (int(x) for x in done.stdout.split())
        return code, kb / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=256)
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    print(f"every poll answered with {args.size_mb} MB; peak resident memory of the CLI (target < 200 MB)")
    for label, kind, options in (
        ("JSON, length announced", "huge", {"size": size, "announce": True}),
        ("JSON, read until close", "huge", {"size": size, "announce": False}),
        ("gzip bomb", "gzip", {"size": size}),
    ):
        code, mb = peak_mb(kind, options)
        verdict = "OK" if mb < 200 else "OVER"
        print(f"{label:<26} {mb:7.1f} MB  (exit {code}: the poll fails, the task id is kept)  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
