"""The model catalog (``data/models.yaml``): wire fields, limits and prices per model."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Any

import yaml

KWAIVGI_PREFIX = "kwaivgi/"
IMAGE_MAX_BYTES = 10 * 1024 * 1024
MEDIA_FIELDS = ("image", "end_image", "last_image", "images", "video")


@dataclass(frozen=True)
class Price:
    per_second: Fraction
    sound_multiplier: Fraction | None  # None: the model takes no sound input
    video_per_second: Fraction | None
    date: str
    source: str


@dataclass(frozen=True)
class Model:
    id: str
    title: str
    fields: tuple[str, ...]
    required: tuple[str, ...]
    one_of: tuple[tuple[str, ...], ...]
    end_image_field: str | None
    duration_min: int
    duration_max: int
    duration_default: int
    durations_without_end_image: tuple[int, ...] | None
    cfg_scale: tuple[float, float, float] | None  # min, max, default
    aspect_ratios: tuple[str, ...]
    aspect_ratio_default: str | None
    max_images: int | None
    max_images_with_video: int | None
    image_formats: tuple[str, ...]
    image_min_side: int | None
    image_max_aspect: float | None
    price: Price | None

    @property
    def takes_sound(self) -> bool:
        return "sound" in self.fields

    @property
    def kind(self) -> str:
        return self.id.split("/", 1)[1]

    def duration_rule(self) -> str:
        text = f"{self.duration_min}–{self.duration_max}"
        if self.durations_without_end_image:
            only = " or ".join(str(d) for d in self.durations_without_end_image)
            text += f"; {only} only without end_image"
        return text


def canonical_model_id(model_id: str) -> str:
    """Strip the optional ``kwaivgi/`` prefix."""
    return model_id[len(KWAIVGI_PREFIX) :] if model_id.startswith(KWAIVGI_PREFIX) else model_id


def parse_fraction(value: Any) -> Fraction:
    """A price or multiplier from data: ``0.18``, ``"0.18"`` or ``"4/3"``, kept exact."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int | str):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    raise ValueError(f"not a number: {value!r}")


def _opt_fraction(value: Any) -> Fraction | None:
    return None if value is None else parse_fraction(value)


def _model(model_id: str, raw: dict[str, Any]) -> Model:
    duration = raw["duration"]
    cfg = raw.get("cfg_scale")
    price = None
    if raw.get("price_per_second") is not None:
        price = Price(
            per_second=parse_fraction(raw["price_per_second"]),
            sound_multiplier=_opt_fraction(raw.get("sound_multiplier")),
            video_per_second=_opt_fraction(raw.get("video_price_per_second")),
            date=str(raw.get("price_date", "")),
            source=str(raw.get("price_source", "")),
        )
    return Model(
        id=model_id,
        title=str(raw.get("title", model_id)),
        fields=tuple(raw["fields"]),
        required=tuple(raw.get("required", ())),
        one_of=tuple(tuple(group) for group in raw.get("one_of", ())),
        end_image_field=raw.get("end_image_field"),
        duration_min=int(duration["min"]),
        duration_max=int(duration["max"]),
        duration_default=int(duration["default"]),
        durations_without_end_image=(
            tuple(duration["without_end_image"]) if duration.get("without_end_image") else None
        ),
        cfg_scale=(float(cfg["min"]), float(cfg["max"]), float(cfg["default"])) if cfg else None,
        aspect_ratios=tuple(raw.get("aspect_ratios", ())),
        aspect_ratio_default=raw.get("aspect_ratio_default"),
        max_images=raw.get("max_images"),
        max_images_with_video=raw.get("max_images_with_video"),
        image_formats=tuple(raw.get("image_formats", ("jpg", "jpeg", "png"))),
        image_min_side=raw.get("image_min_side"),
        image_max_aspect=raw.get("image_max_aspect"),
        price=price,
    )


@functools.cache
def load_catalog() -> dict[str, Model]:
    """Every model in the packaged catalog, by canonical id."""
    text = resources.files("kling_render").joinpath("data/models.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    return {model_id: _model(model_id, spec) for model_id, spec in raw["models"].items()}


def find_model(model_id: str) -> Model | None:
    return load_catalog().get(canonical_model_id(model_id))


def shot_cost(price: Price, duration: int, *, sound: bool, with_video: bool) -> Fraction:
    """Exact cost of one shot: rate × seconds × sound factor (SPEC §4)."""
    rate = price.video_per_second if with_video and price.video_per_second is not None else price.per_second
    cost = rate * duration
    if sound and price.sound_multiplier is not None:
        cost *= price.sound_multiplier
    return cost


def usd(value: Fraction) -> float:
    """Round a cost to 4 decimals, as printed and stored."""
    return round(float(value), 4)
