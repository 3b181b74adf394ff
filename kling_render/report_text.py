"""Text renderings for people: the plan table, the plan as Markdown, the model catalog."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kling_render.catalog import usd
from kling_render.plan import Plan, PlannedShot


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _change_text(p: PlannedShot) -> str:
    if p.change == "changed" and p.changed_fields:
        return f"changed ({', '.join(p.changed_fields)})"
    return p.change


def plan_table(plan: Plan) -> str:
    rows = [
        [
            p.id,
            p.shot.model.id,
            f"{p.shot.duration}s",
            "yes" if p.shot.sound else "no",
            f"${usd(p.cost):.4f}",
            p.status,
            _change_text(p),
        ]
        for p in plan.shots
    ]
    text = _table(["shot", "model", "dur", "sound", "cost", "status", "vs lock"], rows, right=(2, 4))
    lines = [f"{plan.project.name} ({plan.provider}): {len(plan.shots)} shot(s)", "", text, ""]
    for shot_id in plan.removed:
        lines.append(f"removed since the lock: {shot_id}")
    cached = len(plan.shots) - len(plan.to_render)
    lines.append(
        f"total ${usd(plan.total_cost):.4f}; to render {len(plan.to_render)} shot(s) "
        f"${usd(plan.to_render_cost):.4f}; cached {cached}"
    )
    if plan.provider == "local":
        lines.append("(local provider: animatics are free; prices show what wavespeed would charge)")
    return "\n".join(lines)


def plan_markdown(plan: Plan) -> str:
    """A pull-request comment: what is added, changed, removed and cached, and what it costs."""
    rows = []
    for p in plan.shots:
        rows.append(
            f"| `{p.id}` | {p.shot.model.id} | {p.shot.duration}s | {'yes' if p.shot.sound else 'no'} "
            f"| ${usd(p.cost):.4f} | {p.status} | {_change_text(p)} |"
        )
    rows.extend(f"| `{sid}` | | | | | | removed |" for sid in plan.removed)
    before = usd(plan.lock_cost)
    delta = usd(plan.total_cost) - before
    counts = {k: sum(1 for p in plan.shots if p.change == k) for k in ("added", "changed", "unchanged")}
    return "\n".join(
        [
            f"### kling-render plan: `{plan.project.name}` ({plan.provider})",
            "",
            f"**To render:** {len(plan.to_render)} shot(s), **${usd(plan.to_render_cost):.4f}** · "
            f"cached {len(plan.shots) - len(plan.to_render)} · added {counts['added']} · "
            f"changed {counts['changed']} · removed {len(plan.removed)}",
            f"**Project cost:** ${usd(plan.total_cost):.4f} (lock: ${before:.4f}, change {delta:+.4f})",
            "",
            "| shot | model | duration | sound | cost | status | vs lock |",
            "|---|---|---:|---|---:|---|---|",
            *rows,
            "",
        ]
    )


def models_table(catalog: list[dict[str, Any]]) -> str:
    rows = []
    for m in catalog:
        d = m["duration"]
        dur = f"{d['min']}-{d['max']}s"
        if d["without_end_image"]:
            dur += f" ({'/'.join(str(x) for x in d['without_end_image'])} w/o end_image)"
        price = f"${m['price_per_second_usd']}/s" if m["price_per_second_usd"] is not None else "-"
        if m["video_price_per_second_usd"] is not None:
            price += f" (${m['video_price_per_second_usd']}/s with video)"
        sound = f"x{m['sound_multiplier']}" if m["sound"] else "no"
        rows.append([m["id"], dur, price, sound, ", ".join(m["inputs"])])
    table = _table(["model", "duration", "price", "sound", "inputs"], rows)
    dates = sorted({m["price_date"] for m in catalog if m["price_date"]})
    return table + f"\n\nprices as of {', '.join(dates)}; `kling-render models --json` shows each source"


def status_table(doc: dict[str, Any]) -> str:
    rows = [
        [
            s["id"],
            s["status"] + (" (changed since)" if s.get("stale") else ""),
            "yes" if s["cached"] else "no",
            s["task_id"] or "-",
            str(s["attempts"]),
            f"${s['cost_usd'] - s.get('refunded_usd', 0.0):.4f}",
            s["error"] or "",
        ]
        for s in doc["shots"]
    ]
    counts = ", ".join(f"{n} {k}" for k, n in sorted(doc["counts"].items()))
    table = _table(["shot", "status", "cached", "task", "tries", "spent", "error"], rows, right=(4, 5))
    cut = doc["final_cut"] or "not stitched yet"
    return f"{doc['project']} ({doc['provider']}): {counts}\n\n{table}\n\nfinal cut: {cut}"
