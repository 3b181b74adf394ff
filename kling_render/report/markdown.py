"""The plan as a pull-request comment: its marker, its cost change, and a size that always fits.

GitHub refuses a comment over 65,536 characters. A plan whose Markdown is larger than
``COMMENT_LIMIT`` (counted in UTF-8 bytes, which is never fewer than the characters GitHub
counts) is collapsed: the summary, then one ``<details>`` block per row (or the shots to render
and changed first, for a project without rows) while they fit, then how many were left out and
where the full plan is (``plan --out-full FILE``, uploaded as an artifact by the CI recipe).

Every Markdown plan starts with ``MARKER`` (and a second hidden line naming the project file), so
the CI recipe finds its own comment to edit, never another workflow's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from kling_render.catalog.catalog import usd
from kling_render.plan.model import Plan, PlannedShot
from kling_render.report.cells import budget_line, counts_text, mixed_providers

MARKER = "<!-- kling-render-plan -->"
COMMENT_LIMIT = 60_000
TEXT_LIMIT = 200  # characters of a user's text (a name, a path) in the collapsed plan's fixed parts
PROMPT_LIMIT = 300  # characters of an old or new prompt in the collapsed plan


def size(text: str) -> int:
    """What a comment's length is measured in here: UTF-8 bytes (≥ characters, ≥ UTF-16 units)."""
    return len(text.encode("utf-8"))


def money(value: Fraction | float) -> str:
    return f"${usd(Fraction(value)) if isinstance(value, Fraction) else value:.4f}"


def signed_money(value: Fraction) -> str:
    """``+$0.3360``, ``-$0.2520``, ``+$0.0000``."""
    amount = usd(value)
    return f"{'-' if amount < 0 else '+'}${abs(amount):.4f}"


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` on one line, at most ``limit`` characters (``…`` when cut)."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def markers(plan: Plan) -> list[str]:
    """The hidden lines the CI recipe looks for: the marker, and the project file it is about."""
    where = plan.project.display.replace("--", "- -")  # "--" would end the HTML comment early
    return [MARKER, f"<!-- kling-render-plan project: {clip(where)} -->"]


def where_suffix(plan: Plan) -> str:
    """`` · remote `s3://…` `` for a heading, when a remote's clips count as cached."""
    return f" · remote `{clip(plan.remote)}`" if plan.remote else ""


# -- the cost change against the lock, per provider ------------------------------------------------


@dataclass(frozen=True)
class CostChange:
    """The project's cost now against what the lock's clips cost, counting only clips the lock
    records for this plan's provider: a clip made by another provider (a free ``local`` preview)
    says nothing about what this provider charges, so those shots are left out of both sides."""

    now: Fraction  # the compared shots as planned (each distinct clip once)
    before: Fraction  # their lock entries (and removed shots'), same provider
    other: dict[str, int]  # shots whose lock entry another provider made: provider -> count

    @property
    def delta(self) -> Fraction:
        return self.now - self.before


def cost_change(plan: Plan) -> CostChange:
    lock = plan.lock_entries

    def same(provider: object) -> bool:
        return provider in (None, "", plan.provider)

    other: Counter[str] = Counter()
    now: dict[str, Fraction] = {}
    before: dict[object, Fraction] = {}
    for p in plan.shots:
        entry = lock.get(p.id)
        if entry is not None and not same(entry.get("provider")):
            other[str(entry.get("provider"))] += 1
            continue
        now.setdefault(p.job.key, p.cost)
        if entry is not None:
            before.setdefault(entry.get("key"), _cost(entry.get("cost_usd")))
    for sid in plan.removed:
        entry = lock.get(sid)
        if entry is not None and same(entry.get("provider")):
            before.setdefault(entry.get("key"), _cost(entry.get("cost_usd")))
    return CostChange(sum(now.values(), Fraction(0)), sum(before.values(), Fraction(0)), dict(other))


def _cost(value: object) -> Fraction:
    try:
        return Fraction(str(value)) if isinstance(value, int | float) and not isinstance(value, bool) else Fraction(0)
    except (ValueError, ZeroDivisionError):  # a hand-edited lock with nan/inf: no baseline
        return Fraction(0)


def cost_text(plan: Plan) -> str:
    """``(vs the lock's wavespeed clips $1.0920: +$0.3360)``, and what could not be compared."""
    change = cost_change(plan)
    others = ", ".join(f"{n} by {name}" for name, n in sorted(change.other.items()))
    compared = len(plan.shots) - sum(change.other.values())
    if compared == 0 and others:
        return (
            f"(the lock's clips were made by another provider ({others}): no {plan.provider} cost to compare)"
        )
    text = f"(lock, {plan.provider} clips: {money(change.before)}; change {signed_money(change.delta)}"
    if others:
        text += f"; not compared: {others}"
    return text + ")"


# -- a comment that fits ------------------------------------------------------------------------------


def fit(plan: Plan, full: str, *, full_note: str | None, limit: int = COMMENT_LIMIT) -> str:
    """``full`` when it fits in ``limit``; else the collapsed plan, which always does."""
    if size(full) <= limit:
        return full
    return collapsed(plan, size(full), full_note=full_note, limit=limit)


def collapsed(plan: Plan, full_size: int, *, full_note: str | None, limit: int = COMMENT_LIMIT) -> str:
    """The plan in at most ``limit``: a summary, then blocks (per row, or the shots that need
    something first) while they fit, then how many are left out."""
    where = full_note or "run `kling-render plan --format markdown --out-full plan.md` to see it whole"
    head = [
        *markers(plan),
        f"### kling-render plan: `{clip(plan.project.name)}` ({plan.provider}){where_suffix(plan)}",
        "",
        f"> The whole plan is {full_size:,} characters, too long for a comment: it is shown collapsed. "
        f"The full plan: {clip(where, 400)}.",
        "",
    ]
    budget = budget_line(plan)
    if plan.over_budget and budget:
        head += [f"> **{budget}**", ""]
    to_render = {p.job.key for p in plan.to_render}
    head += [
        f"**To render:** {len(to_render)} clip(s), **{money(plan.to_render_cost)}** · "
        f"{len(plan.shots) - len(plan.to_render)} shot(s) cached",
        "",
        f"**vs lock:** {counts_text(plan)}",
        "",
        f"**Project cost:** {money(plan.total_cost)} {cost_text(plan)}",
        "",
    ]
    if budget and not plan.over_budget:
        head += [f"**Budget:** {budget}", ""]
    if plan.restitch:
        head += [f"**Final cut:** re-stitch ({', '.join(plan.restitch)} changed since the last cut)", ""]
    blocks = _row_blocks(plan) if plan.rows is not None else _shot_blocks(plan)
    reserve = 400  # the closing note
    out = list(head)
    used = size("\n".join(out))
    shown = 0
    for block in blocks:
        cost = size(block) + 1
        if used + cost + reserve > limit:
            break
        out.append(block)
        used += cost
        shown += 1
    left = len(blocks) - shown
    if left:
        unit = "row(s)" if plan.rows is not None else "group(s) of shots"
        out += ["", f"… and {left:,} more {unit}, not shown here: see the full plan."]
    if plan.removed:
        removed = ", ".join(f"`{clip(sid, 80)}`" for sid in plan.removed[:20])
        more = f" and {len(plan.removed) - 20:,} more" if len(plan.removed) > 20 else ""
        note = f"**Removed since the lock:** {removed}{more}"
        if used + size(note) + 200 <= limit:
            out += ["", note]
    text = "\n".join(out) + "\n"
    assert size(text) <= limit, size(text)  # every part above is bounded
    return text


def _shot_line(p: PlannedShot, *, row: bool, mixed: bool) -> str:
    name = p.shot.name if row else p.id
    model = clip(p.shot.model.id, 80) + (f" | {p.provider}" if mixed else "")
    return (
        f"| `{clip(name, 80)}` | {model} | {p.shot.duration}s | {'yes' if p.shot.sound else 'no'} "
        f"| {money(p.cost)} | {p.status} | {clip(p.change_label, 120)} |"
    )


def table_head(mixed: bool) -> list[str]:
    """The shots' table head; with a provider column when the plan's steps use several (``mixed``)."""
    if mixed:
        return [
            "| shot | model | provider | duration | sound | cost | status | vs lock |",
            "|---|---|---|---:|---|---:|---|---|",
        ]
    return ["| shot | model | duration | sound | cost | status | vs lock |", "|---|---|---:|---|---:|---|---|"]


def _prompt_change(p: PlannedShot) -> list[str]:
    change = p.prompt_change
    if change is None:
        return []
    old, new = (clip(text, PROMPT_LIMIT).replace("`", "'") for text in change)
    return [f"`{clip(p.shot.name, 80)}` prompt:", "```diff", f"- {old}", f"+ {new}", "```"]


def _row_blocks(plan: Plan) -> list[str]:
    """One collapsed block per row: its summary line, then its shots (and changed prompts)."""
    assert plan.rows is not None
    mixed = mixed_providers(plan)
    blocks = []
    for r in plan.rows.rows:
        changes = " · ".join(f"{kind} {n}" for kind, n in r.changes.items()) or "-"
        summary = (
            f"<code>{_html(clip(r.key, 80))}</code>: {len(r.shots)} shot(s), {money(r.cost)}, "
            f"to render {money(r.to_render_cost)} · {_html(changes)}"
        )
        lines = [f"<details><summary>{summary}</summary>", "", *table_head(mixed)]
        lines += [_shot_line(p, row=True, mixed=mixed) for p in r.shots[:50]]
        if len(r.shots) > 50:
            lines.append(f"| … {len(r.shots) - 50} more | | | | | |{' |' if mixed else ''} |")
        prompts = [line for p in r.shots[:10] for line in _prompt_change(p)]
        lines += ["", *prompts, "", "</details>"] if prompts else ["", "</details>"]
        blocks.append("\n".join(lines))
    return blocks


def _shot_blocks(plan: Plan, per_block: int = 50) -> list[str]:
    """Blocks of shots, those that need something (to render, added, changed) first."""
    order = sorted(plan.shots, key=lambda p: (p.status != "render", p.change == "unchanged"))
    mixed = mixed_providers(plan)
    blocks = []
    for start in range(0, len(order), per_block):
        group = order[start : start + per_block]
        render = sum(1 for p in group if p.status == "render")
        summary = f"shots {start + 1}–{start + len(group)}: {render} to render, {len(group) - render} cached"
        lines = [f"<details><summary>{summary}</summary>", "", *table_head(mixed)]
        lines += [_shot_line(p, row=False, mixed=mixed) for p in group]
        prompts = [line for p in group[:10] for line in _prompt_change(p)]
        lines += ["", *prompts, "", "</details>"] if prompts else ["", "</details>"]
        blocks.append("\n".join(lines))
    return blocks


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")



__all__ = [
    "COMMENT_LIMIT", "MARKER", "cost_change", "cost_text", "fit", "markers", "money", "signed_money", "table_head",
]  # fmt: skip
