"""Shared fixtures: tiny real images, a CLI runner, the WaveSpeed stand-in (in this process or as
its own), and a real S3 API (moto) for the remote. Each is defined here once; under pytest-xdist
every worker starts its own servers on free ports."""

from __future__ import annotations

import compileall
import contextlib
import functools
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from PIL import Image

if TYPE_CHECKING:
    from e2e_fake import FakeProcess
    from fake_wavespeed import FakeWaveSpeed
    from moto_s3 import MotoS3

REPO = Path(__file__).resolve().parent.parent


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): two workers per core, at most four more than the cores.
    Most of the suite waits (on a stand-in's task latency, a CLI process, a deadline) rather than
    computes: on the 2-core VM, 4 workers ran it in 5:11-5:30 against 6:54 for 2. (The S3 stand-in
    handles one request at a time, as S3's conditional writes are atomic: tests/moto_s3.py.)
    PYTEST_XDIST_AUTO_NUM_WORKERS still decides when set."""
    given = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").strip()
    if given:
        return max(1, int(given))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return min(2 * cores, cores + 4)


def make_image(
    path: Path, width: int, height: int, fmt: str = "PNG", color: tuple[int, int, int] = (40, 90, 120)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).save(path, fmt)
    return path


@pytest.fixture(scope="session", autouse=True)
def _interruptible() -> Iterator[None]:
    """Ctrl-C reaches the tests and the CLIs they start, even when the suite itself was started with
    SIGINT ignored (a background job of a non-interactive shell, nohup): the interrupt tests send
    it. A Python handler here also means children start with the default action, not "ignored"."""
    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session", autouse=True)
def _bytecode() -> None:
    """kling_render (and the stand-in the suite runs as a process) compiled to bytecode once, before
    the hundreds of CLI processes the suite starts: with PYTHONDONTWRITEBYTECODE set, nothing ever
    writes a .pyc, and every one of those processes compiled every module it imports from source
    (0.2-0.3 s of CPU each). Only stale or missing files are written (atomically, so xdist's
    workers may race), into the usual __pycache__ directories."""
    if sys.dont_write_bytecode:
        compileall.compile_dir(REPO / "kling_render", quiet=2)
        compileall.compile_dir(REPO / "tests", maxlevels=0, quiet=2)


@pytest.fixture(scope="session", autouse=True)
def _cli_zygote() -> Iterator[None]:
    """This worker's zygote: CLI commands of the e2e helpers are forks of it (tests/cli_fork.py)."""
    import cli_fork

    cli_fork.ZYGOTE.start()
    yield
    cli_fork.ZYGOTE.stop()


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What kling-render learns about ffmpeg binaries goes to a per-session directory, not ~/.cache
    (CLI subprocesses inherit it through the environment)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    patch.delenv("KLING_RENDER_FFMPEG", raising=False)
    yield
    patch.undo()


# -- the local provider, small -------------------------------------------------------------------
# The local provider renders 720p animatics (about 1.2 CPU s for a 3 s clip, most of it x264), and
# a cut made from them decodes 720p again. Tests that use it as a free provider in this process,
# and are not about its pictures, render them at a quarter of that (H.264 macroblocks still whole):
# every rule about clips, cuts, keys and money holds whatever the size of the pictures.
SMALL_ANIMATICS = {"16:9": (256, 144), "9:16": (144, 256), "1:1": (144, 144)}


@contextlib.contextmanager
def small_animatics() -> Iterator[None]:
    """In this process, the local provider renders SMALL_ANIMATICS instead of 720p (for a module
    fixture; a test takes the ``small_local`` fixture). CLI processes are not affected."""
    from kling_render.providers import local

    with pytest.MonkeyPatch.context() as patch:
        for aspect, size in SMALL_ANIMATICS.items():
            patch.setitem(local.SIZES, aspect, size)
        yield


@pytest.fixture
def small_local() -> Iterator[None]:
    """The local provider's animatics small, for this test (see ``small_animatics``)."""
    with small_animatics():
        yield


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


# -- the WaveSpeed stand-in (tests/fake_wavespeed.py) ---------------------------------------------
# A module (or one test) says what it needs with a marker, e.g.
#     pytestmark = pytest.mark.stand_in(latency=0.3, api_key=KEY)
# latency: seconds from submit to completed (default 0.2); api_key: the key it accepts (default
# e2e_cli.SECRET); args: more options of tests/fake_wavespeed.py (fake_process only); faults (a
# fake_wavespeed.Faults, e.g. seeded chaos) and variants: the in-process stand-in's own options
# (fake_wavespeed only; the process takes them as args).
STAND_IN_DEFAULTS: dict[str, Any] = {"latency": 0.2, "api_key": None, "args": (), "faults": None, "variants": 0}
IN_PROCESS_ONLY = ("faults", "variants")


def stand_in_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``stand_in`` marker closest to the test (the test's own, else its module's), over the defaults."""
    from e2e_cli import SECRET

    marker = request.node.get_closest_marker("stand_in")
    given = dict(marker.kwargs) if marker is not None else {}
    unknown = set(given) - set(STAND_IN_DEFAULTS)
    if unknown:
        raise TypeError(f"stand_in: unknown options {sorted(unknown)}")
    options = {**STAND_IN_DEFAULTS, **given}
    options["api_key"] = options["api_key"] or SECRET
    return options


def _in_process_stand_in(request: pytest.FixtureRequest) -> Iterator[FakeWaveSpeed]:
    from fake_wavespeed import FakeWaveSpeed

    options = stand_in_options(request)
    if options["args"]:
        raise TypeError("stand_in: args are for fake_process (the stand-in as its own process)")
    with FakeWaveSpeed(
        latency=options["latency"], api_key=options["api_key"], faults=options["faults"], variants=options["variants"]
    ) as server:
        yield server


@pytest.fixture
def fake_wavespeed(request: pytest.FixtureRequest) -> Iterator[FakeWaveSpeed]:
    """The stand-in in this process (its server on a thread): faults added with ``.faults.add``,
    what it received read directly (``.submits()``, ``.requests``, ``.tasks``)."""
    yield from _in_process_stand_in(request)


@pytest.fixture(scope="module")
def module_fake_wavespeed(request: pytest.FixtureRequest) -> Iterator[FakeWaveSpeed]:
    """The same stand-in, one for a whole module (options from the module's marker): for a module
    that renders once and lets its tests copy the result."""
    yield from _in_process_stand_in(request)


@pytest.fixture
def fake_process(request: pytest.FixtureRequest) -> Iterator[FakeProcess]:
    """The stand-in as its own process (tests/e2e_fake.py), steered and read over HTTP: for tests
    that kill or interrupt the real CLI, so the server's threads are never the test's."""
    from e2e_fake import FakeProcess

    options = stand_in_options(request)
    given = [name for name in IN_PROCESS_ONLY if options[name] != STAND_IN_DEFAULTS[name]]
    if given:
        raise TypeError(f"stand_in: {given} are for fake_wavespeed; the process takes them as args")
    with FakeProcess(options["api_key"], latency=options["latency"], args=tuple(options["args"])) as proc:
        yield proc


# -- a real S3 API (moto) for the remote ---------------------------------------------------------

# Credentials the S3 tests use: distinctive, so a test can prove none of them is ever printed.
S3_KEY_ID = "AKIAKLINGTESTKEY7Q2X"
S3_SECRET = "kling-secret/NEVER-PRINT-9f3c2b7e4d1a"
S3_TOKEN = "kling-session-token-NEVER-PRINT-5e8a1c"


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's S3 server on 127.0.0.1, one per session, stopped at the end (see tests/moto_s3.py)."""
    from moto_s3 import MotoS3

    server = MotoS3.start(log=tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class S3Case:
    """A fresh bucket on the moto server, with the environment pointing kling-render at it."""

    server: MotoS3
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return {
            "KLING_RENDER_REMOTE": self.url,
            "AWS_ENDPOINT_URL": endpoint or self.server.endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_SESSION_TOKEN": S3_TOKEN,
            "AWS_REGION": "us-east-1",
        }


@pytest.fixture
def s3(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> S3Case:
    """A new bucket, and only its AWS variables in the environment (none of the machine's)."""
    case = S3Case(moto_s3, moto_s3.new_bucket(), "team/project")
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "KLING_RENDER_REMOTE":
            monkeypatch.delenv(name)
    for name, value in case.env().items():
        monkeypatch.setenv(name, value)
    return case
