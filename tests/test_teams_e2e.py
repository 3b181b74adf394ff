"""Issue 14's "Done when", through the real CLI: checkouts on separate directories and local caches
share one remote (moto on 127.0.0.1) and one stand-in WaveSpeed; every path that can spend money
counts the tasks the stand-in created."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import S3Case
from e2e_cli import SECRET
from e2e_fake import FakeProcess
from stress_kit import shot_id
from teams_kit import checkouts, kinds, paid_by_shot, tasks, team_env

EIGHT = Counter({shot_id(n): 1 for n in range(8)})


@pytest.fixture
def fake() -> Iterator[FakeProcess]:
    with FakeProcess(SECRET, latency=0.6) as server:
        yield server


def test_two_checkouts_at_once_pay_each_shot_once_and_cut_the_same_bytes(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    one, two, three = checkouts(tmp_path, team_env(fake, s3.env()), 3)
    procs = [one.start_render(), two.start_render()]
    (rc1, ev1, err1), (rc2, ev2, err2) = one.finish(procs[0]), two.finish(procs[1])
    assert rc1 == 0, err1
    assert rc2 == 0, err2
    assert paid_by_shot(fake) == EIGHT  # 8 tasks in total, one per shot
    assert one.cut_bytes() == two.cut_bytes()
    # Each machine paid for some shots and used the other's task or clip for the rest.
    claimed = Counter(e["shot_id"] for e in ev1 + ev2 if e["event"] == "claimed")
    assert claimed == EIGHT, claimed
    assert {"following", "waiting", "pulled"} & set(kinds(ev1 + ev2)), kinds(ev1 + ev2)

    # A third checkout with an empty local cache pays nothing and makes the same cut.
    assert not three.cache_dir.exists()
    rc3, ev3, err3 = three.finish(three.start_render())
    assert rc3 == 0, err3
    assert len(tasks(fake)) == 8
    assert kinds(ev3).count("pulled") == 8 and "claimed" not in kinds(ev3)
    assert three.cut_bytes() == one.cut_bytes()
    for checkout in (one, two, three):
        checkout.assert_no_secret()
