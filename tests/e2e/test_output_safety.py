"""Outputs (SPEC §8): a non-http(s) output URL, a redirect to file:, and a download over the size
cap fail THAT shot with a clear reason; the other shots complete, nothing is written outside the
cache, no partial file is left. And the API key appears in no file written and no line printed,
even with --verbose and when the server rejects it (the fake's 401 echoes the token): the real
CLI. The bad outputs run the render in this process (``e2e_cli.invoke``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2e_cli import invoke
from fake_wavespeed import FakeWaveSpeed
from stress_kit import API_KEY, OTHER_MODEL, cli_cmd, cli_env, render_args, state_of, write_project

from kling_render.store.cache import ClipCache

pytestmark = pytest.mark.stand_in(api_key=API_KEY)

SHOTS = 3
VICTIM = "s001"  # the one shot of OTHER_MODEL: faults are aimed at it by path prefix


def files_under(root: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def render(project: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """``kling-render render PROJECT ...`` in this process."""
    return invoke([*render_args(project, concurrency=3)[3:], *extra], env=env, cwd=project.parent)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"kind": "output_url", "url": "file:///etc/passwd"}, "refusing a 'file' output URL"),
        ({"kind": "output_url", "url": "ftp://127.0.0.1/{id}.mp4"}, "refusing a 'ftp' output URL"),
        (
            {"kind": "output_url", "url": "{base}/outputs/victim/{id}.mp4", "then": "redirect_file"},
            "redirect to a 'file' URL",
        ),
        ({"kind": "output_url", "url": "{base}/outputs/victim/{id}.mp4", "then": "oversize"}, "byte cap"),
    ],
    ids=["file-url", "ftp-url", "redirect-to-file", "over-the-cap"],
)
def test_bad_output_fails_only_that_shot(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path, fault: dict[str, str], reason: str
) -> None:
    project = write_project(tmp_path / "p", SHOTS, models={1: OTHER_MODEL})
    then = fault.pop("then", None)
    fake_wavespeed.faults.add(fault["kind"], f"/api/v3/kwaivgi/{OTHER_MODEL}", count=10, url=fault["url"])
    if then:
        fake_wavespeed.faults.add(then, "/outputs/victim/", count=100)
    outside = files_under(Path("/etc")) if fault["url"].startswith("file") else {}
    before = files_under(tmp_path)
    result = render(project, cli_env(fake_wavespeed.base_url))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    summary = [line for line in result.stderr.splitlines() if line.startswith(f"  {VICTIM}: failed: ")]
    assert len(summary) == 1 and reason in summary[0], result.stderr
    state = state_of(project)
    assert {sid: rec.status for sid, rec in state.items()} == {"s000": "done", VICTIM: "submitted", "s002": "done"}
    assert state[VICTIM].task_id  # kept: the next run polls it again, it is not paid twice
    cache = ClipCache(project.parent / ".kling-render" / "cache")
    assert cache.get("wavespeed", state[VICTIM].key) is None
    assert not list(cache.tmp_dir.iterdir())  # no partial download behind
    written = set(files_under(tmp_path)) - set(before)
    allowed = (project.parent / ".kling-render", project.with_suffix(".lock"))
    assert all(any(p == a or a in p.parents for a in allowed) for p in written), written
    assert files_under(Path("/etc")) == outside if outside else True


def test_api_key_never_written_or_printed(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", SHOTS)
    fake_wavespeed.faults.add("500", "/api/v3/kwaivgi/", count=1)  # an uncertain submit: an unknown shot with a message
    fake_wavespeed.faults.add("429", "/api/v3/predictions/", count=3, retry_after=0.1)
    outputs: list[str] = []

    def cli(env: dict[str, str], verbose: bool, *args: str) -> None:
        result = subprocess.run(
            [*cli_cmd(*(["--verbose"] if verbose else [])), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        outputs.extend([result.stdout, result.stderr])

    env = cli_env(fake_wavespeed.base_url)
    cli(env, True, *render_args(project)[3:])
    cli(env, True, *render_args(project, "--json")[3:])
    cli(env, False, *render_args(project, "--resubmit-unknown")[3:])
    cli(env, True, "status", str(project), "--provider", "wavespeed", "--json")
    assert all(rec.status == "done" for rec in state_of(project).values())
    wrong = "wrong-key-9d8c7b6a5f"  # the server rejects it and echoes it in its 401 message
    other = write_project(tmp_path / "q", 1)
    for verbose in (True, False):
        cli(cli_env(fake_wavespeed.base_url, key=wrong), verbose, *render_args(other)[3:])
    joined = "\n".join(outputs)
    assert "the API key was rejected (401)" in joined, joined[-2000:]
    assert any(wrong in str(r.body) or r.status == 401 for r in fake_wavespeed.requests)  # the fake did echo it
    for key in (API_KEY, wrong):
        assert key not in joined
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), path
