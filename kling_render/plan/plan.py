"""Pure planning: shot keys, jobs, prices, cache status and the diff against the lock file."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from kling_render.catalog.catalog import usd, wire_params
from kling_render.errors import Issue, ProjectError, UsageError
from kling_render.jobs import Job
from kling_render.plan import keys
from kling_render.plan.inputs import (
    NothingMade,
    Outputs,
    Resolution,
    Unit,
    offer_of,
    resolve,
    step_provider,
    still_cost_of,
    still_job,
    take_key,
    take_name,
    wait_reason,
)
from kling_render.plan.model import PLAN_VERSION, Plan, PlannedShot, PlannedStill
from kling_render.project.generated import Still
from kling_render.project.project import Project, Shot, cost_of, missing_price
from kling_render.suggest import did_you_mean, with_hint


def shot_key(provider: str, shot: Shot, *, take: int | None = None) -> str:
    """A shot's key on ``provider`` (plan/keys.py :func:`~kling_render.plan.keys.clip_key`): of its
    take ``take`` (default its first); see ``plan.inputs`` for keys with generated inputs."""
    return take_key(provider, shot, take=take)


def provider_issues(project: Project, shots: Sequence[Shot], override: str) -> list[Issue]:
    """What ``--provider`` cannot render of these shots (and of the project's stills), located at
    each (the project was checked against its own providers when it was loaded)."""
    from kling_render.project.rules import provider_problems

    issues = []
    for shot in shots:
        given = {name: shot.params[name] for name in shot.given if name in shot.params}
        for key, message in provider_problems(shot.model, override, given, shot.own):
            where = f"shots[{shot.index}].{key}"
            issues.append(Issue(project.display, shot.line, where, f"{message} (--provider {override})"))
    for still in project.stills:
        for key, message in provider_problems(still.model, override, still.params, frozenset(still.params)):
            where = f"stills[{still.index}].{key}"
            issues.append(Issue(project.display, still.line, where, f"{message} (--provider {override})"))
    return issues


def select_shots(project: Project, only: Sequence[str] | None) -> list[Shot]:
    """The shots named by ``--only`` (all when None); an unknown id is a usage error."""
    if not only:
        return list(project.shots)
    known = {s.id for s in project.shots}
    unknown = [i for i in only if i not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known)
        raise UsageError(with_hint(f"--only: no shot named {', '.join(unknown)} in {project.display}", hint))
    wanted = set(only)
    return [s for s in project.shots if s.id in wanted]


def build_plan(
    project: Project,
    provider: str,
    *,
    is_cached: Callable[[str, str], bool],
    lock: Mapping[str, Mapping[str, Any]] | None = None,
    only: Sequence[str] | None = None,
    cut_settings: Callable[[Shot], Mapping[str, Any]] | None = None,
    lock_cut: Mapping[str, Any] | None = None,
    cut_now: Mapping[str, Any] | None = None,
    outputs: Outputs | None = None,
) -> Plan:
    """Resolve every take of every selected shot (and the stills they need) into a Job with its
    key, price, cache status and lock change.

    ``provider`` is the project's (``--provider`` moves every shot there first: ``on_provider``);
    a shot or still with its own ``provider:`` renders there. ``is_cached(key, provider)`` tells a
    cached clip. ``cut_settings`` gives a shot's cut settings as the lock records them; with
    ``lock_cut`` (the lock's ``cut`` section) and ``cut_now`` (the same for the project as it is),
    edits that only re-stitch are told apart from unchanged shots. ``outputs`` tells which stills
    and clips are made (their digests key the steps that use them); without it none is."""
    lock = lock or {}
    selected = select_shots(project, only)
    wanted = [s.id for s in selected] if only else None  # every still too, used or not, without --only
    res = resolve(project, provider, outputs or NothingMade(), wanted=wanted)
    planned: list[PlannedShot] = []
    unpriced: list[tuple[Shot, str]] = []
    for shot in selected:
        where = step_provider(shot, provider)
        cost = cost_of(shot, project.prices, where)
        if cost is None:
            unpriced.append((shot, where))
            continue
        for unit in res.of_shot(shot):
            planned.append(_planned_take(shot, unit, cost, is_cached, lock, cut_settings))
    stills = _planned_stills(project, res, is_cached, lock)
    if unpriced:
        raise ProjectError(
            [
                Issue(
                    project.display,
                    s.line,
                    f"shots[{s.index}].model",
                    missing_price(s, project.prices, where) or f"no price for {s.model.id}",
                )
                for s, where in unpriced
            ]
        )
    names = {take_name(s, t) for s in project.shots for t in s.take_numbers} | {s.step_id for s in project.stills}
    removed = sorted(set(lock) - names)
    restitch = project_cut_change(lock_cut, cut_now) if lock_cut is not None and cut_now is not None else []
    return Plan(
        project, provider, planned, removed, lock, list(only) if only else None, restitch=restitch, stills=stills
    )


def _planned_take(
    shot: Shot,
    unit: Unit,
    cost: Fraction,
    is_cached: Callable[[str, str], bool],
    lock: Mapping[str, Mapping[str, Any]],
    cut_settings: Callable[[Shot], Mapping[str, Any]] | None,
) -> PlannedShot:
    """One take of ``shot`` in the plan: keyed when its inputs are made, else waiting for them."""
    params = unit.params if unit.params is not None else shot.params
    key = unit.some_key
    take = unit.take if unit.take is not None else shot.take
    job = take_job(shot, unit, cost)
    entry = lock.get(unit.name)
    reason = None
    if unit.key is None:
        change = "changed" if entry is not None else "added"
        fields = tuple(dict.fromkeys(w.field for w in unit.waits)) if entry is not None else ()
        reason = wait_reason(unit.waits, changes=[w.upstream for w in unit.waits if w.upstream in lock])
    else:
        change, fields = _change(entry, key, shot, unit.provider, params, take)
        if change == "unchanged" and entry is not None and cut_settings is not None and unit.picked:
            fields = _cut_change(entry, cut_settings(shot))
            change = "re-stitch" if fields else change
    old_prompt = entry.get("prompt") if entry is not None and change == "changed" else None
    status = "cached" if unit.key is not None and is_cached(key, unit.provider) else "render"
    return PlannedShot(
        shot, job, cost, status, change, fields, old_prompt if isinstance(old_prompt, str) else None,
        take=take, waits=unit.waits, reason=reason,
    )  # fmt: skip


def take_job(shot: Shot, unit: Unit, cost: Fraction) -> Job:
    """The Job that makes one take of ``shot`` (``unit``, its resolution) on the unit's provider, its
    params in that provider's form: its key is the unit's (a stand-in while an input is not made:
    such a job is planned, never sent)."""
    params = unit.params if unit.params is not None else shot.params
    take = unit.take if unit.take is not None else shot.take
    offer = offer_of(shot.model, unit.provider)
    return Job(
        shot_id=unit.name,
        model=shot.model.id,
        endpoint=offer.endpoint,
        params=wire_params(offer, params),
        duration=shot.duration,
        sound=shot.sound,
        aspect_ratio=shot.aspect_ratio,
        key=unit.some_key,
        cost_usd=usd(cost),
        index=shot.index,
        prompt=shot.prompt,
        extra={"fields": field_digests(shot, unit.provider, params, take=take)},
        provider=unit.provider,
        extends=shot.model.extends is not None,
    )


def _planned_stills(
    project: Project,
    res: Resolution,
    is_cached: Callable[[str, str], bool],
    lock: Mapping[str, Mapping[str, Any]],
) -> list[PlannedStill]:
    """The stills the resolution reached (those the selected shots need), priced per image on
    each still's provider."""
    out: list[PlannedStill] = []
    unpriced: list[tuple[Still, str]] = []
    for still in project.stills:
        unit = res.units.get(still.step_id)
        if unit is None:
            continue
        cost = still_cost_of(still, project.prices, unit.provider)
        if cost is None:
            unpriced.append((still, unit.provider))
            continue
        entry = lock.get(still.step_id)
        if unit.key is None:
            change = "changed" if entry is not None else "added"
            reason = wait_reason(unit.waits, changes=[w.upstream for w in unit.waits if w.upstream in lock])
            out.append(PlannedStill(still, None, cost, "render", change, unit.waits, reason, provider=unit.provider))
            continue
        change = "added" if entry is None else "unchanged" if entry.get("key") == unit.key else "changed"
        status = "cached" if res.made.get(still.step_id) or is_cached(unit.key, unit.provider) else "render"
        job = still_job(still, unit, cost)
        out.append(PlannedStill(still, unit.key, cost, status, change, job=job, provider=unit.provider))
    if unpriced:
        raise ProjectError(
            [Issue(project.display, s.line, f"stills[{s.index}].model",
                   f"no price for {s.model.id}{'' if p in ('wavespeed', 'local') else f' on {p}'}: "
                   "add its per_image under pricing:") for s, p in unpriced]
        )  # fmt: skip
    return out


def _cut_change(entry: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[str, ...]:
    """The cut settings (trim, transition, the pick of a shot with takes) that differ from the last
    cut's; none when it recorded none."""
    return tuple(k for k in ("trim", "transition", "pick") if k in entry and k in now and entry[k] != now[k])


def project_cut_change(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Project-wide cut edits since the last cut: shots reordered, output or audio settings."""
    changed = []
    old_order, new_order = then.get("order"), now.get("order")
    if isinstance(old_order, list) and isinstance(new_order, list):
        common = set(old_order) & set(new_order)
        if [s for s in old_order if s in common] != [s for s in new_order if s in common]:
            changed.append("order")
    changed += [k for k in ("output", "audio") if k in then and then.get(k) != now.get(k)]
    return changed


def field_digests(
    shot: Shot, provider: str, params: Mapping[str, Any] | None = None, *, take: int | None = None
) -> dict[str, str]:
    """A short digest per wire field of ``shot`` on ``provider`` (plan/keys.py), kept in the lock
    (a field whose generated input is not made yet has none)."""
    offer = offer_of(shot.model, provider)
    return keys.field_digests(
        wire_params(offer, shot.params if params is None else params),
        shot.take if take is None else take,
        endpoint=None if shot.model.builtin else offer.endpoint,
    )


def _change(
    entry: Mapping[str, Any] | None,
    key: str,
    shot: Shot,
    provider: str,
    params: Mapping[str, Any] | None = None,
    take: int | None = None,
) -> tuple[str, tuple[str, ...]]:
    if entry is None:
        return "added", ()
    if entry.get("key") == key:
        return "unchanged", ()
    fields: list[str] = []
    if entry.get("model") != shot.model.id:
        fields.append("model")
    if entry.get("provider") not in (None, provider):
        fields.append("provider")
    old = entry.get("fields")
    if isinstance(old, Mapping):
        new = field_digests(shot, provider, params, take=take)
        fields.extend(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))
    return "changed", tuple(dict.fromkeys(fields))


def stale_reasons(saved: Mapping[str, Any], current: Plan) -> list[str]:
    """Why a saved (reviewed) plan no longer matches what would render now; empty when it does."""
    reasons = []
    if saved.get("version") != PLAN_VERSION:
        reasons.append(f"the plan file has version {saved.get('version')!r}, expected {PLAN_VERSION}")
    if saved.get("project_sha256") != current.project_sha256:
        reasons.append(f"{current.project.display} changed since the plan was made")
    # The lock may have moved only by rendering this plan's own shots (a resumed run); any other
    # change (a merge, another render) means the reviewed costs and changes no longer hold.
    planned = {p.id: p.key for p in current.shots}
    then = saved.get("lock_keys") or {}
    now = {sid: e.get("key") for sid, e in current.lock_entries.items()}
    moved = sorted(
        sid
        for sid in set(then) | set(now)
        if then.get(sid) != now.get(sid) and now.get(sid) != planned.get(sid)
    )
    if moved:
        reasons.append(
            f"{current.project.lock_path.name} changed since the plan was made ({', '.join(moved)})"
        )
    saved_shots = [s for s in saved.get("shots", []) if isinstance(s, Mapping)]
    saved_keys = {str(s.get("id")): s.get("key") for s in saved_shots}
    # A step that waited for an input when the plan was made gets its key once that input is made
    # (by this plan's render): only another key than the one it got, or a new step, differs.
    waited = {str(s.get("id")) for s in saved_shots if s.get("key") is None and s.get("waits_for")}
    now_keys: dict[str, Any] = {p.id: p.key for p in current.shots}
    differ = sorted(
        k
        for k in set(saved_keys) | set(now_keys)
        if saved_keys.get(k) != now_keys.get(k) and not (k in waited and k in now_keys)
    )
    if differ:
        reasons.append("shots differ from the plan: " + ", ".join(str(k) for k in differ))
    return reasons
