"""``kling-render models --check-prices``: the catalog's prices against the providers' live prices.

WaveSpeed (with ``WAVESPEED_API_KEY``): each model is priced at its defaults (every field with a
default, and the default duration), and again with sound on when it takes sound, by
``WaveSpeedProvider.unit_price``. fal (with ``FAL_KEY``): its pricing API gives one unit price
per endpoint (``FalProvider.unit_prices``), compared with the catalog's rate per second at the
model's defaults (sound off); a sound-on or per-resolution rate cannot be checked there, and an
endpoint fal prices by another unit than the second is said to be uncheckable. Both use the
provider's own HTTP client, retry policy and key redaction. A scheduled CI job runs it and fails
(exit 1) when a live price moves away from the catalog's.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from kling_render import env
from kling_render.catalog.catalog import Model, Price, shot_cost, still_cost, tier_of, usd
from kling_render.errors import AuthError, ProviderError, UsageError

PER_SECOND_UNIT = re.compile(r"(^|[_ ])(seconds?|sec)$", re.I)  # fal's units: "video_second", "seconds"


@dataclass(frozen=True)
class PriceCheck:
    """One model priced one way: the catalog's figure, WaveSpeed's, and whether they agree."""

    model: str
    case: str  # "defaults" | "sound on" | "per second" (fal)
    inputs: dict[str, Any]
    catalog: Fraction | None  # None: the catalog has no price for this case
    live: float | None  # None: the provider did not price it (see error)
    error: str | None = None
    provider: str = "wavespeed"

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
            "provider": self.provider,
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
    tier = tier_of(inputs.get("resolution"), inputs.get("dynamic_range"))
    if price is None or (sound and price.sound_multiplier is None) or price.rate(tier, with_video=False) is None:
        return None
    return shot_cost(price, int(inputs["duration"]), sound=sound, with_video=False, tier=tier)


Prices = Mapping[tuple[str, str], "Price | None"]


def check_prices(models: Iterable[Model], prices: Prices) -> list[PriceCheck]:
    """Ask each provider whose key is set for every model's price (keys and URLs from the environment)."""
    if not env.wavespeed_api_key() and not env.fal_key():
        raise UsageError(
            "--check-prices asks the providers' pricing endpoints: set WAVESPEED_API_KEY (WaveSpeed) "
            "and/or FAL_KEY (fal)"
        )
    models = list(models)
    results: list[PriceCheck] = []
    try:
        if env.wavespeed_api_key():
            from kling_render.providers.wavespeed.client import WaveSpeedProvider

            # The provider's own setup (key and base URL checks); pricing uploads nothing, so its
            # upload record directory is never written.
            ws = WaveSpeedProvider.from_env(cache_dir=Path("."))
            offered = [m for m in models if m.offer("wavespeed") is not None]
            results += asyncio.run(_check(ws, offered, prices))
        if env.fal_key():
            from kling_render.providers.fal.client import FalProvider

            fal = FalProvider.from_env(cache_dir=Path("."))
            results += asyncio.run(_check_fal(fal, models, prices))
    except AuthError as exc:
        raise UsageError(str(exc)) from exc
    return results


async def _check_fal(provider: Any, models: list[Model], prices: Prices) -> list[PriceCheck]:
    """fal's unit price of each endpoint against the catalog's rate per second at the defaults."""
    results = []
    try:
        offers = {m.id: m.offer("fal") for m in models}
        endpoints = sorted({o.endpoint for o in offers.values() if o is not None})
        try:
            live: dict[str, tuple[float, str]] = await provider.unit_prices(endpoints) if endpoints else {}
            failed = None
        except AuthError:
            raise
        except ProviderError as exc:
            live, failed = {}, str(exc)
        for model in models:
            offer = offers[model.id]
            if offer is None:
                continue  # not offered by fal: nothing to check there
            inputs = {"endpoint_id": offer.endpoint}
            defaults = default_inputs(model)
            tier = tier_of(defaults.get("resolution"), defaults.get("dynamic_range"))
            price = prices.get(("fal", model.id))
            expected = price.rate(tier, with_video=False) if price is not None else None
            found = live.get(offer.endpoint)
            if found is None:
                error = failed or f"fal's pricing API has no price for {offer.endpoint}"
                results.append(PriceCheck(model.id, "per second", inputs, expected, None, error, "fal"))
            elif not PER_SECOND_UNIT.search(found[1]):
                error = f"fal prices {offer.endpoint} by {found[1]!r}, not by the second: it cannot be checked"
                results.append(PriceCheck(model.id, "per second", inputs, expected, None, error, "fal"))
            else:
                results.append(PriceCheck(model.id, "per second", inputs, expected, found[0], None, "fal"))
    finally:
        await provider.aclose()
    return results


async def _check(provider: Any, models: list[Model], prices: Prices) -> list[PriceCheck]:
    results = []
    try:
        for model in models:
            for case, inputs in cases(model):
                expected = catalog_price(model, prices.get(("wavespeed", model.id)), inputs)
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
