"""Distributed stitch (issue 20 item 7) through the real CLI: two shards render their shots and
encode the segments their clips allow, putting them on the shared remote; `stitch` on a third
machine with an empty cache encodes none of them and makes the cut a single machine makes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from e2e_cli import EXAMPLE, Workspace, base_env

from kling_render.plan.shard import shard_of

SHOTS = 6


def project() -> str:
    shots = "".join(
        f"  - {{id: s{i}, prompt: take {i}, image: images/mug.png, duration: {3 + i % 3}"
        + (", transition: {type: fade, duration: 0.25}" if i else "")
        + "}\n"
        for i in range(SHOTS)
    )
    return (
        "version: 1\nname: shards\nprovider: local\n"
        "defaults: {model: kling-video-o3-std/image-to-video, duration: 3}\n"
        f"shots:\n{shots}output: {{path: renders/final.mp4, width: 160, height: 90, fps: 24}}\n"
    )


def machine(tmp_path: Path, name: str, **env: str) -> Workspace:
    root = tmp_path / name
    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(project())
    return Workspace(root, base_env(KLING_RENDER_CACHE=str(tmp_path / f"cache-{name}"), **env))


def events(done: Any) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()[1:]]


def test_two_shards_then_a_stitch_elsewhere_encodes_nothing_the_shards_made(tmp_path: Path) -> None:
    remote = {"KLING_RENDER_REMOTE": f"file://{tmp_path / 'shared'}"}
    made: dict[int, int] = {}
    for k in (1, 2):
        ws = machine(tmp_path, f"shard{k}", **remote)
        found = events(ws.render("--shard", f"{k}/2", "--json"))
        assert not any(e["event"] == "stitched" for e in found)  # a shard makes no cut
        # Encoded as the shard's clips landed (pipelined), then after its run (boundaries, pulls).
        during = sum(1 for e in found if e["event"] == "segment" and e["how"] == "encoded")
        made[k] = during + next(e for e in found if e["event"] == "segments")["encoded"]
    finish = machine(tmp_path, "finish", **remote)
    done = finish.cli("stitch", str(finish.project), "--json")
    assert done.returncode == 0, done.stderr
    cut = json.loads(done.stdout)
    # Every distinct segment was made by one shard (the second pulled the first's clips it needed)
    # and none by the finishing machine. Shots of one length are the same animatic: s1 and s4 share
    # their segment, so 5 distinct segments make the 6 parts.
    assert (cut["segments"], cut["segments_encoded"], cut["segments_pulled"]) == (SHOTS, 0, 5)
    assert made[1] + made[2] == 5 and made[1] and made[2]

    alone = machine(tmp_path, "alone")  # no remote: one machine does it all
    found = events(alone.render("--json"))
    stitched = next(e for e in found if e["event"] == "stitched")
    during = sum(1 for e in found if e["event"] == "segment" and e["how"] == "encoded")
    assert during + stitched["segments_encoded"] == 5 and stitched["sha256"] == cut["sha256"]


def test_the_shots_fall_in_both_shards(tmp_path: Path) -> None:
    """The test above needs shots in both shards; keys depend only on the shots' inputs."""
    from kling_render.app import commands
    from kling_render.plan.plan import shot_key

    ws = machine(tmp_path, "probe")
    loaded = commands.load(ws.project, ())
    assert {shard_of(shot_key("local", s), 2) for s in loaded.shots} == {1, 2}
