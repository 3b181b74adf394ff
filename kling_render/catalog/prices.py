"""Prices as data: exact fractions, a rate per resolution, and what no provider publishes.

A ``Price`` is one provider's price of one model (the catalog's, or a project's ``pricing:``).
Costs are exact (``Fraction``) until printed; :func:`usd` rounds them to 4 decimals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

PRICE_KEYS = ("per_second", "sound_multiplier", "video_per_second", "video_multiplier", "per_image")
# Price keys that only a video model's price may have.
VIDEO_PRICE_KEYS = ("sound_multiplier", "video_per_second", "video_multiplier", "per_second_by_resolution")
MAX_PRICE = Fraction(10**6)  # a price or multiplier above this is a typo, and would overflow costs
UNPRICED_CASES = ("video",)  # cases a price may declare unpublished (``unpriced: [video]``)
HDR = "hdr"  # the dynamic_range value that prices a resolution apart (``1080p hdr``)


@dataclass(frozen=True)
class Price:
    per_second: Fraction | None  # None: only the resolutions of ``by_resolution`` are priced (or an image model)
    sound_multiplier: Fraction | None  # None: no sound surcharge known (sound-on shots need `pricing:`)
    video_per_second: Fraction | None
    date: str
    source: str
    by_resolution: tuple[tuple[str, Fraction], ...] = ()  # the rate per resolution (``4k hdr``...)
    unpriced: frozenset[str] = frozenset()  # "video": no published rate with a reference video
    per_image: Fraction | None = None  # an image model's price per generated image

    def rate(self, tier: str | None, *, with_video: bool) -> Fraction | None:
        """USD per second for a shot of ``tier`` (its resolution, ``+ " hdr"``), or None when unpublished."""
        if with_video:
            if "video" in self.unpriced:
                return None
            if self.video_per_second is not None:
                return self.video_per_second
        rates = dict(self.by_resolution)
        if tier is not None and tier in rates:
            return rates[tier]
        return self.per_second

    def rates_text(self) -> str:
        """``$0.084/s``, ``720p $0.157/s, 1080p $0.235/s`` or ``$0.04/image``: the rates as a table
        cell shows them."""
        if self.per_image is not None:
            return f"${usd(self.per_image)}/image"
        parts = [f"{tier} ${usd(rate)}/s" for tier, rate in self.by_resolution]
        if self.per_second is not None:
            parts.insert(0, f"${usd(self.per_second)}/s" + (" otherwise" if parts else ""))
        return ", ".join(parts) or "-"


def tier_of(resolution: Any, dynamic_range: Any) -> str | None:
    """The key of ``per_second_by_resolution`` a shot is priced by: ``1080p``, ``4k hdr``; None without one."""
    if not isinstance(resolution, str):
        return None
    return f"{resolution} {HDR}" if dynamic_range == HDR else resolution


def parse_fraction(value: Any) -> Fraction:
    """A price or multiplier from data: ``0.18``, ``"0.18"`` or ``"4/3"``, kept exact.

    ValueError (or ZeroDivisionError for ``"1/0"``) for anything that is not a finite number
    from 0 to MAX_PRICE: NaN, inf or a negative price would break or switch off the budget.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int | str):
        result = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a number: {value!r}")
        result = Fraction(str(value))
    else:
        raise ValueError(f"not a number: {value!r}")
    if result < 0:
        raise ValueError(f"{value!r:.40} must be at least 0")
    if result > MAX_PRICE:
        raise ValueError(f"{value!r:.40} is too large (at most {MAX_PRICE})")
    return result


def parse_price(raw: Mapping[str, Any], *, base: Price | None, date: str, source: str) -> Price:
    """A Price from a ``price:`` or ``pricing:`` entry; keys it leaves out come from ``base``.

    ``video_multiplier`` is the video rate as a factor of ``per_second`` (``video_per_second``
    gives it directly). ``per_second_by_resolution`` adds to (or replaces the rates of) the base's
    table. An image model's entry gives ``per_image`` instead. Raises ValueError or
    ZeroDivisionError on a bad number, ValueError when nothing prices a shot at all.
    """
    if "per_image" in raw or (base is not None and base.per_image is not None):
        rate = parse_fraction(raw["per_image"]) if "per_image" in raw else base.per_image if base else None
        return Price(None, None, None, date, source, per_image=rate)
    per_second = base.per_second if base else None
    if "per_second" in raw:
        per_second = parse_fraction(raw["per_second"])
    sound: Fraction | None = base.sound_multiplier if base else None
    if "sound_multiplier" in raw:
        sound = parse_fraction(raw["sound_multiplier"])
    table = dict(base.by_resolution) if base else {}
    for tier, value in (raw.get("per_second_by_resolution") or {}).items():
        table[str(tier)] = parse_fraction(value)
    video: Fraction | None = base.video_per_second if base else None
    if "video_per_second" in raw:
        video = parse_fraction(raw["video_per_second"])
    elif "video_multiplier" in raw:
        if per_second is None:
            raise ValueError("video_multiplier needs per_second")
        video = per_second * parse_fraction(raw["video_multiplier"])
    unpriced = frozenset(raw["unpriced"]) if "unpriced" in raw else (base.unpriced if base else frozenset())
    if "video_per_second" in raw or "video_multiplier" in raw:
        unpriced = unpriced - {"video"}  # a rate with a video, given now, prices that case
    if per_second is None and not table:
        raise ValueError("give per_second (or per_second_by_resolution)")
    return Price(per_second, sound, video, date, source, tuple(table.items()), unpriced)


def price_problems(raw: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Every number of a price entry that is not a valid price, by its path below the entry."""
    found: list[tuple[tuple[str, ...], str]] = []
    for key in PRICE_KEYS:
        if key in raw:
            try:
                parse_fraction(raw[key])
            except (ValueError, ZeroDivisionError) as exc:
                found.append(((key,), f"invalid price: {exc}"))
    for tier, value in (raw.get("per_second_by_resolution") or {}).items():
        try:
            parse_fraction(value)
        except (ValueError, ZeroDivisionError) as exc:
            found.append((("per_second_by_resolution", str(tier)), f"invalid price: {exc}"))
    return found


def rate_problems(raw: Mapping[str, Any], *, image: bool) -> list[tuple[tuple[str, ...], str]]:
    """A price entry whose rate does not fit its model: an image model (``output: image``) is
    priced ``per_image`` only, a video model per second."""
    if image:
        found: list[tuple[tuple[str, ...], str]] = [
            ((k,), f"{k} prices video; an image model is priced per_image") for k in VIDEO_PRICE_KEYS if k in raw
        ]
        if "per_second" in raw:
            found.insert(0, (("per_second",), "an image model (output: image) is priced per_image, not per_second"))
        elif "per_image" not in raw:
            found.append(((), "missing required key 'per_image'"))
        return found
    if "per_image" in raw:
        return [(("per_image",), "a video model is priced per_second, not per_image")]
    return []


def still_cost(price: Price) -> Fraction | None:
    """Exact cost of one still (one generated image), or None when the price has no per-image rate."""
    return price.per_image


def shot_cost(
    price: Price, duration: int, *, sound: bool, with_video: bool, tier: str | None = None
) -> Fraction:
    """Exact cost of one shot: rate × seconds × sound factor (SPEC §4). The rate must be published
    (see :meth:`Price.rate`): callers check :func:`missing_rate` first."""
    rate = price.rate(tier, with_video=with_video)
    if rate is None:
        raise ValueError("no published rate for this shot")
    cost = rate * duration
    if sound and price.sound_multiplier is not None:
        cost *= price.sound_multiplier
    return cost


def missing_rate(price: Price | None, *, sound: bool, with_video: bool, tier: str | None) -> str | None:
    """What a price lacks to price a shot (the words after "no ... price"), or None when it prices it."""
    if price is None:
        return ""
    if price.rate(tier, with_video=with_video) is None:
        if with_video and "video" in price.unpriced:
            return "reference-video"
        return f"{tier}" if tier else ""
    if sound and price.sound_multiplier is None:
        return "sound-on"
    return None


def usd(value: Fraction) -> float:
    """Round a cost to 4 decimals, as printed and stored."""
    return round(float(value), 4)
