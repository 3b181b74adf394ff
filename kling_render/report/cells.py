"""The pieces the plan's renderings share (text.py plain, markdown.py collapsed, rows.py per
row): a table, a shot's cells, the budget line, the prompt changes, the inputs, the footer."""

from __future__ import annotations

import re
from collections.abc import Sequence

from kling_render.catalog.catalog import usd
from kling_render.plan.model import Plan, PlannedShot


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def budget_line(plan: Plan) -> str | None:
    if plan.budget_usd is None or not plan.charges:
        return None
    if plan.over_budget:
        return (
            f"OVER BUDGET: to render ${usd(plan.to_render_cost):.4f} > budget ${plan.budget_usd:.4f}; "
            "render would refuse to start (exit 3)"
        )
    return f"budget ${plan.budget_usd:.4f}: to render ${usd(plan.to_render_cost):.4f} fits"


def counts_text(plan: Plan) -> str:
    """Every non-zero change kind, in the words the "vs lock" column uses."""
    counts = plan.change_counts()
    return " · ".join(f"{kind} {n}" for kind, n in counts.items() if n) or "no shots"


def prompt_lines(plan: Plan, *, markdown: bool) -> list[str]:
    lines: list[str] = []
    for p in plan.shots:
        change = p.prompt_change
        if change is None:
            continue
        old, new = change
        if markdown:
            # A prompt is user text (a rows: table's cell, say): every line keeps its -/+ mark and
            # the fence is longer than any run of backticks in it, so it cannot close the block.
            longest = max((len(run) for run in re.findall(r"`+", old + new)), default=0)
            fence = "`" * max(3, longest + 1)
            lines += [f"`{p.id}` prompt:", f"{fence}diff", *_marked("- ", old), *_marked("+ ", new), fence]
        else:
            lines += [f"{p.id}: prompt changed", *_marked("  - ", old), *_marked("  + ", new)]
    return lines


def _marked(mark: str, text: str) -> list[str]:
    return [mark + line for line in text.splitlines() or [""]]


def shot_cells(p: PlannedShot) -> list[str]:
    """A planned shot's cells after its name: model, duration, sound, cost, status, change vs lock."""
    shot = p.shot
    return [shot.model.id, f"{shot.duration}s", "yes" if shot.sound else "no", f"${usd(p.cost):.4f}", p.status,
            p.change_label]  # fmt: skip


def mixed_providers(plan: Plan) -> bool:
    """Whether the plan's steps render on more than one provider: its tables then name each step's."""
    return len({p.provider for p in plan.shots} | {s.provider for s in plan.stills}) > 1


def with_provider(cells: list[str], provider: str, mixed: bool) -> list[str]:
    """``cells`` (model first) with the provider after the model when the plan is ``mixed``."""
    return [cells[0], provider, *cells[1:]] if mixed else cells


def inputs_lines(plan: Plan) -> list[str]:
    """The stills (priced per image), why steps waiting for an input will render, and the cost
    of the stills stage and of the video stage apart; nothing for a project without them."""
    lines: list[str] = []
    if plan.stills:
        mixed = mixed_providers(plan)
        rows = [
            [s.id, *with_provider([s.still.model.id, f"${usd(s.cost):.4f}", s.status, s.change], s.provider, mixed)]
            for s in plan.stills
        ]
        head = ["still", *with_provider(["model", "cost", "status", "vs lock"], "provider", mixed)]
        lines += ["", text_table(head, rows, right=(3,) if mixed else (2,)), ""]
    waiting = [(p.id, p.reason) for p in plan.stills if p.reason] + [(p.id, p.reason) for p in plan.shots if p.reason]
    lines += [f"{name}: {reason}" for name, reason in waiting]
    if waiting:
        lines.append("(a step waiting for an input has no key until that input is made: counted as to render)")
    if plan.stills:
        st = plan.stages()
        lines.append(
            f"stages: stills ${st['stills']['to_render_cost_usd']:.4f} to render "
            f"(of ${st['stills']['total_cost_usd']:.4f}; `render --until stills` pays only these), "
            f"video ${st['video']['to_render_cost_usd']:.4f} (of ${st['video']['total_cost_usd']:.4f}), "
            f"total ${usd(plan.to_render_cost):.4f}"
        )
    return lines


def inputs_markdown(plan: Plan) -> list[str]:
    """:func:`inputs_lines` for a pull-request comment."""
    out: list[str] = []
    if plan.stills:
        mixed = mixed_providers(plan)
        if mixed:
            out += ["", "| still | model | provider | cost | status | vs lock |", "|---|---|---|---:|---|---|"]
        else:
            out += ["", "| still | model | cost | status | vs lock |", "|---|---|---:|---|---|"]
        out += [
            f"| `{s.id}` | {' | '.join(with_provider([s.still.model.id], s.provider, mixed))} | ${usd(s.cost):.4f} "
            f"| {s.status} | {s.change} |"
            for s in plan.stills
        ]
        st = plan.stages()
        out += ["", f"**Stages:** stills ${st['stills']['to_render_cost_usd']:.4f} · "
                f"video ${st['video']['to_render_cost_usd']:.4f} · total ${usd(plan.to_render_cost):.4f}"]  # fmt: skip
    waiting = [(p.id, p.reason) for p in plan.stills if p.reason] + [(p.id, p.reason) for p in plan.shots if p.reason]
    if waiting:
        out += ["", *(f"- `{name}`: {reason}" for name, reason in waiting)]
    return out


def plan_footer(plan: Plan) -> list[str]:
    """The last lines of a plan table: changes against the lock, the budget, the local-provider hint."""
    lines = [*inputs_lines(plan), f"vs lock: {counts_text(plan)}"]
    budget = budget_line(plan)
    if budget:
        lines.append(budget)
    if plan.provider == "local":
        lines.append("(local provider: animatics are free; prices show what wavespeed would charge)")
    return lines


def where(provider: str, remote: str | None) -> str:
    """``wavespeed`` or ``wavespeed, remote s3://bucket/prefix``: what a plan or status is about."""
    return f"{provider}, remote {remote}" if remote else provider
