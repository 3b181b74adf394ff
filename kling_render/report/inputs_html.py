"""The report's generated inputs: the stills (each image with its prompt, model, cost and users)
and a shot's takes side by side, the picked one marked, with how to cut another.

Pure, like ``html.py`` (data in, HTML out): the cards are filled from the scheduler's outcomes.
Every user-supplied text is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["CSS", "StillCard", "TakeCard", "stills_html", "takes_html"]


@dataclass(frozen=True)
class TakeCard:
    """One take of a shot: its name (``intro``, ``intro#2``), number and frames (JPEG)."""

    name: str
    take: int
    status: str
    picked: bool
    first: bytes | None = None  # first and last frame, None until the clip is there
    last: bytes | None = None
    price_usd: float = 0.0
    spent_usd: float = 0.0
    clip_src: str | None = None  # a data: URI or a path relative to the report


@dataclass(frozen=True)
class StillCard:
    """One still: ``still:<id>``, its image (PNG or JPEG bytes, None until made) and what uses it."""

    id: str
    model: str
    prompt: str
    status: str
    image: bytes | None
    price_usd: float
    spent_usd: float = 0.0
    used_by: tuple[str, ...] = ()  # the shots (and stills) that take it
    references: tuple[str, ...] = ()  # its own reference images, as written
    key: str | None = None


def _image_uri(data: bytes) -> str:
    kind = "png" if data.startswith(b"\x89PNG") else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def _money(value: float) -> str:
    return f"${value:.4f}" if value else "$0"


def _figure(data: bytes | None, caption: str, alt: str) -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>"
    if data is None:
        return f'<figure class="frame missing"><div class="ph">no image yet</div>{cap}</figure>'
    return f'<figure class="frame"><img src="{_image_uri(data)}" alt="{escape(alt)}">{cap}</figure>'


def takes_html(shot_id: str, takes: Sequence[TakeCard], project_file: str) -> str:
    """A shot's takes side by side (first and last frame each), the pick marked, and how to cut
    another take; empty for a shot with one take."""
    if len(takes) < 2:
        return ""
    cells = []
    for take in takes:
        mark = '<span class="pick">picked</span>' if take.picked else ""
        frames = _figure(take.first, "first", f"{take.name}: first frame") + _figure(
            take.last, "last", f"{take.name}: last frame"
        )
        clip = ""
        if take.clip_src is not None:
            clip = f'<video controls preload="none" src="{escape(take.clip_src)}"></video>'
        cells.append(
            f'<div class="take{" picked" if take.picked else ""}" data-take="{take.take}" '
            f'data-status="{escape(take.status)}">'
            f'<div class="take-head"><b>{escape(take.name)}</b> take {take.take} {mark}'
            f'<span class="pill s-{escape(take.status)}">{escape(take.status)}</span></div>'
            f'<div class="frames">{frames}</div>{clip}'
            f'<div class="muted">{_money(take.price_usd)} list · {_money(take.spent_usd)} spent</div></div>'
        )
    picked = next((t for t in takes if t.picked), takes[0])
    other = next((t for t in takes if not t.picked), None)
    hint = ""
    if other is not None:
        hint = (
            f'<p class="how">The cut uses take {picked.take}. To cut another, set <code>pick: {other.take}</code> '
            f"(a take number shown above) on shot <code>{escape(shot_id)}</code> in "
            f"<code>{escape(project_file)}</code> and run <code>kling-render stitch</code>: it pays nothing, "
            "and re-renders only the shots that start from this shot's frame.</p>"
        )
    return f'<section class="takes"><h3>Takes</h3><div class="take-row">{"".join(cells)}</div>{hint}</section>'


def _still_card(card: StillCard) -> str:
    rows = [
        f'<dt>model</dt><dd class="mono">{escape(card.model)}</dd>',
        f"<dt>cost</dt><dd>{_money(card.price_usd)} list · {_money(card.spent_usd)} spent</dd>",
        f"<dt>used by</dt><dd>{escape(', '.join(card.used_by) or 'nothing yet')}</dd>",
    ]
    if card.references:
        rows.append(f"<dt>references</dt><dd>{escape(', '.join(card.references))}</dd>")
    status = escape(card.status)
    return (
        f'<article class="card still" id="{escape(card.id.replace(":", "-"))}" data-still="{escape(card.id)}" '
        f'data-status="{status}"><header><h2>{escape(card.id)}</h2>'
        f'<span class="pill s-{status}">{status}</span></header>'
        f"{_figure(card.image, 'image', card.id)}"
        f'<blockquote class="prompt">{escape(card.prompt) or "<em>no prompt</em>"}</blockquote>'
        f"<dl>{''.join(rows)}</dl></article>"
    )


def stills_html(stills: Sequence[StillCard]) -> str:
    """The stills section: one card per still, before the shots that use them; empty without stills."""
    if not stills:
        return ""
    cards = "".join(_still_card(card) for card in stills)
    return (
        '<section class="sheet stills"><h2>Stills</h2>'
        '<p class="muted">Images made by an image model; <code>render --until stills</code> makes only these, '
        "for review before any video is paid for.</p>"
        f'<div class="grid">{cards}</div></section>'
    )


CSS = """
.stills{margin-bottom:24px}
.still .frame img{aspect-ratio:auto}
.takes{margin:10px 0 0}
.takes h3{margin:0 0 6px;font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.take-row{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:10px}
.take{border:1px solid var(--line);border-radius:8px;padding:6px}
.take.picked{border:2px solid var(--accent);background:#f5f7ff}
.take-head{display:flex;gap:6px;align-items:center;font-size:12.5px;margin-bottom:4px;flex-wrap:wrap}
.take .frames{grid-template-columns:1fr 1fr}
.take video{display:block;width:100%;margin-top:4px;border-radius:6px;background:#000}
.pick{font-size:10.5px;font-weight:700;text-transform:uppercase;color:#fff;background:var(--accent);
 border-radius:999px;padding:1px 7px}
.how{margin:8px 0 0;font-size:12.5px;color:var(--ink)}
.how code,.stills code{font-size:12px;background:#eef1f6;border-radius:4px;padding:0 4px}
"""
