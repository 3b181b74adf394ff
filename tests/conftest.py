"""Shared fixtures: tiny real images and a CLI runner."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def make_image(
    path: Path, width: int, height: int, fmt: str = "PNG", color: tuple[int, int, int] = (40, 90, 120)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).save(path, fmt)
    return path


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What kling-render learns about ffmpeg binaries goes to a per-session directory, not ~/.cache
    (CLI subprocesses inherit it through the environment)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    patch.delenv("KLING_RENDER_FFMPEG", raising=False)
    yield
    patch.undo()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A project directory with the images the sample projects refer to."""
    images = tmp_path / "images"
    make_image(images / "good.png", 640, 360)
    make_image(images / "small.png", 200, 200)
    make_image(images / "wide.png", 900, 300)
    make_image(images / "pic.webp", 640, 360, "WEBP")
    (images / "fake.png").write_text("this is not an image")
    shutil.copy(_reference_clip(), images / "ref.mp4")
    return tmp_path


@functools.cache
def _reference_clip() -> Path:
    """One real, tiny MP4 per test session (a reference video must be readable media)."""
    from mediagen import make_clip

    return make_clip(Path(tempfile.mkdtemp(prefix="kling-ref-")) / "ref.mp4", duration=0.5, width=64, height=36)
