"""Planning speed and memory: load + validate + template + price N shots (10 ... 10,000).

Each size runs in a fresh subprocess so peak memory (ru_maxrss) is per size; the time
is measured inside it, so it excludes interpreter start-up and imports (printed apart).
Targets: 1,000 shots well under 1 s; 10,000 shots under 2 s; growth linear.

    python benchmarks/bench_plan.py [--sizes 10,100,1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from PIL import Image

MODELS = [
    (
        "kling-v3.0-std/image-to-video",
        '    image: images/a.png\n    prompt: "{{ prompts.base }}, take {{ shot.index }}"\n',
    ),
    (
        "kling-video-o3-std/image-to-video",
        "    image: images/a.png\n    end_image: images/b.png\n"
        '    prompt: "{{ product }} shot {{ shot.id }}"\n    sound: true\n',
    ),
    (
        "kling-video-o1-std/image-to-video",
        '    image: images/b.png\n    prompt: "plain prompt number {{ shot.index }}"\n',
    ),
    (
        "kling-video-o3-std/reference-to-video",
        '    images: [images/a.png, images/b.png]\n    prompt: "{{ prompts.base }} spins"\n',
    ),
    (
        "kling-v3.0-pro/image-to-video",
        "    image: images/a.png\n"
        '    multi_prompt: [{prompt: "wide {{ product }}", duration: 3}, {prompt: close, duration: 2}]\n',
    ),
]


def write_project(root: Path, n: int) -> Path:
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1280, 720), (30, 60, 90)).save(images / "a.png")
    Image.new("RGB", (720, 720), (90, 60, 30)).save(images / "b.png")
    parts = [
        "version: 1\nname: bench\nvars: {product: mug, light: soft}\n",
        'prompts: {base: "a {{ product }} in {{ light }} light"}\n',
        "defaults: {duration: 5}\nshots:\n",
    ]
    for i in range(n):
        model, body = MODELS[i % len(MODELS)]
        parts.append(f"  - id: s{i:05d}\n    model: {model}\n{body}")
    path = root / "project.yaml"
    path.write_text("".join(parts))
    return path


CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    t0 = time.perf_counter()
    from kling_render.app.commands import plan_for
    from kling_render.project.loader import load_project
    t_import = time.perf_counter() - t0
    best = None
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter()
        project = load_project(__import__("pathlib").Path(sys.argv[1]))
        plan = plan_for(project, "local", None)
        elapsed = time.perf_counter() - t
        best = elapsed if best is None else min(best, elapsed)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"shots": len(plan.shots), "seconds": best, "import_seconds": t_import, "peak_mb": rss,
                      "total_usd": float(plan.total_cost)}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'shots':>7} {'plan s':>8} {'us/shot':>8} {'peak MB':>8} {'imports s':>9}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = write_project(Path(tmp) / f"p{n}", n)
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), str(args.repeat)],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout)
            rows.append(row)
            print(
                f"{row['shots']:>7} {row['seconds']:>8.3f} {row['seconds'] / n * 1e6:>8.1f} "
                f"{row['peak_mb']:>8.1f} {row['import_seconds']:>9.3f}"
            )
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        ratio = (b["seconds"] / a["seconds"]) / (b["shots"] / a["shots"])
        print(f"growth from {a['shots']} to {b['shots']} shots: {ratio:.2f}x linear (1.00 = linear)")
    by_n = {r["shots"]: r for r in rows}
    if 1000 in by_n:
        print(
            f"target 1,000 shots well under 1 s: {by_n[1000]['seconds']:.3f} s "
            f"{'OK' if by_n[1000]['seconds'] < 0.5 else 'MISSED'}"
        )
    if 10000 in by_n:
        print(
            f"target 10,000 shots under 2 s: {by_n[10000]['seconds']:.3f} s "
            f"{'OK' if by_n[10000]['seconds'] < 2 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
