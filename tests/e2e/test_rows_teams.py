"""A ``rows:`` project rendered by a CI shard matrix against a shared remote (moto on 127.0.0.1) and
the stand-in WaveSpeed process: the shards split the distinct shots, pay each once, make no cut;
a third machine with an empty cache and no API key stitches every row's cut from the remote; a
full render anywhere afterwards pays nothing and makes the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from conftest import S3Case
from e2e_fake import FakeProcess
from teams_kit import team_env
from test_rows_e2e import KEYS, created, cut, rows_workspace


def test_shards_render_the_rows_once_and_a_third_machine_stitches_every_cut(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    env = team_env(fake_process, s3.env())
    # one machine after the other: their commands run in this process (``in_process``)
    one, two, three = (rows_workspace(tmp_path / f"machine-{n}", dict(env), in_process=True) for n in (1, 2, 3))

    for ws, shard in ((one, "1/2"), (two, "2/2")):
        done = ws.render("--shard", shard)
        assert done.returncode == 0, done.stderr
        assert not (ws.root / "renders").exists()  # a shard makes no cut: a later `stitch` does
    # 1 shared intro + 4 heroes + 4 outros, each paid once across the two shards
    assert sum(created(fake_process).values()) == 9 and max(created(fake_process).values()) == 1

    three.env.pop("WAVESPEED_API_KEY")
    done = three.cli("stitch", str(three.project))
    assert done.returncode == 0, done.stderr
    assert sum(created(fake_process).values()) == 9
    assert all(cut(three, key).is_file() for key in KEYS)
    lock = three.project.with_suffix(".lock").read_text()
    assert all(key in lock for key in KEYS)  # every row's clips recorded on the stitching machine

    again = one.render()  # a full render on a shard machine: every clip on the remote, $0
    assert again.returncode == 0, again.stderr
    assert sum(created(fake_process).values()) == 9
    for key in KEYS:
        assert cut(one, key).read_bytes() == cut(three, key).read_bytes()
