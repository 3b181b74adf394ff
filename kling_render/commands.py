"""Core functions behind the commands: each loads what it needs and returns data (no printing)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kling_render.catalog import load_catalog, usd
from kling_render.errors import UsageError
from kling_render.plan import Plan, build_plan
from kling_render.project import Project, load_project, parse_var_overrides, paused_gc
from kling_render.providers import PROVIDER_NAMES


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
    raise UsageError(f"{path}: no project.yaml in this directory (give the project file's path)")


def validate(project_path: Path, vars_: Sequence[str]) -> dict[str, Any]:
    project = load(project_path, vars_)
    return {"project": project.name, "valid": True, "shots": len(project.shots)}


def pick_provider(project: Project, provider: str | None) -> str:
    name = provider or project.provider
    if name not in PROVIDER_NAMES:
        raise UsageError(f"unknown provider {name!r} (choose from {', '.join(PROVIDER_NAMES)})")
    return name


def plan_for(
    project: Project, provider: str | None, only: Sequence[str] | None, *, max_cost: float | None = None
) -> Plan:
    """The plan of ``project``: cache status from the clip cache, changes from the lock file."""
    from dataclasses import replace

    from kling_render.cache import ClipCache
    from kling_render.fsutil import sha256_file
    from kling_render.lockfile import read_lock_file
    from kling_render.providers import provider_charges
    from kling_render.stitch import manifest

    name = pick_provider(project, provider)
    cache = ClipCache.for_project(project.path)
    entries, lock_cut = read_lock_file(project.lock_path)
    lock = {sid: entry.to_json() for sid, entry in entries.items()}
    cut_now = None
    if lock_cut is not None:
        cut_now = {
            "order": [s.id for s in project.shots],
            "output": manifest.output_settings(project),
            "audio": manifest.audio_settings(project),
        }
    listed = cache.listed_keys(name)  # one directory walk instead of a stat + read per shot
    with paused_gc():
        the_plan = build_plan(
            project,
            name,
            is_cached=lambda key: key in listed and cache.contains(name, key),
            lock=lock,
            only=only,
            cut_settings=manifest.shot_cut_settings,
            lock_cut=lock_cut,
            cut_now=cut_now,
        )
    return replace(
        the_plan,
        project_sha256=sha256_file(project.path),
        budget_usd=max_cost if max_cost is not None else project.budget_usd,
        charges=provider_charges(name),
    )


def load_saved_plan(path: Path) -> dict[str, Any]:
    """A plan written by `plan --out`; a missing or unreadable file is a usage error."""
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--plan {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--plan {path}: not a plan file ({exc})") from None
    if not isinstance(doc, dict) or "shots" not in doc:
        raise UsageError(f"--plan {path}: not a plan file written by `kling-render plan --out`")
    return doc


def plan(
    project_path: Path,
    vars_: Sequence[str],
    provider: str | None,
    only: Sequence[str] | None,
    *,
    max_cost: float | None = None,
) -> Plan:
    return plan_for(load(project_path, vars_), provider, only, max_cost=max_cost)


def save_plan(the_plan: Plan, out: Path) -> None:
    from kling_render.fsutil import atomic_write_json

    atomic_write_json(out, the_plan.to_json())


def models() -> list[dict[str, Any]]:
    """The catalog as data: inputs, limits and prices per model."""
    out = []
    for model in load_catalog().values():
        price = model.price
        out.append(
            {
                "id": model.id,
                "title": model.title,
                "inputs": list(model.fields),
                "required": list(model.required),
                "duration": {
                    "min": model.duration_min,
                    "max": model.duration_max,
                    "default": model.duration_default,
                    "without_end_image": list(model.durations_without_end_image or []),
                },
                "sound": model.takes_sound,
                "price_per_second_usd": usd(price.per_second) if price else None,
                "sound_multiplier": (
                    None if price is None or price.sound_multiplier is None else str(price.sound_multiplier)
                ),
                "video_price_per_second_usd": (
                    usd(price.video_per_second) if price and price.video_per_second is not None else None
                ),
                "price_date": price.date if price else None,
                "price_source": price.source if price else None,
            }
        )
    return out
