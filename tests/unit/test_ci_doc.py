"""docs/ci.md: the two workflows parse, and keep the rules that make them work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DOC = Path(__file__).resolve().parents[2] / "docs" / "ci.md"


def workflows() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    return [yaml.safe_load(block) for block in blocks]


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_the_remote_workflow_shards_then_finishes() -> None:
    remote = workflows()[0]
    assert remote["env"]["KLING_RENDER_REMOTE"] == "${{ vars.KLING_RENDER_REMOTE }}"
    render, finish = remote["jobs"]["render"], remote["jobs"]["finish"]
    assert render["strategy"]["fail-fast"] is False and render["strategy"]["matrix"]["shard"]
    assert any("--shard ${{ matrix.shard }}/${{ strategy.job-total }}" in s.get("run", "") for s in render["steps"])
    assert "concurrency" not in render  # claims make overlapping renders safe
    assert finish["needs"] == "render" and "!cancelled()" in finish["if"]
    runs = [s.get("run", "") for s in finish["steps"]]
    assert any(r.startswith("kling-render stitch") for r in runs)
    assert any("status" in r and "--check" in r for r in runs)
    assert "WAVESPEED_API_KEY" not in str(finish)  # the finish job cannot pay
    assert not any("actions/cache" in s.get("uses", "") for s in steps(remote))


def test_job_level_env_uses_only_contexts_github_allows_there() -> None:
    """jobs.<id>.env may use github, needs, strategy, matrix, vars, secrets and inputs, not env."""
    for workflow in workflows():
        for job in workflow["jobs"].values():
            for value in (job.get("env") or {}).values():
                assert "env." not in str(value), value


def test_the_cache_workflow_restores_what_it_saves_under_keys_that_survive_a_failed_run() -> None:
    cache = workflows()[1]
    used = [s for s in steps(cache) if "actions/cache" in s.get("uses", "")]
    restores = [s for s in used if s["uses"].startswith("actions/cache/restore")]
    saves = [s for s in used if s["uses"].startswith("actions/cache/save")]
    assert len(restores) == 2 and len(saves) == 1  # the plan job restores too (read only)
    paths = {s["with"]["path"] for s in used}
    assert paths == {"${{ env.WORK_DIR }}"}, paths  # one path list: the cache version matches
    assert cache["env"]["WORK_DIR"] == "projects/mug-teaser/.kling-render"
    save = saves[0]
    assert save["if"] == "always()"
    assert "hashFiles" not in str(used)  # nothing the run changes (the lock) picks the next restore
    assert save["with"]["key"] == "kling-mug-teaser-${{ github.run_id }}-${{ github.run_attempt }}"
    for restore in restores:
        assert save["with"]["key"].startswith(restore["with"]["restore-keys"].strip())
    assert cache["jobs"]["render"]["concurrency"]["cancel-in-progress"] is False
