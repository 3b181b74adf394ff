"""Helpers for end-to-end tests that drive the real ``kling-render`` CLI in a subprocess.

``Workspace`` owns one project directory, the environment the CLI runs with, and every
stdout/stderr the CLI printed (so a test can prove the API key never shows up anywhere).

Each command is its own process, forked from this worker's zygote rather than a new interpreter
(tests/cli_fork.py says what that keeps and what it skips); ``Workspace(..., fresh=True)`` runs
``python -m kling_render`` itself, for tests about the interpreter's start.

``Workspace(..., in_process=True)`` runs the same commands in this process instead (click's
runner, with the workspace's environment and working directory swapped in for the call): for
tests about what a command decides, not about the process (exit codes of the real process,
kill -9, Ctrl-C, what reaches the file descriptors), which saves the interpreter start and the
imports of every call. An exception that escapes the command fails the test, as a traceback
would in the real process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cli_fork

from kling_render.media.probe import MediaInfo, probe, verify_clip

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "projects" / "mug-teaser"
SECRET = "sk-test-SECRET-1234567890abcdef"

# Three short shots, three models, every prompt names its shot ("shot <id>:") so the fake's
# request records say which shot a submit was for.
SMALL_PROJECT = """\
version: 1
name: small
provider: wavespeed
vars: {product: ceramic mug}
defaults: {model: kling-v3.0-std/image-to-video, duration: 3, sound: false}
shots:
  - id: alpha
    prompt: "shot alpha: the {{ product }} on a table"
    image: images/mug.png
  - id: beta
    model: kling-video-o3-std/image-to-video
    prompt: "shot beta: coffee pours into the {{ product }}"
    image: images/mug.png
    end_image: images/mug-full.png
    transition: {type: fade, duration: 0.5}
  - id: gamma
    model: kling-video-o3-std/reference-to-video
    prompt: "shot gamma: the {{ product }} spins"
    images: [images/mug.png, images/mug-side.png]
    trim: {start: 0.5}
    transition: {type: dissolve, duration: 0.5}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
"""
SMALL_SHOTS = ("alpha", "beta", "gamma")
SMALL_COST = {"alpha": 0.252, "beta": 0.54, "gamma": 0.252}  # 3 s x 0.084, 0.18, 0.084
# 3 + 3 + 2.5 kept seconds, minus two 0.5 s transitions
SMALL_CUT_SECONDS = 7.5


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)
    in_process: bool = False  # run the commands in this process (see the module's docstring)
    fresh: bool = False  # each command a new interpreter, not a fork of this one (cli_fork.py)

    @property
    def project(self) -> Path:
        return self.root / "project.yaml"

    @property
    def state_path(self) -> Path:
        return self.state_path_of("wavespeed")

    def state_path_of(self, provider: str) -> Path:
        return self.root / ".kling-render" / self.project.name / provider / "state.json"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".kling-render" / "cache"

    @property
    def final_cut(self) -> Path:
        return self.root / "renders" / "final.mp4"

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120, verbose: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``python -m kling_render [--verbose] ARGS`` with the workspace's environment."""
        cmd = [sys.executable, "-m", "kling_render", *(["--verbose"] if verbose else []), *args]
        env = env if env is not None else self.env
        if self.in_process:
            done = invoke(cmd[3:], env=env, cwd=self.root)
        elif self.fresh:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=self.root
            )
        else:
            done = cli_fork.run(cmd[3:], env=env, cwd=self.root, timeout=timeout)
        self.outputs += [done.stdout, done.stderr]
        return done

    def render(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cli("render", str(self.project), "--poll-interval", "0.05", *args, **kw)

    def plan(self, *args: str) -> dict[str, Any]:
        done = self.cli("plan", str(self.project), "--json", *args)
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def status(self) -> dict[str, Any]:
        done = self.cli("status", str(self.project), "--json")
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def statuses(self) -> dict[str, str]:
        return {s["id"]: s["status"] for s in self.status()["shots"]}

    def state(self) -> dict[str, dict[str, Any]]:
        return self.state_of("wavespeed")

    def state_of(self, provider: str) -> dict[str, dict[str, Any]]:
        shots: dict[str, dict[str, Any]] = json.loads(self.state_path_of(provider).read_text())["shots"]
        return shots

    def edit(self, old: str, new: str) -> None:
        text = self.project.read_text()
        assert text.count(old) == 1, old
        self.project.write_text(text.replace(old, new))

    def clips(self, provider: str = "wavespeed") -> list[Path]:
        return sorted((self.cache_dir / provider).rglob("*.mp4"))

    def assert_no_secret(self, secret: str = SECRET, *extra_dirs: Path) -> int:
        """The key is in no file under the workspace (project, state, cache, lock) nor any output."""
        files = 0
        for base in (self.root, *extra_dirs):
            for path in base.rglob("*"):
                if path.is_file():
                    files += 1
                    assert secret.encode() not in path.read_bytes(), f"the API key leaked into {path}"
        for text in self.outputs:
            assert secret not in text, f"the API key leaked into CLI output:\n{text}"
        return files


@contextlib.contextmanager
def _process_context(env: dict[str, str], cwd: Path) -> Iterator[None]:
    """This process's environment and working directory are ``env`` and ``cwd`` for the block."""
    from kling_render.media import caps

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    fresh_ffmpeg = "KLING_RENDER_FFMPEG" in env or "KLING_RENDER_FFMPEG" in saved_env
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    if fresh_ffmpeg:
        caps.reset()  # the binary is chosen once per process, from the environment
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        if fresh_ffmpeg:
            caps.reset()


def invoke(args: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``kling-render ARGS`` run in this process, as ``Workspace.cli`` runs it as a process: the exit
    code, stdout and stderr. An exception that escapes the command is raised here."""
    from click.testing import CliRunner

    from kling_render.cli import cli

    with _process_context(env, cwd):
        result = CliRunner().invoke(cli, args, prog_name="kling-render", catch_exceptions=False)
    return subprocess.CompletedProcess(["kling-render", *args], result.exit_code, result.stdout, result.stderr)


def base_env(**extra: str) -> dict[str, str]:
    """The test's environment without any provider (WaveSpeed, fal) or cache settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WAVESPEED_", "KLING_RENDER_", "FAL_")) and k not in ("HTTP_PROXY", "HTTPS_PROXY")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return {**env, **extra}


def small_workspace(
    root: Path, env: dict[str, str], text: str = SMALL_PROJECT, *, in_process: bool = False
) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(text)
    return Workspace(root, env, in_process=in_process)


def ws_env(base_url: str, key: str = SECRET) -> dict[str, str]:
    return base_env(WAVESPEED_BASE_URL=base_url, WAVESPEED_API_KEY=key)


def decodes(path: Path) -> MediaInfo:
    """Decode every packet of ``path`` (raises FFmpegError when it is damaged)."""
    return verify_clip(path)


__all__ = [
    "EXAMPLE",
    "SECRET",
    "SMALL_COST",
    "SMALL_CUT_SECONDS",
    "SMALL_PROJECT",
    "SMALL_SHOTS",
    "Workspace",
    "base_env",
    "decodes",
    "invoke",
    "probe",
    "small_workspace",
    "ws_env",
]
