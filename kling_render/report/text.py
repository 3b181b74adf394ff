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
    mixed_providers,
    plan_footer,
    prompt_lines,
    shot_cells,
    text_table,
    where,
    with_provider,
)


def plan_table(plan: Plan) -> str:
    if plan.rows is not None:
        return report_rows.plan_table(plan)
    mixed = mixed_providers(plan)  # a provider column only when the steps use more than one
    rows = [[p.id, *with_provider(shot_cells(p), p.provider, mixed)] for p in plan.shots]
    head = ["shot", *with_provider(["model", "dur", "sound", "cost", "status", "vs lock"], "provider", mixed)]
    text = text_table(head, rows, right=(3, 5) if mixed else (2, 4))
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
    mixed = mixed_providers(plan)
    rows = []
    for p in plan.shots:
        model = f"{p.shot.model.id} | {p.provider}" if mixed else p.shot.model.id
        rows.append(
            f"| `{p.id}` | {model} | {p.shot.duration}s | {'yes' if p.shot.sound else 'no'} "
            f"| ${usd(p.cost):.4f} | {p.status} | {p.change_label} |"
        )
    rows.extend(f"| `{sid}` | |{' |' if mixed else ''} | | | | removed |" for sid in plan.removed)
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
            *markdown.table_head(mixed),
            *rows,
            *inputs_markdown(plan),
            "",
            *([*prompts, ""] if prompts else []),
        ]
    )


def models_table(catalog: list[dict[str, Any]]) -> str:
    """The catalog at a glance (each provider's price), then each model's endpoints and fields."""
    from kling_render.catalog.catalog import PAID_PROVIDERS

    rows = []
    for m in catalog:
        d = m["duration"]
        if d is None:  # an image model
            dur = "image"
        else:
            dur = "/".join(str(x) for x in d["values"]) + "s" if d["values"] else f"{d['min']}-{d['max']}s"
            if d["without_end_image"]:
                dur += f" ({'/'.join(str(x) for x in d['without_end_image'])} w/o end_image)"
        name = m["id"] + (" (project)" if m["declared_in_project"] else "")
        prices = [_offer_price(m, provider) for provider in PAID_PROVIDERS]
        rows.append([name, dur, *prices, ", ".join(m["inputs"])])
    table = text_table(["model", "duration", *PAID_PROVIDERS, "inputs"], rows)
    blocks = [table, *(_model_details(m) for m in catalog)]
    dates = sorted({o["price"]["date"] for m in catalog for o in m["providers"].values() if o["price"]})
    footer = (
        f"prices as of {', '.join(dates)}; `kling-render models --json` shows each source; "
        "'not offered': the provider lacks the model; 'no price': declare one under pricing:"
    )
    return "\n\n".join([*blocks, footer])


def _offer_price(m: dict[str, Any], provider: str) -> str:
    """A provider's price of a model as one cell: rates, sound factor, the rate with a video."""
    offer = m["providers"].get(provider)
    if offer is None:
        return "not offered"
    price = offer["price"]
    if price is None:
        return "no price"
    text = price["text"]
    if price["video_per_second_usd"] is not None:
        text += f" (${price['video_per_second_usd']}/s with video)"
    if "video" in price["unpriced"]:
        text += " (video: no price)"
    if m["sound"] and "sound" in offer["fields"]:
        factor = price["sound_multiplier"]
        text += f", sound x{factor}" if factor is not None else ", sound: no price"
    return str(text)


def _model_details(m: dict[str, Any]) -> str:
    d = m["duration"]
    lines = [f"{m['id']}: {m['title']}", f"  endpoint  POST /api/v3/{m['endpoint']} (wavespeed)"]
    for provider, offer in m["providers"].items():
        if provider == "wavespeed":
            continue
        renamed = [
            f"{name}->{spec['wire']}{' (text)' if spec.get('form') else ''}"
            for name, spec in offer["fields"].items()
            if spec["wire"] != name or spec.get("form") or spec.get("enum")
        ]
        limits = [
            f"{name} {'|'.join(map(str, spec['enum']))}" for name, spec in offer["fields"].items() if spec.get("enum")
        ]
        line = f"  {provider:<8}  POST {{queue}}/{offer['endpoint']}"
        if renamed:
            line += f"; sent as {', '.join(renamed)}"
        if limits:
            line += f"; only {', '.join(limits)}"
        missing = [name for name in m["fields"] if name not in offer["fields"]]
        if missing:
            line += f"; not taken: {', '.join(missing)}"
        lines.append(line)
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
    """``models --check-prices``: catalog price against each provider's, one row per model, provider and case."""
    rows = []
    for c in checks:
        catalog = f"${usd(c.catalog):.4f}" if c.catalog is not None else "unknown"
        live = f"${c.live:.4f}" if c.live is not None else "-"
        inputs = ", ".join(f"{k}={_plain(v)}" for k, v in c.inputs.items())
        rows.append([c.model, c.provider, c.case, catalog, live, c.status, c.error or inputs])
    table = text_table(["model", "provider", "priced", "catalog", "live", "status", "inputs"], rows, right=(3, 4))
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
        for s in [*doc.get("stills", []), *doc["shots"]]
    ]
    counts = ", ".join(f"{n} {k}" for k, n in sorted(doc["counts"].items()))
    first = "step" if doc.get("stills") else "shot"  # a still's row is ``still:<id>``, as in the plan
    table = text_table([first, "status", "cached", "task", "tries", "spent", "error"], rows, right=(4, 5))
    cut = doc["final_cut"] or "not stitched yet"
    head = f"{doc['project']} ({where(doc['provider'], doc.get('remote'))}): {counts}"
    return f"{head}\n\n{table}\n\nfinal cut: {cut}"


def comparison_table(comparison: Any) -> str:
    """``plan --compare-providers``: each shot's cost on every provider, the cheapest, the totals."""
    doc = comparison.to_json()
    providers = doc["providers"]
    rows = []
    notes: list[str] = []
    for s in doc["shots"]:
        cells = []
        for provider in providers:
            quote = s["prices"][provider]
            if quote["cost_usd"] is not None:
                cells.append(f"${quote['cost_usd']:.4f}" + (" cached" if quote.get("status") == "cached" else ""))
            else:
                cells.append("not offered" if not quote["offered"] else "no price")
                notes.append(f"{s['id']} on {provider}: {quote.get('reason')}")
        rows.append([s["id"], s["model"], f"{s['duration']}s", *cells, s["cheapest"] or "-"])
    totals = doc["totals"]
    total_cells = []
    for provider in providers:
        t = totals[provider]
        left = len(t["not_priced"]) + len(t["not_offered"])
        total_cells.append(f"${t['total_cost_usd']:.4f}" + (f" ({left} shot(s) missing)" if left else ""))
    rows.append(["total", "", "", *total_cells, ""])
    table = text_table(["shot", "model", "dur", *providers, "cheapest"], rows)
    mix = doc["cheapest_mix"]
    lines = [f"{doc['project']}: every shot on each provider", "", table, ""]
    lines.append(
        f"cheapest per shot: ${mix['total_cost_usd']:.4f}"
        + ("" if mix["complete"] else " (some shots have no price on any provider)")
    )
    for provider in providers:
        if totals[provider]["renders_all"]:
            lines.append(f"{provider} renders every shot: to render ${totals[provider]['to_render_cost_usd']:.4f}")
    lines += notes
    return "\n".join(lines)
