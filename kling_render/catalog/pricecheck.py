"""``kling-render models --check-prices``: the catalog's prices against WaveSpeed's live pricing endpoint.

Each model is priced at its defaults (every field with a default, and the default duration),
and again with sound on when it takes sound, by ``WaveSpeedProvider.unit_price`` (the
provider's own HTTP client, retry policy and key redaction). A scheduled CI job runs it and
fails (exit 1) when WaveSpeed's price moves away from the catalog's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from kling_render import env
from kling_render.catalog.catalog import Model, Price, shot_cost, still_cost, usd
from kling_render.errors import AuthError, ProviderError, UsageError


@dataclass(frozen=True)
class PriceCheck:
    """One model priced one way: the catalog's figure, WaveSpeed's, and whether they agree."""

    model: str
    case: str  # "defaults" | "sound on"
    inputs: dict[str, Any]
    catalog: Fraction | None  # None: the catalog has no price for this case
    live: float | None  # None: WaveSpeed did not price it (see error)
    error: str | None = None

    @property
    def status(self) -> str:
        """``match``, ``differs``, ``error`` (not priced by WaveSpeed) or ``unknown`` (no catalog price)."""
        if self.live is None or not math.isfinite(self.live):
            return "error"
        if self.catalog is None:
            return "unknown"
        return "match" if usd(self.catalog) == round(self.live, 4) else "differs"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "case": self.case,
            "inputs": self.inputs,
            "catalog_usd": usd(self.catalog) if self.catalog is not None else None,
            "live_usd": self.live if self.live is not None and math.isfinite(self.live) else None,
            "status": self.status,
            "error": self.error,
        }


def default_inputs(model: Model) -> dict[str, Any]:
    """The wire inputs of a shot that gives nothing but what the model requires to be priced."""
    inputs: dict[str, Any] = {}
    for spec in model.fields:
        if spec.has_default and spec.only_with is None:
            inputs[spec.wire] = spec.default
    if model.duration is not None:  # an image model is priced per image, without one
        inputs["duration"] = model.duration.default
    return inputs


def cases(model: Model) -> list[tuple[str, dict[str, Any]]]:
    """The inputs each model is priced with: its defaults, and with sound on if it takes sound."""
    base = default_inputs(model)
    out = [("defaults", base)]
    sound = model.field("sound")
    if sound is not None:
        out.append(("sound on", {**base, sound.wire: True}))
    return out


def catalog_price(model: Model, price: Price | None, inputs: Mapping[str, Any]) -> Fraction | None:
    if model.makes_image:
        return None if price is None else still_cost(price)
    sound_spec = model.field("sound")
    sound = bool(inputs.get(sound_spec.wire)) if sound_spec is not None else False
    if price is None or (sound and price.sound_multiplier is None):
        return None
    return shot_cost(price, int(inputs["duration"]), sound=sound, with_video=False)


def check_prices(models: Iterable[Model], prices: Mapping[str, Price | None]) -> list[PriceCheck]:
    """Ask WaveSpeed for every model's price (key and base URL from the environment)."""
    if not env.wavespeed_api_key():
        raise UsageError("--check-prices asks WaveSpeed's pricing endpoint: set WAVESPEED_API_KEY")
    from kling_render.providers.wavespeed.client import WaveSpeedProvider

    try:
        # The provider's own setup (key and base URL checks); pricing uploads nothing, so its
        # upload record directory is never written.
        provider = WaveSpeedProvider.from_env(cache_dir=Path("."))
    except AuthError as exc:
        raise UsageError(str(exc)) from exc
    try:
        return asyncio.run(_check(provider, list(models), prices))
    except AuthError as exc:
        raise UsageError(str(exc)) from exc


async def _check(provider: Any, models: list[Model], prices: Mapping[str, Price | None]) -> list[PriceCheck]:
    results = []
    try:
        for model in models:
            for case, inputs in cases(model):
                expected = catalog_price(model, prices.get(model.id), inputs)
                try:
                    live: float | None = await provider.unit_price(model.endpoint, inputs)
                    error = None
                except AuthError:
                    raise
                except ProviderError as exc:
                    live, error = None, str(exc)
                results.append(PriceCheck(model.id, case, inputs, expected, live, error))
    finally:
        await provider.aclose()
    return results
