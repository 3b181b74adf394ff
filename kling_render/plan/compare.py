"""``plan --compare-providers``: the project priced on every provider that offers its models, side by
side, with the cheapest provider per shot (pure: cache status comes from a callable)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from kling_render.catalog.catalog import PAID_PROVIDERS, usd
from kling_render.plan.plan import ClipLookup, resolve_clips, select_shots, shot_key
from kling_render.project.project import Project, Shot, cost_of, missing_price
from kling_render.project.rules import provider_problems


@dataclass(frozen=True)
class Quote:
    """One shot on one provider: its cost and cache status, or why there is none."""

    provider: str
    cost: Fraction | None = None
    status: str | None = None  # "cached" | "render"; None when not priced or not offered
    key: str | None = None
    offered: bool = True
    reason: str | None = None  # why it is not offered, or has no price

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offered": self.offered, "cost_usd": usd(self.cost) if self.cost is not None else None}
        if self.status is not None:
            out["status"] = self.status
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class ShotQuotes:
    shot: Shot
    quotes: dict[str, Quote]

    @property
    def cheapest(self) -> str | None:
        """The provider that renders the shot for least (ties: the catalog's order), None if none prices it."""
        priced = [q for q in self.quotes.values() if q.cost is not None]
        return min(priced, key=lambda q: q.cost or 0).provider if priced else None


@dataclass
class Comparison:
    project: Project
    providers: tuple[str, ...]
    shots: list[ShotQuotes] = field(default_factory=list)

    def totals(self, provider: str) -> dict[str, Any]:
        quotes = [s.quotes[provider] for s in self.shots]
        missing = [s.shot.id for s, q in zip(self.shots, quotes, strict=True) if q.cost is None]
        seen: set[str] = set()
        total = render = Fraction(0)
        for q in quotes:
            if q.cost is None or (q.key is not None and q.key in seen):
                continue  # each distinct clip once
            seen.add(q.key or "")
            total += q.cost
            render += q.cost if q.status == "render" else 0
        return {
            "renders_all": not missing,
            "total_cost_usd": usd(total),
            "to_render_cost_usd": usd(render),
            "not_priced": [s.shot.id for s, q in zip(self.shots, quotes, strict=True) if q.offered and q.cost is None],
            "not_offered": [s.shot.id for s, q in zip(self.shots, quotes, strict=True) if not q.offered],
        }

    def to_json(self) -> dict[str, Any]:
        cheapest = Fraction(0)
        complete = True
        for s in self.shots:
            best = s.cheapest
            if best is None:
                complete = False
            else:
                cheapest += s.quotes[best].cost or 0
        return {
            "project": self.project.name,
            "providers": list(self.providers),
            "shots": [
                {
                    "id": s.shot.id,
                    "model": s.shot.model.id,
                    "duration": s.shot.duration,
                    "sound": s.shot.sound,
                    "prices": {p: q.to_json() for p, q in s.quotes.items()},
                    "cheapest": s.cheapest,
                }
                for s in self.shots
            ],
            "totals": {p: self.totals(p) for p in self.providers},
            "cheapest_mix": {"total_cost_usd": usd(cheapest), "complete": complete},
        }


def compare(
    project: Project,
    *,
    is_cached: Callable[[str, str], bool],
    clip_of: ClipLookup,
    only: list[str] | None = None,
) -> Comparison:
    """Every selected shot quoted on every paid provider (``local`` is free and renders animatics only)."""
    result = Comparison(project, PAID_PROVIDERS)
    keys: dict[str, dict[str, tuple[str, str]]] = {p: {} for p in PAID_PROVIDERS}
    for shot in select_shots(project, only):
        quotes: dict[str, Quote] = {}
        for provider in PAID_PROVIDERS:
            given = {name: shot.params[name] for name in shot.given if name in shot.params}
            problems = list(provider_problems(shot.model, provider, given, shot.own))
            if problems:
                quotes[provider] = Quote(provider, offered=False, reason=problems[0][1])
                continue
            cost = cost_of(shot, project.prices, provider)
            if cost is None:
                quotes[provider] = Quote(provider, reason=missing_price(shot, project.prices, provider))
                continue
            resolved, waits = resolve_clips(shot, clip_of, keys[provider].get)
            if waits:  # its input clip is not made yet on this provider: it will be rendered
                quotes[provider] = Quote(provider, cost, "render")
                continue
            key = shot_key(provider, resolved)
            keys[provider][shot.id] = (provider, key)
            quotes[provider] = Quote(provider, cost, "cached" if is_cached(key, provider) else "render", key)
        result.shots.append(ShotQuotes(shot, quotes))
    return result
