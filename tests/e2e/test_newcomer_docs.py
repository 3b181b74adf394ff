"""Issue 23, item 15: what the README tells a newcomer is true of the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from e2e_cli import EXAMPLE, Workspace, base_env

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_cites_no_document_the_repository_lacks() -> None:
    assert "SPEC" not in README and "§" not in README
    for target in re.findall(r"\]\(([^)#]+)\)", README):  # links to files exist
        if not target.startswith("http"):
            assert (REPO / target).exists(), target


def test_set_up_names_the_python_it_needs() -> None:
    setup = section("Set up")
    assert "Python 3.11 or later" in setup
    (major, minor) = re.search(r"requires-python = \">=(\d+)\.(\d+)\"", (REPO / "pyproject.toml").read_text()).groups()  # type: ignore[union-attr]
    assert f"Python {major}.{minor} or later" in setup


def test_the_stitch_manifest_is_where_the_readme_says(tmp_path: Path) -> None:
    assert "`.kling-render/project.yaml/stitch.json`" in README
    root = tmp_path / "p"
    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(
        "version: 1\nname: m\nprovider: local\n"
        "shots:\n  - {id: a, model: kling-video-o3-std/image-to-video, duration: 3, prompt: x, image: images/mug.png}\n"
        "output: {path: renders/final.mp4, width: 160, height: 90, fps: 24}\n"
    )
    ws = Workspace(root, base_env(KLING_RENDER_CACHE=str(tmp_path / "cache")))
    done = ws.cli("render")
    assert done.returncode == 0, done.stderr
    assert (root / ".kling-render" / "project.yaml" / "stitch.json").is_file()


def test_the_stand_in_server_runs_without_pytest(tmp_path: Path) -> None:
    """``python tests/fake_wavespeed.py --port 0``, with pytest made unimportable."""
    script = str(REPO / "tests" / "fake_wavespeed.py")
    code = (
        "import runpy, sys; sys.modules['pytest'] = None; sys.argv = ['fake_wavespeed.py', '--port', '0']; "
        f"runpy.run_path({script!r}, run_name='__main__')"
    )
    import httpx

    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, cwd=tmp_path) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("http://127.0.0.1:"), line
            answer = httpx.get(f"{line}/api/v3/predictions/nope/result", timeout=10)
            assert answer.status_code in (401, 404)  # it serves (no key given: refused or unknown)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
