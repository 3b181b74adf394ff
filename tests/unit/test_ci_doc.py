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


# -- issue 23 items 5, 6, 7, 9: the recipe in a repository of projects, one comment, the exit codes --


def test_the_recipe_works_in_a_repository_of_projects_only() -> None:
    for workflow in workflows():
        assert workflow["env"]["KLING_RENDER_PACKAGE"].startswith("kling-render==")
        for step in steps(workflow):
            if step.get("uses", "").startswith("actions/setup-python"):
                # cache: pip needs a file to hash; a projects-only repository has no requirements file
                assert step["with"].get("cache") != "pip" or (
                    step["with"]["cache-dependency-path"] == ".github/workflows/kling-render.yml"
                ), step
            assert "pip install ." not in step.get("run", "")
    assert "branch protection" in DOC.read_text().lower() and "gh pr create" in DOC.read_text()


def test_the_plan_comment_is_found_by_its_marker_and_the_check_fails_over_budget() -> None:
    for workflow in workflows():
        plan_job = workflow["jobs"]["plan"]
        runs = [s.get("run", "") for s in plan_job["steps"]]
        assert any(r.startswith('kling-render validate "$PROJECT" --format github') for r in runs)
        assert not any("--edit-last" in r for r in runs)
        comment = next(s for s in plan_job["steps"] if s.get("name", "").startswith("Comment the plan"))
        assert 'marker="<!-- kling-render-plan project: $PROJECT -->"' in comment["run"]
        assert "issues/comments/$id" in comment["run"] and "--method PATCH" in comment["run"]
        gate = next(s for s in plan_job["steps"] if s.get("if") == "steps.plan.outputs.exitcode == '3'")
        assert "exit 3" in gate["run"]
        upload = next(s for s in plan_job["steps"] if "upload-artifact" in s.get("uses", ""))
        assert "plan-full.md" in upload["with"]["path"]


def test_the_plan_step_runs_as_written(tmp_path: Path) -> None:
    """The recipe's plan step, run by bash as Actions would, with the real kling-render: it posts
    the plan for 0, 2 and 3 alike, and the marker it looks for is the one the plan carries."""
    import shutil
    import subprocess
    import sys

    step = next(s for s in workflows()[0]["jobs"]["plan"]["steps"] if s.get("id") == "plan")
    comment = next(s for s in workflows()[0]["jobs"]["plan"]["steps"] if s.get("name", "").startswith("Comment"))
    project = tmp_path / "projects" / "mug-teaser"
    shutil.copytree(DOC.parent.parent / "projects" / "mug-teaser", project,
                    ignore=shutil.ignore_patterns(".kling-render", "renders", "*.lock"))  # fmt: skip
    bindir = Path(sys.executable).parent
    for budget, code in (("0.5", "3"), ("1000", "2")):
        text = (project / "project.yaml").read_text()
        text = re.sub(r"budget: \{max_usd: [\d.]+\}", f"budget: {{max_usd: {budget}}}", text)
        (project / "project.yaml").write_text(text)
        output = tmp_path / "github_output"
        output.write_text("")
        env = {"PATH": f"{bindir}:/usr/bin:/bin", "PROJECT": "projects/mug-teaser/project.yaml",
               "RUN_URL": "https://github.example/o/r/actions/runs/1", "GITHUB_OUTPUT": str(output),
               "HOME": str(tmp_path)}  # fmt: skip
        done = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert output.read_text().strip() == f"exitcode={code}"
        plan_md = (tmp_path / "plan.md").read_text()
        found = re.search(r'marker="(.*)"', comment["run"])
        assert found is not None
        marker = found.group(1).replace("$PROJECT", env["PROJECT"])
        assert plan_md.splitlines()[:2] == ["<!-- kling-render-plan -->", marker]
        assert (tmp_path / "plan-full.md").is_file() and (tmp_path / "plan.json").is_file()
