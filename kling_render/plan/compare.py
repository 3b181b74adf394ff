"""``plan --compare-providers``: the project priced on every provider that offers its models, side by
side, with the cheapest provider per shot (pure: cache status comes from a callable)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from kling_render.catalog.catalog import PAID_PROVIDERS, usd
from kling_render.plan.inputs import NothingMade, Outputs, Unit, resolve, take_name
from kling_render.plan.plan import select_shots
from kling_render.project.generated import refs_in
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
    outputs: Outputs | None = None,
    only: list[str] | None = None,
) -> Comparison:
    """Every selected shot quoted on every paid provider (``local`` is free and renders animatics only).
    A shot whose inputs another step makes (a still, a frame, a clip to continue) has its key on a
    provider once those are made there (``outputs``); until then it will render."""
    result = Comparison(project, PAID_PROVIDERS)
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
            unit = _unit_on(project, shot, provider, outputs or NothingMade())
            if unit is None or unit.key is None:  # an input is not made yet on this provider: it will render
                quotes[provider] = Quote(provider, cost, "render")
                continue
            quotes[provider] = Quote(provider, cost, "cached" if is_cached(unit.key, provider) else "render", unit.key)
        result.shots.append(ShotQuotes(shot, quotes))
    return result


def _unit_on(project: Project, shot: Shot, provider: str, outputs: Outputs) -> Unit | None:
    """``shot``'s first take as if the whole project rendered on ``provider``; None when a step it
    needs is not offered there."""
    if refs_in(shot.params):
        moved = replace(
            project,
            provider=provider,
            shots=[replace(s, provider=None) for s in project.shots],
            stills=[replace(s, provider=None) for s in project.stills],
        )
        try:
            res = resolve(moved, provider, outputs, wanted=[shot.id])
        except ValueError:  # an upstream model is not offered by this provider
            return None
    else:
        res = resolve(replace(project, shots=[replace(shot, provider=None)], stills=[]), provider, outputs)
    return res.units.get(take_name(shot, shot.take))
