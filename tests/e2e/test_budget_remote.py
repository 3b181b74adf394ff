"""One budget per project across machines (issue 23 item 24), against the stand-in WaveSpeed and a
real S3 API (moto), the machines one after the other (their commands in this process,
teams_kit.checkouts): a shard refuses to start when the whole project's plan is over the budget,
and the spend every machine holds on the remote never passes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import S3Case
from e2e_fake import FakeProcess
from teams_kit import checkouts, paid_by_shot, tasks, team_env

PRICE = 0.54  # write_project's shots: O3 std image-to-video, 3 s at $0.18/s


def test_a_shard_refuses_to_start_when_the_whole_plan_is_over_budget(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    one, two = checkouts(tmp_path, team_env(fake_process, s3.env()), 2)
    # Each shard's half (about $2.16) fits $3; the whole project ($4.32) does not.
    first, second = one.render("--shard", "1/2", "--max-cost", "3"), two.render("--shard", "2/2", "--max-cost", "3")
    for done in (first, second):
        assert done.returncode == 3, done.stderr
        assert "whole project would cost $4.3200, over the budget of $3.0000" in done.stderr
    assert len(tasks(fake_process)) == 0


def test_the_spend_of_every_machine_counts_against_one_budget(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    one, two = checkouts(tmp_path, team_env(fake_process, s3.env()), 2)
    half = one.render("--only", "s000,s001,s002,s003", "--max-cost", "10")
    assert half.returncode == 0, half.stderr
    assert len(tasks(fake_process)) == 4  # $2.16 held in the project's spend record on the remote
    spend = [k for k in s3.server.list_raw(s3.bucket) if k.startswith(f"{s3.prefix}/spend/")]
    assert len(spend) == 1
    record = json.loads(s3.server.get_raw(s3.bucket, spend[0]))
    assert record["total_usd"] == pytest.approx(4 * PRICE) and len(record["holds"]) == 4

    # The second machine pulls the four clips ($0) and, alone, would fit the other four in $3:
    # with the first machine's spend it may pay one more only ($2.16 + $0.54 = $2.70 <= $3).
    rest = two.render("--max-cost", "3", "--concurrency", "1")
    assert rest.returncode == 3, rest.stderr
    assert "every machine rendering this project counts" in rest.stderr
    assert len(tasks(fake_process)) == 5 and sum(paid_by_shot(fake_process).values()) == 5
    record = json.loads(s3.server.get_raw(s3.bucket, spend[0]))
    assert record["total_usd"] == pytest.approx(5 * PRICE) and record["total_usd"] <= 3.0
