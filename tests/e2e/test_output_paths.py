"""Issue 12, output safety: nothing kling-render writes may land on what it reads or keeps.

``output.path``, ``plan --out`` and ``report --out`` are refused (exit 2, before anything is
written) when they are the project file, its lock file, an input (image, video, music), or lie
inside ``.kling-render/`` or the clip cache (wherever ``KLING_RENDER_CACHE`` points); also when
they name a directory or sit under a regular file. The class, not one spelling: the same file via
``..``, a symlink, a hard link, another case, a trailing slash and an absolute path; for
output.path a located validation error. The commands run in this process (``in_process``: what is
refused and what is written do not depend on it); one case of each kind goes through the real CLI.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_cli import SMALL_PROJECT, Workspace, base_env, small_workspace
from mediagen import make_clip

# A fourth shot that reads a reference video, so an .mp4 input exists for output.path to hit.
PROJECT = SMALL_PROJECT.replace("provider: wavespeed\n", "").replace(
    "output:",
    """\
  - id: delta
    model: kling-video-o3-std/reference-to-video
    prompt: "shot delta: the mug, as in the video"
    images: [images/mug.png]
    video: media/ref.mp4
output:""",
)


@pytest.fixture(scope="module")
def ref_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("media") / "ref.mp4", duration=1.0).read_bytes()


@pytest.fixture
def ws(tmp_path: Path, ref_clip: bytes) -> Workspace:
    env = base_env(KLING_RENDER_CACHE=str(tmp_path / "p" / "shared-cache"))
    ws = small_workspace(tmp_path / "p", env, PROJECT, in_process=True)
    (ws.root / "media").mkdir()
    (ws.root / "media" / "ref.mp4").write_bytes(ref_clip)
    (ws.root / "renders.mp4").mkdir()  # a directory whose name looks like a cut
    (ws.root / "shared-cache").mkdir()
    (ws.root / ".kling-render").mkdir()
    (ws.root / "cachelink").symlink_to(".kling-render")
    (ws.root / "ref-link.mp4").symlink_to("media/ref.mp4")
    (ws.root / "project-link.yaml").symlink_to("project.yaml")
    os.link(ws.root / "project.yaml", ws.root / "project-hardlink.yaml")
    return ws


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and link under ``root``: content digest and mtime (links by their target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = (os.readlink(path), 0)
        elif path.is_file():
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            out[rel + "/"] = ("dir", 0)
    return out


def one_error(stderr: str) -> str:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(("error: ", "Error: "))]
    assert len(errors) == 1, stderr
    return errors[0]


OUTPUT_PATHS: list[tuple[str, str]] = [
    ("media/ref.mp4", "the video of shot delta"),
    ("media/../media/ref.mp4", "the video of shot delta"),
    ("./media//ref.mp4", "the video of shot delta"),
    ("{root}/media/ref.mp4", "the video of shot delta"),  # absolute
    ("ref-link.mp4", "the video of shot delta"),  # a symlink to it
    ("MEDIA/Ref.MP4", "the video of shot delta"),  # another case (one file where the FS folds case)
    ("media/ref.mp4/", "names a directory"),  # trailing slash
    ("renders/", "names a directory"),
    ("renders.mp4", "is an existing directory"),
    ("images/mug.png/final.mp4", "which is a file, not a directory"),
    (".kling-render/final.mp4", "kling-render's state directory"),
    (".kling-render/cache/final.mp4", "kling-render's state directory"),
    (".KLING-RENDER/final.mp4", "kling-render's state directory"),
    ("cachelink/final.mp4", "kling-render's state directory"),  # a symlink into it
    ("shared-cache/final.mp4", "the clip cache"),  # KLING_RENDER_CACHE
    ("shared-cache/local/ab/final.mp4", "the clip cache"),
]


@pytest.mark.parametrize(("value", "why"), OUTPUT_PATHS, ids=[v for v, _ in OUTPUT_PATHS])
def test_output_path_onto_what_the_project_reads_or_keeps_is_a_located_error(
    ws: Workspace, value: str, why: str
) -> None:
    value = value.format(root=ws.root)
    ws.edit("output: {path: renders/final.mp4,", f"output: {{path: '{value}',")
    line = next(n for n, text in enumerate(ws.project.read_text().splitlines(), 1) if text.startswith("output:"))
    before = snapshot(ws.root)
    for command in ("validate", "plan", "render", "stitch"):
        done = ws.cli(command, str(ws.project), *(["--provider", "local"] if command != "validate" else []))
        assert done.returncode == 2, (command, done.stderr)
        error = one_error(done.stderr)
        assert re.match(rf"error: project\.yaml:{line}(:\d+)?: output\.path: {re.escape(value)}: ", error), error
        assert why in error, error
    assert snapshot(ws.root) == before  # nothing written, not even the state directory


def test_a_safe_output_path_still_renders(ws: Workspace) -> None:
    ws.edit("output: {path: renders/final.mp4,", "output: {path: 'cuts/v1/final.mp4',")
    assert ws.cli("validate", str(ws.project)).returncode == 0


OUT_PATHS: list[tuple[str, str]] = [
    ("project.yaml", "the project file"),
    ("./project.yaml", "the project file"),
    ("images/../project.yaml", "the project file"),
    ("{root}/project.yaml", "the project file"),
    ("PROJECT.YAML", "the project file"),
    ("project.yaml/", "names a directory"),
    ("project-link.yaml", "the project file"),
    ("project-hardlink.yaml", "the project file"),
    ("project.lock", "the project's lock file"),  # even before the first render wrote it
    ("images/mug.png", "the image of shot alpha"),
    ("images/mug-full.png", "the end_image of shot beta"),
    ("media/ref.mp4", "the video of shot delta"),
    ("ref-link.mp4", "the video of shot delta"),
    ("renders/final.mp4", "the final cut"),
    (".kling-render/plan.json", "kling-render's state directory"),
    ("cachelink/plan.json", "kling-render's state directory"),
    ("shared-cache/tmp/plan.json", "the clip cache"),
    ("images", "is a directory"),  # click's own check for an existing directory, also exit 2
    ("images/", "is a directory"),
    ("plans/", "names a directory"),  # a directory that does not exist yet
    ("project.yaml/plan.json", "which is a file, not a directory"),
    ("images/mug.png/deeper/plan.json", "which is a file, not a directory"),
]


def _plan(ws: Workspace, out: str) -> tuple[int, str]:
    done = ws.cli("plan", str(ws.project), "--out", out)
    return done.returncode, done.stderr


def _report(ws: Workspace, out: str) -> tuple[int, str]:
    done = ws.cli("report", str(ws.project), "--out", out)
    return done.returncode, done.stderr


@pytest.mark.parametrize("command", [_plan, _report], ids=["plan", "report"])
@pytest.mark.parametrize(("out", "why"), OUT_PATHS, ids=[o for o, _ in OUT_PATHS])
def test_out_onto_what_the_project_reads_or_keeps_is_refused_before_writing(
    ws: Workspace, command: Callable[[Workspace, str], tuple[int, str]], out: str, why: str
) -> None:
    out = out.format(root=ws.root)
    before = snapshot(ws.root)
    code, stderr = command(ws, out)
    assert code == 2, stderr
    error = one_error(stderr)
    assert why in error, error
    assert error.startswith(f"error: --out {out}: ") or error.startswith("Error: Invalid value for '--out'"), error
    assert snapshot(ws.root) == before


def test_out_elsewhere_is_written(ws: Workspace) -> None:
    code, stderr = _plan(ws, "plans/today.json")
    assert code == 0, stderr
    assert (ws.root / "plans" / "today.json").is_file()
    code, stderr = _report(ws, "pages/report.html")
    assert code == 0, stderr
    assert (ws.root / "pages" / "report.html").is_file()


def test_the_refusals_through_the_real_cli(ws: Workspace) -> None:
    """The same refusals from the real process: exit 2, one line, nothing written."""
    ws.in_process = False
    before = snapshot(ws.root)
    code, stderr = _plan(ws, "project.lock")
    assert code == 2 and "the project's lock file" in one_error(stderr), stderr
    assert snapshot(ws.root) == before
    ws.edit("output: {path: renders/final.mp4,", "output: {path: 'media/ref.mp4',")
    before = snapshot(ws.root)
    for command in ("validate", "render"):
        done = ws.cli(command, str(ws.project))
        assert done.returncode == 2, (command, done.stderr)
        assert "output.path: media/ref.mp4: " in one_error(done.stderr) and "the video of shot delta" in done.stderr
    assert snapshot(ws.root) == before
