"""Core functions behind the commands: each loads what it needs and returns data (no printing)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kling_render.catalog.catalog import load_catalog, usd
from kling_render.errors import ProjectError, UsageError
from kling_render.plan.model import Plan
from kling_render.plan.plan import build_plan
from kling_render.project.generated import Still
from kling_render.project.loader import load_project, paused_gc
from kling_render.project.project import Project, Shot, parse_var_overrides
from kling_render.providers import PROVIDER_NAMES

if TYPE_CHECKING:
    from kling_render.store.cache import ClipCache
    from kling_render.store.remote.connect import Remote


def load(project_path: Path, vars_: Sequence[str]) -> Project:
    return load_project(find_project_file(project_path), parse_var_overrides(list(vars_)))


PROJECT_FILE_NAMES = ("project.yaml", "project.yml")
_PROJECT_LIKE = re.compile(r"^shots\s*:", re.M)


def find_project_file(path: Path) -> Path:
    """``path`` itself, or for a directory the project file in it: ``project.yaml`` (or ``.yml``),
    else the one YAML file in it with a top-level ``shots:``. None or several is a usage error."""
    if not path.is_dir():
        return path
    named = [path / n for n in PROJECT_FILE_NAMES if (path / n).is_file()]
    if len(named) == 1:
        return named[0]
    if named:
        raise UsageError(f"{path}: several project files ({', '.join(n.name for n in named)}): name the one to use")
    candidates = []
    for child in sorted(path.iterdir()):
        if child.suffix.lower() in (".yaml", ".yml") and child.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if _PROJECT_LIKE.search(child.read_text(encoding="utf-8")):
                    candidates.append(child)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(c.name for c in candidates)
        raise UsageError(f"{path}: no project.yaml, and several project files ({names}): name the one to use")
    if path == Path("."):  # PROJECT left out: say where we looked, and how to name one
        raise UsageError(
            f"no project.yaml in the current directory ({Path.cwd()}): give the project file's path, "
            "or run kling-render in the project's directory"
        )
    raise UsageError(f"{path}: no project.yaml in this directory (give the project file's path)")


def validate(project_path: Path, vars_: Sequence[str]) -> dict[str, Any]:
    project = load(project_path, vars_)
    doc: dict[str, Any] = {"project": project.name, "file": project.display, "valid": True, "shots": len(project.shots)}
    if project.rows is not None:
        from kling_render.plan.inputs import unit_keys

        doc["rows"] = len(project.rows)
        keys = unit_keys(project, project.provider)
        doc["clips"] = len({keys[n] for n in keys if not n.startswith("still:")})
    return doc


def pick_provider(project: Project, provider: str | None) -> str:
    name = provider or project.provider
    if name not in PROVIDER_NAMES:
        raise UsageError(f"unknown provider {name!r} (choose from {', '.join(PROVIDER_NAMES)})")
    return name


def on_provider(project: Project, provider: str | None) -> Project:
    """``project`` as ``--provider`` renders it: every shot on that provider (a shot's own
    ``provider:`` included), or ``project`` itself without one. What that provider cannot render
    is a located error (exit 2), naming the providers that can."""
    from dataclasses import replace

    from kling_render.plan.plan import provider_issues

    if provider is None:
        return project
    name = pick_provider(project, provider)
    steps: list[Shot | Still] = [*project.shots, *project.stills]
    if name == project.provider and not any(s.provider not in (None, name) for s in steps):
        return project
    issues = provider_issues(project, project.shots, name)
    if issues:
        raise ProjectError(issues)

    def moved(steps: list[Any]) -> list[Any]:
        return [replace(s, provider=None) if s.provider is not None else s for s in steps]

    rows = [replace(row, shots=moved(row.shots)) for row in project.rows] if project.rows is not None else None
    return replace(project, provider=name, shots=moved(project.shots), stills=moved(project.stills), rows=rows)


def plan_providers(project: Project) -> list[str]:
    """The providers ``project`` renders on: its own and those its shots and stills name."""
    steps: list[Shot | Still] = [*project.shots, *project.stills]
    own = [s.provider for s in steps if s.provider]
    return list(dict.fromkeys([pick_provider(project, None), *own]))


def plan_for(
    project: Project,
    provider: str | None,
    only: Sequence[str] | None,
    *,
    max_cost: float | None = None,
    remote: bool = False,
) -> Plan:
    """The plan of ``project``: cache status from the clip cache (and with ``remote``, from the
    shared remote: a clip there is cached too; a remote error is exit 1), changes from the lock file."""
    from dataclasses import replace

    from kling_render.fsutil import sha256_file
    from kling_render.providers import provider_charges
    from kling_render.records import manifest
    from kling_render.records.lockfile import read_lock_file
    from kling_render.store.cache import ClipCache
    from kling_render.store.outputs import CachedOutputs

    project = on_provider(project, provider)
    name = project.provider
    cache = ClipCache.for_project(project.path)
    entries, lock_cut = read_lock_file(project.lock_path)
    lock = {sid: entry.to_json() for sid, entry in entries.items()}
    cut_now = None
    if lock_cut is not None and project.rows is None:  # a rows: project's cuts are compared per row
        cut_now = {
            "order": [s.id for s in project.shots],
            "output": manifest.output_settings(project),
            "audio": manifest.audio_settings(project),
        }
    providers = plan_providers(project)
    outputs: CachedOutputs = CachedOutputs(cache)
    listed = {p: cache.listed_keys(p) for p in providers}  # one directory walk per namespace
    stills_here = {p: outputs.stills.listed_keys(p) for p in providers}
    listing: dict[str, dict[str, str | None]] = {p: {} for p in providers}
    team_stills: dict[str, set[str]] = {p: set() for p in providers}
    team: Remote | None = None
    remote_url = None
    if remote:
        from kling_render.store.remote.sync import open_for

        team = open_for(project.remote, project.display)
        if team is not None:
            from kling_render.store.outputs import TeamOutputs

            remote_url = str(team.url)
            listing = {p: asyncio.run(team.clips.listing(p)) for p in providers}
            team_stills = {p: set(asyncio.run(team.stills.listing(p))) for p in providers}
            outputs = TeamOutputs(cache, team, team_stills)

    def is_cached(key: str, where: str) -> bool:
        if key in listing[where] or key in team_stills[where]:
            return True
        if key in stills_here[where]:
            return outputs.stills.contains(where, key)
        return key in listed[where] and cache.contains(where, key)

    with paused_gc():
        the_plan = build_plan(
            project,
            name,
            is_cached=is_cached,
            lock=lock,
            only=only,
            cut_settings=manifest.shot_cut_settings,
            lock_cut=lock_cut,
            cut_now=cut_now,
            outputs=outputs,
        )
    if team is not None:
        the_plan = _team_clips(the_plan, team, cache, listing)
    the_plan = replace(
        the_plan,
        project_sha256=sha256_file(project.path),
        budget_usd=max_cost if max_cost is not None else project.budget_usd,
        charges=any(provider_charges(p) for p in providers),
        remote=remote_url,
    )
    if project.rows is not None:
        from kling_render.plan.rows import with_rows

        the_plan = with_rows(the_plan, lock_cut)
    return the_plan


def compare_for(project: Project, only: Sequence[str] | None) -> Any:
    """``plan --compare-providers``: the project priced on every paid provider (cache status from the
    clip cache and, with a remote, the remote's clips)."""
    from kling_render.catalog.catalog import PAID_PROVIDERS
    from kling_render.plan.compare import compare
    from kling_render.store.cache import ClipCache
    from kling_render.store.remote.sync import open_for

    cache = ClipCache.for_project(project.path)
    listed = {p: cache.listed_keys(p) for p in PAID_PROVIDERS}
    team = open_for(project.remote, project.display)  # a remote error: exit 1
    on_remote = {p: set(asyncio.run(team.clips.listing(p))) if team else set() for p in PAID_PROVIDERS}

    def is_cached(key: str, where: str) -> bool:
        return key in on_remote[where] or (key in listed[where] and cache.contains(where, key))

    from kling_render.store.outputs import CachedOutputs

    outputs = CachedOutputs(cache)
    return compare(project, is_cached=is_cached, outputs=outputs, only=list(only) if only else None)


def _team_clips(
    the_plan: Plan, team: Remote, cache: ClipCache, listing: Mapping[str, dict[str, str | None]]
) -> Plan:
    """With a remote, its record is the team's clip: a shot whose clip here differs from it is cut
    with the team's clip at the next render or stitch, so the plan says it re-stitches (each
    provider's clips against that provider's records)."""
    from dataclasses import replace

    from kling_render.store.remote.sync import differing

    kept = [p for p in the_plan.shots if p.change in ("unchanged", "re-stitch")]
    if not kept:
        return the_plan
    differs: set[tuple[str, str]] = set()
    for where in dict.fromkeys(p.provider for p in kept):
        keys = [p.job.key for p in kept if p.provider == where]
        found = asyncio.run(differing(team.clips, where, cache, keys, listing.get(where, {})))
        differs |= {(where, key) for key in found}
    shots = [
        replace(p, change="re-stitch", changed_fields=(*p.changed_fields, "team clip"))
        if (p.provider, p.job.key) in differs and p.change in ("unchanged", "re-stitch")
        else p
        for p in the_plan.shots
    ]
    return replace(the_plan, shots=shots)


EXIT_NOTHING_TO_DO, EXIT_CHANGES, EXIT_OVER_BUDGET = 0, 2, 3


def detailed_exit_code(the_plan: Plan) -> int:
    """``plan --detailed-exitcode``, as Terraform's: 0 nothing to render and nothing changed since
    the lock, 2 changes (a clip to render, or a shot added, changed, re-stitched or removed, or a
    project-wide cut edit), 3 over budget (render would refuse to start)."""
    if the_plan.over_budget:
        return EXIT_OVER_BUDGET
    counts = the_plan.change_counts()
    if the_plan.to_render or the_plan.stills_to_render or the_plan.restitch or any(
        n for kind, n in counts.items() if kind != "unchanged"
    ):
        return EXIT_CHANGES
    if the_plan.rows is not None and any(r.restitch for r in the_plan.rows.rows):
        return EXIT_CHANGES
    return EXIT_NOTHING_TO_DO


def full_plan_note(out_full: Path | None, full_url: str | None) -> str | None:
    """Where a collapsed Markdown plan says the whole plan is: the URL, else the file written."""
    name = out_full.name if out_full is not None else "the full plan"
    if full_url:
        return f"[{name}]({full_url})"
    return f"`{name}`, written beside this plan" if out_full is not None else None


def save_text(text: str, out: Path) -> None:
    from kling_render.errors import StateError
    from kling_render.fsutil import atomic_write_text

    try:
        atomic_write_text(out, text)
    except OSError as exc:
        raise StateError(f"cannot write {out}: {exc.strerror or exc}") from None


def reviewed_plan(
    path: Path | None, provider: str | None, selected: list[str] | None
) -> tuple[dict[str, Any] | None, str | None, list[str] | None]:
    """`render --plan FILE`: the reviewed plan, and the provider and shots it was made for (a
    --provider other than the plan's is a usage error); without a file, what was asked."""
    if path is None:
        return None, provider, selected
    reviewed = load_saved_plan(path)
    if provider is not None and provider != reviewed.get("provider"):
        raise UsageError(f"--provider {provider} differs from the plan's ({reviewed.get('provider')})")
    chosen = list(reviewed["selected"]) if reviewed.get("selected") else selected
    return reviewed, str(reviewed.get("provider")), chosen


def load_saved_plan(path: Path) -> dict[str, Any]:
    """A plan written by `plan --out`; a missing, unreadable or malformed file is a usage error."""
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--plan {path}: file not found") from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
        raise UsageError(f"--plan {path}: not a plan file ({reason or type(exc).__name__})") from None
    problem = _saved_plan_problem(doc)
    if problem is not None:
        raise UsageError(f"--plan {path}: not a plan file written by `kling-render plan --out` ({problem})")
    return dict(doc)


def _saved_plan_problem(doc: Any) -> str | None:
    """What in a saved plan has the wrong type (render --plan reads these fields), or None."""

    def text(value: Any) -> bool:
        return isinstance(value, str)

    if not isinstance(doc, dict):
        return "not a JSON object"
    if "shots" not in doc:
        return "no shots"
    if type(doc.get("version")) is not int:
        return "version is not an integer"
    for name in ("provider", "project_sha256"):
        if not text(doc.get(name)):
            return f"{name} is not a string"
    shots = doc["shots"]
    if not isinstance(shots, list):
        return "shots is not a list"
    for n, shot in enumerate(shots):
        if not isinstance(shot, dict) or not text(shot.get("id")) or not text(shot.get("key")):
            return f"shots[{n}] is not an object with a string id and key"
    selected = doc.get("selected")
    if selected is not None and not (isinstance(selected, list) and all(text(s) for s in selected)):
        return "selected is not a list of shot ids"
    lock_keys = doc.get("lock_keys", {})
    if not isinstance(lock_keys, dict) or not all(v is None or text(v) for v in lock_keys.values()):
        return "lock_keys is not an object of keys"
    return None


def plan(
    project_path: Path,
    vars_: Sequence[str],
    provider: str | None,
    only: Sequence[str] | None,
    *,
    max_cost: float | None = None,
) -> Plan:
    return plan_for(load(project_path, vars_), provider, only, max_cost=max_cost)


def output_guard(project: Project) -> Any:
    """What a file kling-render writes for ``project`` must never overwrite (outputs.py): what it
    reads or keeps, and every final cut (one per row in a rows: project)."""
    from kling_render.app.outputs import Guard, Protected, protected_for

    return Guard(
        protected_for(
            project.path,
            project.lock_path,
            project.input_files(),
            extra=[Protected(path, "the final cut (output.path)") for path in project.cut_paths()],
        )
    )


def safe_output(project: Project, out: str | Path, option: str, guard: Any = None) -> Path:
    """``out`` as a path to write, or a UsageError (exit 2, before anything is written) when it
    would overwrite something the project reads or keeps, or the final cut (outputs.py)."""
    import os

    problem = (guard or output_guard(project)).problem(out)
    if problem is not None:
        raise UsageError(f"{option} {os.fspath(out)}: {problem}")
    return Path(os.path.abspath(out))


def save_plan(the_plan: Plan, out: Path) -> None:
    from kling_render.errors import StateError
    from kling_render.fsutil import atomic_write_json

    try:
        atomic_write_json(out, the_plan.to_json())
    except OSError as exc:
        raise StateError(f"cannot write the plan to {out}: {exc.strerror or exc}") from None


def models(project_path: Path | None = None, vars_: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The catalog as data: each model's fields, limits, and every provider's endpoint and price
    (with a project's declared models and ``pricing:``)."""
    catalog, prices = _catalog_and_prices(project_path, vars_)
    return [model_json(model, prices) for model in catalog.values()]


def _catalog_and_prices(project_path: Path | None, vars_: Sequence[str]) -> tuple[dict[str, Any], dict[Any, Any]]:
    from kling_render.catalog.catalog import Model

    catalog: dict[str, Model] = dict(load_catalog())
    if project_path is None:
        prices = {(o.provider, mid): o.price for mid, m in catalog.items() for o in m.offers}
        return catalog, prices
    project = load(project_path, vars_)
    catalog.update(project.models)
    return catalog, dict(project.prices)


def check_prices(project_path: Path | None = None, vars_: Sequence[str] = ()) -> list[Any]:
    """Every model's price (the project's prices, with its declared models) against each provider's."""
    from kling_render.catalog.pricecheck import check_prices as ask

    catalog, prices = _catalog_and_prices(project_path, vars_)
    return ask(catalog.values(), prices)


def model_json(model: Any, prices: Any) -> dict[str, Any]:
    """One catalog entry as plain data (``models --json``): the WaveSpeed offer at the top (as
    before fal), every provider's under ``providers``."""
    d = model.duration
    fields = {}
    for spec in model.fields:
        entry: dict[str, Any] = {"type": spec.type}
        if spec.wire != spec.name:
            entry["wire"] = spec.wire
        if spec.has_default:
            entry["default"] = spec.default
        for key, value in (
            ("min", spec.minimum),
            ("max", spec.maximum),
            ("enum", list(spec.enum) if spec.enum is not None else None),
            ("max_items", spec.max_items),
            ("max_items_with_video", spec.max_items_with_video),
            ("only_with", spec.only_with),
            ("min_seconds", spec.min_seconds),
            ("max_seconds", spec.max_seconds),
            ("max_total_seconds", spec.max_total_seconds),
        ):
            if value is not None:
                entry[key] = value
        fields[spec.name] = entry
    price = prices.get(("wavespeed", model.id))
    return {
        "id": model.id,
        "title": model.title,
        "endpoint": model.endpoint,
        "declared_in_project": not model.builtin,
        "inputs": [spec.name for spec in model.fields],
        "fields": fields,
        "required": list(model.required),
        "one_of": [list(g.fields) for g in model.one_of],
        "any_of": [list(g.fields) for g in model.any_of],
        "conflicts": [list(g.fields) for g in model.conflicts],
        "output": model.output,
        "duration": None
        if d is None
        else {
            "min": d.min,
            "max": d.max,
            "default": d.default,
            "values": list(d.values or []),
            "without_end_image": list(d.without_end_image or []),
        },
        "sound": model.takes_sound,
        "image_limits": {
            "formats": list(model.image_limits.formats),
            "min_side": model.image_limits.min_side,
            "max_aspect": model.image_limits.max_aspect,
        },
        "extends": model.extends,
        "price_per_second_usd": usd(price.per_second) if price and price.per_second is not None else None,
        "price_per_image_usd": usd(price.per_image) if price and price.per_image is not None else None,
        "sound_multiplier": (
            None if price is None or price.sound_multiplier is None else str(price.sound_multiplier)
        ),
        "video_price_per_second_usd": (
            usd(price.video_per_second) if price and price.video_per_second is not None else None
        ),
        "price_date": price.date if price else None,
        "price_source": price.source if price else None,
        "providers": {o.provider: _offer_json(o, prices.get((o.provider, model.id))) for o in model.offers},
    }


def _offer_json(offer: Any, price: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for f in offer.fields:
        spec: dict[str, Any] = {"wire": f.wire}
        if f.string:
            spec["form"] = "string"
        if f.enum is not None:
            spec["enum"] = list(f.enum)
        fields[f.name] = spec
    return {"endpoint": offer.endpoint, "fields": fields, "price": _price_json(price)}


def _price_json(price: Any) -> dict[str, Any] | None:
    if price is None:
        return None
    return {
        "per_second_usd": usd(price.per_second) if price.per_second is not None else None,
        "per_image_usd": usd(price.per_image) if price.per_image is not None else None,
        "per_second_by_resolution_usd": {tier: usd(rate) for tier, rate in price.by_resolution},
        "sound_multiplier": None if price.sound_multiplier is None else str(price.sound_multiplier),
        "video_per_second_usd": usd(price.video_per_second) if price.video_per_second is not None else None,
        "unpriced": sorted(price.unpriced),
        "text": price.rates_text(),
        "date": price.date,
        "source": price.source,
    }
