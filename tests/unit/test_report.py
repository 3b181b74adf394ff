"""`kling-render report`: a self-contained HTML page, checked as text and as Chromium draws it."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageChops, ImageStat

from kling_render.cli import cli
from kling_render.report.html import Frames, ReportData, ShotCard, render_html, video_source
from tests.conftest import REPO, small_animatics

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1400, 2000)
TRICKY_PROMPT = 'a "mug" <b>bold</b> & steam'
PROJECT_YAML = """\
version: 1
name: report-test
provider: local
defaults: {model: kling-v3.0-std/image-to-video, duration: 3, sound: false}
shots:
  - id: opening
    prompt: 'a "mug" <b>bold</b> & steam'
    image: images/mug.png
  - id: closing
    prompt: "coffee pours into the {{ drink }} mug"
    image: images/mug.png
    end_image: images/mug-full.png
    negative_prompt: blur
    transition: {type: fade, duration: 0.5}
vars: {drink: espresso}
output: {path: renders/final.mp4, width: 640, height: 360, fps: 24}
"""
PROMPTS = {"opening": TRICKY_PROMPT, "closing": "coffee pours into the espresso mug"}


class _Resources(HTMLParser):
    """Every src/href attribute and tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "poster", "srcset") and value is not None:
                self.refs.append((tag, name, value))


def _parse(html_text: str) -> _Resources:
    parser = _Resources()
    parser.feed(html_text)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-shot project rendered with the local provider (clips, lock, state, final cut); its
    animatics small (conftest.small_animatics): the report's frames are scaled to 320 px anyway."""
    root = tmp_path_factory.mktemp("report")
    (root / "images").mkdir()
    for name in ("mug.png", "mug-full.png"):
        shutil.copy(REPO / "projects" / "mug-teaser" / "images" / name, root / "images" / name)
    project = root / "project.yaml"
    project.write_text(PROJECT_YAML, encoding="utf-8")
    with small_animatics():
        result = CliRunner().invoke(cli, ["render", str(project)])
    assert result.exit_code == 0, result.output
    assert (root / "renders" / "final.mp4").is_file()
    return project


@pytest.fixture(scope="module")
def report_page(rendered: Path) -> Path:
    """`kling-render report PROJECT` as a user runs it; the page lands at its default path."""
    result = CliRunner().invoke(cli, ["report", str(rendered)])
    assert result.exit_code == 0, result.output
    page = rendered.parent / "renders" / "project-report.html"
    assert result.stderr.strip() == f"report: {page}"
    assert page.is_file()
    return page


def _data_image(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def test_report_is_self_contained_and_shows_every_shot(report_page: Path) -> None:
    text = report_page.read_text(encoding="utf-8")
    page = _parse(text)
    assert page.refs, "the page references nothing: no frames, no video"
    assert ("video", "poster") in {(tag, attr) for tag, attr, _ in page.refs}
    for tag, attr, value in page.refs:
        assert not value.lower().startswith(("http:", "https:", "//")), (tag, attr, value)
        assert value.startswith("data:"), f"<{tag} {attr}> is not embedded: {value[:80]}"
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", text, re.I)
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text

    for shot_id, prompt in PROMPTS.items():
        assert f'data-shot="{shot_id}"' in text
        assert re.search(rf"<h2>{shot_id}</h2>", text)
        # The prompt as rendered (template filled in), escaped exactly once.
        assert html.escape(prompt) in text
    assert "<b>bold</b>" not in text  # a prompt's markup is text, never markup
    assert "{{" not in text

    images = [value for tag, _, value in page.refs if tag == "img"]
    assert len(images) == 4  # first and last frame of both shots
    for uri in images:
        assert _data_image(uri).width == 320
    videos = [value for tag, attr, value in page.refs if (tag, attr) == ("video", "src")]
    assert len(videos) == 3 and all(v.startswith("data:video/mp4;base64,") for v in videos)
    embedded = [base64.b64decode(v.split(",", 1)[1]) for v in videos]
    assert embedded[0] == (report_page.parent / "final.mp4").read_bytes()
    # Then each shot's own clip, byte for byte the one in the clip cache, in project order.
    cache = report_page.parent.parent / ".kling-render" / "cache" / "local"
    cached = {p.read_bytes() for p in cache.rglob("*.mp4")}
    assert len(cached) == 2 and set(embedded[1:]) == cached
    assert embedded[1] != embedded[2]
    # The cut's length is the stitch's own: 3 + 3 s minus the 0.5 s fade, 132 frames at 24 fps.
    assert "5.50 s · 132 frames @ 24 fps" in text and 'data-cut="current"' in text

    # The closing shot ends on its end image (coffee in the mug): its last frame is another picture.
    first, last = (_data_image(u) for u in images[2:4])
    diff = ImageStat.Stat(ImageChops.difference(first, last)).mean
    assert sum(diff) / 3 > 2.0, diff
    for needle in ("kling-v3.0-std/image-to-video", "local-", "fade 0.5 s", "negative", "done"):
        assert needle in text


def test_report_out_option_and_pending_shots(rendered: Path, tmp_path: Path) -> None:
    """--out writes elsewhere; a shot changed since the render is a pending placeholder."""
    changed = rendered.with_name("changed.yaml")
    changed.write_text(PROJECT_YAML.replace("espresso", "latte"), encoding="utf-8")
    out = tmp_path / "elsewhere" / "page.html"
    result = CliRunner().invoke(cli, ["report", str(changed), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"report: {out.resolve()}"
    text = out.read_text(encoding="utf-8")
    assert 'data-shot="closing" data-status="pending"' in text
    assert "no clip yet" in text and "coffee pours into the latte mug" in text
    assert 'data-shot="opening" data-status="done"' in text  # unchanged: still cached
    assert len(re.findall(r"<img ", text)) == 2


def test_report_of_an_unknown_project_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "error:" in result.stderr


def _card(shot_id: str, *, frames: Frames | None, status: str = "done") -> ShotCard:
    return ShotCard(
        id=shot_id,
        index=0,
        model="kling-v3.0-std/image-to-video",
        duration=5,
        sound=False,
        prompt=f"<i>{shot_id}</i>",
        negative_prompt=None,
        price_usd=0.42,
        spent_usd=0.0,
        status=status,
        task_id=None,
        submitted_at=None,
        finished_at=None,
        error="boom <script>" if status == "failed" else None,
        transition="cut",
        trim=None,
        frames=frames,
    )


def test_large_final_cut_is_linked_relatively(tmp_path: Path) -> None:
    cut = tmp_path / "renders" / "final cut.mp4"
    source = video_source(None, cut, tmp_path / "reports", size=60 * 1024 * 1024)
    assert not source.embedded and source.src == "../renders/final%20cut.mp4"
    data = ReportData(
        project="p<1>",
        project_file="p.yaml",
        provider="wavespeed",
        generated_at="2026-01-02T03:04:05+00:00",
        aspect=(1280, 720),
        shots=[_card("a", frames=None, status="failed"), _card("b", frames=Frames(None, None, "bad clip"))],
        final_cut=source,
        final_cut_name="renders/final cut.mp4",
    )
    text = render_html(data)
    assert '<video controls preload="metadata" src="../renders/final%20cut.mp4">' in text
    assert "linked, not embedded" in text and "60.0 MB" in text
    assert "<title>p&lt;1&gt; · kling-render report</title>" in text
    assert "boom &lt;script&gt;" in text and "<script" not in text
    assert "frames: bad clip" in text and text.count("no frame") == 2
    assert "&lt;i&gt;a&lt;/i&gt;" in text


def test_without_final_cut_the_page_says_so() -> None:
    data = ReportData("p", "p.yaml", "local", "", (1, 1), [], None, "renders/final.mp4")
    text = render_html(data)
    assert "<video" not in text and "renders/final.mp4: not stitched yet" in text


# -- what a browser draws ----------------------------------------------------------------------


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _screenshot(tmp: Path, page: Path, name: str) -> Image.Image:
    png = tmp / name
    _chromium(tmp, f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri())
    with Image.open(png) as img:
        return img.convert("RGB")


def test_chromium_draws_the_report(report_page: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    text = report_page.read_text(encoding="utf-8")

    dom = _chromium(tmp_path, "--dump-dom", report_page.as_uri()).stdout
    for shot_id in PROMPTS:
        assert re.search(rf'<article class="card" id="shot-{shot_id}" data-shot="{shot_id}"', dom)
    assert dom.count("<img ") == 4 and "<video " in dom
    # The browser read the prompt's markup as text: it serialises it back escaped, no <b> element.
    assert html.escape(TRICKY_PROMPT, quote=False) in dom and "<b>bold</b>" not in dom

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    # The same page with every frame blanked out: where it differs from the real one, frames show.
    no_frames = tmp_path / "no-frames.html"
    no_frames.write_text(re.sub(r'src="data:image/jpeg;base64,[^"]*"', 'src=""', text), encoding="utf-8")

    shot = _screenshot(tmp_path, report_page, "report.png")
    empty = _screenshot(tmp_path, blank, "blank.png")
    framed_out = _screenshot(tmp_path, no_frames, "no-frames.png")
    assert shot.size == WINDOW

    spread = sum(ImageStat.Stat(shot).stddev) / 3
    assert sum(ImageStat.Stat(empty).stddev) / 3 < 1.0
    assert spread > 30, spread
    colours = shot.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 5000, len(colours or [])

    diff = ImageChops.difference(shot, framed_out).convert("L")
    changed = sum(diff.histogram()[25:])
    # Four 320-px frames at least a quarter of a card wide each: tens of thousands of pixels.
    assert changed > 40_000, changed
    print(f"report screenshot: stddev {spread:.1f}, {len(colours)} colours, {changed} px are frames")
