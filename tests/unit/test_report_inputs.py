"""The report's stills and takes (report.inputs_html through report.html.render_html), from test
data shaped as the scheduler's outcomes will be: real JPEG and PNG bytes, parsed back out of the page."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

from PIL import Image

from kling_render.report.html import ReportData, ShotCard, StillCard, TakeCard, render_html


def picture(color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 18), color).save(out, fmt)
    return out.getvalue()


def shot(takes: tuple[TakeCard, ...] = (), shot_id: str = "intro") -> ShotCard:
    return ShotCard(
        id=shot_id, index=0, model="kling-v3.0-std/image-to-video", duration=3, sound=False, prompt="a mug",
        negative_prompt=None, price_usd=0.252, spent_usd=0.0, status="done", task_id=None, submitted_at=None,
        finished_at=None, error=None, transition="cut", trim=None, frames=None, takes=takes,
    )  # fmt: skip


def page(shots: list[ShotCard], stills: tuple[StillCard, ...] = ()) -> str:
    data = ReportData(
        project="p", project_file="project.yaml", provider="local", generated_at="2026-12-07T10:00:00+00:00",
        aspect=(16, 9), shots=shots, final_cut=None, final_cut_name="renders/p.mp4", stills=stills,
    )  # fmt: skip
    return render_html(data)


class Images(HTMLParser):
    """Every <img>'s data: URI, decoded, with its alt text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, bytes]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and (a.get("src") or "").startswith("data:image/"):
            self.found.append((a.get("alt") or "", base64.b64decode((a["src"] or "").split(",", 1)[1])))


def test_takes_side_by_side_with_the_pick_marked_and_how_to_choose_another() -> None:
    red, blue = picture((200, 0, 0)), picture((0, 0, 200))
    takes = (
        TakeCard("intro", 1, "done", picked=False, first=red, last=red, price_usd=0.252),
        TakeCard("intro#2", 2, "done", picked=True, first=blue, last=blue, price_usd=0.252, spent_usd=0.252),
    )
    html = page([shot(takes)])
    block = html[html.index('<section class="takes">') :]
    assert block.index('data-take="1"') < block.index('data-take="2"')  # in take order, one row
    assert re.search(r'<div class="take picked" data-take="2"[^>]*>.*?<span class="pick">picked</span>', block)
    assert block.count('<span class="pick">picked</span>') == 1
    assert "set <code>pick: 1</code>" in block and "shot <code>intro</code>" in block
    assert "<code>project.yaml</code>" in block and "kling-render stitch" in block and "pays nothing" in block
    parser = Images()
    parser.feed(html)
    assert [alt for alt, _ in parser.found] == [
        "intro: first frame",
        "intro: last frame",
        "intro#2: first frame",
        "intro#2: last frame",
    ]
    assert parser.found[2][1] == blue


def test_a_shot_with_one_take_shows_no_takes() -> None:
    one = (TakeCard("intro", 1, "done", picked=True),)
    assert '<section class="takes">' not in page([shot(one)]) and '<section class="takes">' not in page([shot()])


def test_a_take_not_made_yet_is_a_placeholder() -> None:
    takes = (TakeCard("a", 1, "done", picked=True, first=picture((1, 2, 3))), TakeCard("a#2", 2, "pending", False))
    html = page([shot(takes, "a")])
    assert html.count("no image yet") == 3  # a's last frame, a#2's first and last
    assert 'data-status="pending"' in html


def test_stills_are_shown_before_the_shots_with_their_image_and_users() -> None:
    png = picture((10, 200, 10), "PNG")
    stills = (
        StillCard("still:hero", "bytedance/seedream-v4.5", "a <mug> & co", "done", png, 0.04, 0.04,
                  used_by=("intro", "intro#2")),
        StillCard("still:edit", "bytedance/seedream-v4.5/edit", "blue", "pending", None, 0.04,
                  references=("images/mug.png", "still:hero")),
    )  # fmt: skip
    html = page([shot()], stills)
    assert html.index('<section class="sheet stills">') < html.index("<h2>Shots</h2>")
    assert "a &lt;mug&gt; &amp; co" in html and "<mug>" not in html
    assert "intro, intro#2" in html and "images/mug.png, still:hero" in html
    assert "render --until stills" in html
    parser = Images()
    parser.feed(html)
    assert ("still:hero", png) in parser.found
    assert 'src="data:image/png;base64,' in html
    assert html.count("no image yet") == 1


def test_no_stills_no_section() -> None:
    assert "Stills" not in page([shot()])
