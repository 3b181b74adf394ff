"""Text renderings for people: the plan table, the plan as Markdown, the model catalog."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kling_render.catalog.catalog import usd
from kling_render.plan.model import Plan
from kling_render.report import markdown
from kling_render.report import rows as report_rows
from kling_render.report.cells import (
    budget_line,
    counts_text,
    inputs_markdown,
    plan_footer,
    prompt_lines,
    shot_cells,
    text_table,
    where,
)


def plan_table(plan: Plan) -> str:
    if plan.rows is not None:
        return report_rows.plan_table(plan)
    rows = [[p.id, *shot_cells(p)] for p in plan.shots]
    text = text_table(["shot", "model", "dur", "sound", "cost", "status", "vs lock"], rows, right=(2, 4))
    lines = [f"{plan.project.name} ({where(plan.provider, plan.remote)}): {len(plan.shots)} shot(s)", "", text, ""]
    for shot_id in plan.removed:
        lines.append(f"removed since the lock: {shot_id}")
    if plan.restitch:
        lines.append(f"final cut: re-stitch ({', '.join(plan.restitch)} changed since the last cut)")
    prompts = prompt_lines(plan, markdown=False)
    if prompts:
        lines += [*prompts, ""]
    cached = len(plan.shots) - len(plan.to_render)
    lines.append(
        f"total ${usd(plan.total_cost):.4f}; to render {len(plan.to_render)} shot(s) "
        f"${usd(plan.to_render_cost):.4f}; cached {cached}"
    )
    lines += plan_footer(plan)
    return "\n".join(lines)


def plan_text(fmt: str, plan: Plan, *, full_note: str | None = None) -> tuple[str, str]:
    """``plan`` as printed in ``fmt`` (table, markdown, json) and as a whole (``--out-full``): the
    same, except a Markdown plan too long for a comment, printed collapsed."""
    if fmt == "json":
        from kling_render.report.jsonout import json_text

        whole = json_text(plan.to_json(), indent=2)
        return whole, whole
    if fmt == "markdown":
        whole = plan_markdown_full(plan)
        return plan_markdown(plan, full_note=full_note, full=whole), whole
    table = plan_table(plan)
    return table, table


def plan_markdown(
    plan: Plan, *, full_note: str | None = None, limit: int | None = None, full: str | None = None
) -> str:
    """A pull-request comment, collapsed when the whole plan (``full``, made here when None) would
    not fit in one (markdown.py); ``full_note`` says where the whole plan is."""
    whole = full if full is not None else plan_markdown_full(plan)
    return markdown.fit(plan, whole, full_note=full_note, limit=limit or markdown.COMMENT_LIMIT)


def plan_markdown_full(plan: Plan) -> str:
    """What is added, changed, re-stitched, removed and cached, and what it costs: every shot."""
    if plan.rows is not None:
        return report_rows.plan_markdown(plan)
    rows = []
    for p in plan.shots:
        rows.append(
            f"| `{p.id}` | {p.shot.model.id} | {p.shot.duration}s | {'yes' if p.shot.sound else 'no'} "
            f"| ${usd(p.cost):.4f} | {p.status} | {p.change_label} |"
        )
    rows.extend(f"| `{sid}` | | | | | | removed |" for sid in plan.removed)
    budget = budget_line(plan)
    head = [
        *markdown.markers(plan),
        f"### kling-render plan: `{plan.project.name}` ({plan.provider}){markdown.where_suffix(plan)}",
        "",
    ]
    if plan.over_budget and budget:
        head += [f"> **{budget}**", ""]
    summary = [
        f"**To render:** {len(plan.to_render)} shot(s), **${usd(plan.to_render_cost):.4f}** · "
        f"cached {len(plan.shots) - len(plan.to_render)}",
        "",
        f"**vs lock:** {counts_text(plan)}",
        "",
        f"**Project cost:** ${usd(plan.total_cost):.4f} {markdown.cost_text(plan)}",
    ]
    if budget and not plan.over_budget:
        summary += ["", f"**Budget:** {budget}"]
    if plan.restitch:
        summary += ["", f"**Final cut:** re-stitch ({', '.join(plan.restitch)} changed since the last cut)"]
    prompts = prompt_lines(plan, markdown=True)
    return "\n".join(
        [
            *head,
            *summary,
            "",
            "| shot | model | duration | sound | cost | status | vs lock |",
            "|---|---|---:|---|---:|---|---|",
            *rows,
            *inputs_markdown(plan),
            "",
            *([*prompts, ""] if prompts else []),
        ]
    )


def models_table(catalog: list[dict[str, Any]]) -> str:
    """The catalog at a glance, then each model's endpoint and fields."""
    rows = []
    for m in catalog:
        d = m["duration"]
        if d is None:  # an image model
            dur = "image"
        else:
            dur = "/".join(str(x) for x in d["values"]) + "s" if d["values"] else f"{d['min']}-{d['max']}s"
            if d["without_end_image"]:
                dur += f" ({'/'.join(str(x) for x in d['without_end_image'])} w/o end_image)"
        price = f"${m['price_per_second_usd']}/s" if m["price_per_second_usd"] is not None else "-"
        if m.get("price_per_image_usd") is not None:
            price = f"${m['price_per_image_usd']}/image"
        if m["video_price_per_second_usd"] is not None:
            price += f" (${m['video_price_per_second_usd']}/s with video)"
        if not m["sound"]:
            sound = "no"
        else:
            sound = f"x{m['sound_multiplier']}" if m["sound_multiplier"] is not None else "price unknown"
        name = m["id"] + (" (project)" if m["declared_in_project"] else "")
        rows.append([name, dur, price, sound, ", ".join(m["inputs"])])
    table = text_table(["model", "duration", "price", "sound", "inputs"], rows)
    blocks = [table, *(_model_details(m) for m in catalog)]
    dates = sorted({m["price_date"] for m in catalog if m["price_date"]})
    footer = f"prices as of {', '.join(dates)}; `kling-render models --json` shows each source"
    return "\n\n".join([*blocks, footer])


def _model_details(m: dict[str, Any]) -> str:
    d = m["duration"]
    lines = [f"{m['id']}: {m['title']}", f"  endpoint  POST /api/v3/{m['endpoint']}"]
    if d is None:
        lines.append("  output    one image per still (use it under stills:)")
    else:
        duration = f"  duration  {d['min']}-{d['max']} s, default {d['default']}"
        if d["values"]:
            duration += f", only {'/'.join(str(x) for x in d['values'])}"
        if d["without_end_image"]:
            duration += f", only {'/'.join(str(x) for x in d['without_end_image'])} without end_image"
        lines.append(duration)
    required = set(m["required"])
    width = max(len(name) for name in m["fields"]) + 1
    for i, (name, spec) in enumerate(m["fields"].items()):
        label = "fields" if i == 0 else ""
        mark = "*" if name in required else " "
        lines.append(f"  {label:<8}  {name + mark:<{width}}  {_field_text(spec)}")
    for word, groups in (("one of", m["one_of"]), ("any of", m["any_of"]), ("not together", m["conflicts"])):
        for group in groups:
            lines.append(f"  {word}: {', '.join(group)}")
    limits = m["image_limits"]
    if any(spec["type"] in ("image", "images") for spec in m["fields"].values()):
        text = f"  images    {', '.join(limits['formats'])}, at most 10 MB"
        if limits["min_side"]:
            text += f", at least {limits['min_side']} px a side"
        if limits["max_aspect"]:
            text += f", aspect within 1:{limits['max_aspect']:g} and {limits['max_aspect']:g}:1"
        lines.append(text)
    return "\n".join(lines)


def _field_text(spec: dict[str, Any]) -> str:
    text = str(spec["type"])
    if "enum" in spec:
        text += " " + "|".join(str(v) for v in spec["enum"])
    if "min" in spec or "max" in spec:
        text += f" {spec.get('min', '')}–{spec.get('max', '')}"
    if "max_items" in spec:
        text += f", at most {spec['max_items']}"
        if "max_items_with_video" in spec:
            text += f" ({spec['max_items_with_video']} with video)"
    if "default" in spec:
        value = spec["default"]
        text += f", default {str(value).lower() if isinstance(value, bool) else value}"
    if "wire" in spec:
        text += f", sent as {spec['wire']}"
    if "only_with" in spec:
        text += f", only with {spec['only_with']}"
    return text


def price_checks_table(checks: Sequence[Any]) -> str:
    """``models --check-prices``: catalog price against WaveSpeed's, one row per model and case."""
    rows = []
    for c in checks:
        catalog = f"${usd(c.catalog):.4f}" if c.catalog is not None else "unknown"
        live = f"${c.live:.4f}" if c.live is not None else "-"
        inputs = ", ".join(f"{k}={_plain(v)}" for k, v in c.inputs.items())
        rows.append([c.model, c.case, catalog, live, c.status, c.error or inputs])
    table = text_table(["model", "priced", "catalog", "wavespeed", "status", "inputs"], rows, right=(2, 3))
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.status] = counts.get(c.status, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{table}\n\n{summary}"


def _plain(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


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
    table = text_table(["shot", "status", "cached", "task", "tries", "spent", "error"], rows, right=(4, 5))
    cut = doc["final_cut"] or "not stitched yet"
    head = f"{doc['project']} ({where(doc['provider'], doc.get('remote'))}): {counts}"
    return f"{head}\n\n{table}\n\nfinal cut: {cut}"
