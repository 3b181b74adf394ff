"""Pure planning: shot keys, jobs, prices, cache status and the diff against the lock file."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from kling_render.catalog.catalog import usd
from kling_render.errors import Issue, ProjectError, UsageError
from kling_render.jobs import Job, MediaRef
from kling_render.plan import keys
from kling_render.plan.keys import clip_key
from kling_render.project.project import Project, Shot, cost_of, missing_price
from kling_render.suggest import did_you_mean, with_hint

if TYPE_CHECKING:
    from kling_render.plan.rows import RowsPlan

PLAN_VERSION = 1


def shot_key(provider: str, shot: Shot) -> str:
    """A shot's key on ``provider`` (plan/keys.py :func:`~kling_render.plan.keys.clip_key`) over the
    shot's wire body for that provider (its names and value forms), so one shot has one key per
    provider and WaveSpeed's keys are what they were before fal. A declared model adds the
    provider's endpoint. Every input clip of another shot must be resolved first (:func:`resolve_clips`)."""
    endpoint = None if shot.model.builtin else shot.offer(provider).endpoint
    return clip_key(provider, shot.model.id, shot.wire(provider), shot.take, endpoint=endpoint)


def shot_provider(shot: Shot, project_provider: str, override: str | None = None) -> str:
    """Where a shot renders: ``--provider`` for every shot, else the shot's own ``provider:``, else the project's."""
    return override or shot.provider or project_provider


ClipLookup = Callable[[str, str], "tuple[Any, str] | None"]
"""(provider, key) -> (path, sha256) of a cached clip, or None."""


def resolve_clips(
    shot: Shot, clip_of: ClipLookup, key_of: Callable[[str], tuple[str, str] | None]
) -> tuple[Shot, list[str]]:
    """``shot`` with each ``{from: SHOT}`` input replaced by that shot's cached clip (path and sha256),
    and the ids of the shots whose clips do not exist yet. ``key_of`` gives an upstream shot's
    (provider, key), None when it has no key yet (it waits itself)."""
    waits: list[str] = []

    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if not isinstance(value, MediaRef) or value.from_shot is None or value.resolved:
            return value
        upstream = shot.upstream(value.from_shot)
        found = key_of(upstream)
        clip = clip_of(*found) if found is not None else None
        if clip is None:
            waits.append(upstream)
            return value
        return MediaRef(path=clip[0], sha256=clip[1], from_shot=value.from_shot)

    if not shot.clip_refs():
        return shot, []
    params = {name: resolve(value) for name, value in shot.params.items()}
    return replace(shot, params=params), waits


def provider_issues(project: Project, shots: Sequence[Shot], override: str) -> list[Issue]:
    """What ``--provider`` cannot render of these shots, located at each shot (the project was
    checked against its own providers when it was loaded)."""
    from kling_render.project.rules import provider_problems

    issues = []
    for shot in shots:
        given = {name: shot.params[name] for name in shot.given if name in shot.params}
        for key, message in provider_problems(shot.model, override, given, shot.own):
            where = f"shots[{shot.index}].{key}"
            issues.append(Issue(project.display, shot.line, where, f"{message} (--provider {override})"))
    return issues


CHANGE_KINDS = ("added", "changed", "re-stitch", "unchanged")  # a shot's change against the lock file


@dataclass(frozen=True)
class PlannedShot:
    shot: Shot
    job: Job
    cost: Fraction
    status: str  # "cached" | "render"
    change: str  # one of CHANGE_KINDS: "re-stitch" = same clip, other cut settings (trim, transition)
    changed_fields: tuple[str, ...] = ()  # the wire fields that changed, or the cut settings for "re-stitch"
    old_prompt: str | None = None  # the prompt the lock recorded, when the prompt changed
    waits_for: tuple[str, ...] = ()  # shots whose clips are this shot's inputs and do not exist yet

    @property
    def provider(self) -> str:
        return self.job.provider

    @property
    def id(self) -> str:
        return self.shot.id

    @property
    def change_label(self) -> str:
        """``changed (prompt)``, ``re-stitch: trim``, ``added``: the plan's "vs lock" column."""
        if self.change == "changed" and self.changed_fields:
            return f"changed ({', '.join(self.changed_fields)})"
        if self.change == "re-stitch" and self.changed_fields:
            return f"re-stitch: {', '.join(self.changed_fields)}"
        return self.change

    @property
    def prompt_change(self) -> tuple[str, str] | None:
        """(old, new) rendered prompt when it changed since the lock."""
        if self.old_prompt is None or self.old_prompt == self.shot.prompt:
            return None
        return self.old_prompt, self.shot.prompt


@dataclass(frozen=True)
class Plan:
    project: Project
    provider: str
    shots: list[PlannedShot]
    removed: list[str]  # shot ids in the lock that the project no longer has
    lock_entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    selected: list[str] | None = None  # the --only selection, None for every shot
    project_sha256: str = ""  # the project file as planned: `render --plan` checks it
    restitch: list[str] = field(default_factory=list)  # project-wide cut edits: "order", "output", "audio"
    budget_usd: float | None = None
    charges: bool = True  # False for a free provider (local): the budget does not apply
    rows: RowsPlan | None = None  # a rows: project's plan by row (plan_rows.py)
    remote: str | None = None  # the shared remote whose clips count as cached (its URL), if any

    @property
    def over_budget(self) -> bool:
        """True when `render` would refuse to start: what is to render costs more than the budget."""
        return self.charges and self.budget_usd is not None and self.to_render_cost > _exact_usd(self.budget_usd)

    def change_counts(self) -> dict[str, int]:
        """Shots per change kind (the same words as each row's "vs lock" column), removed included."""
        counts = {kind: 0 for kind in (*CHANGE_KINDS, "removed")}
        for p in self.shots:
            counts[p.change] += 1
        counts["removed"] = len(self.removed)
        return counts

    @property
    def total_cost(self) -> Fraction:
        """What every shot costs, each distinct clip once: shots with one key (the shared shots of a
        rows: project, identical shots) are generated once and used by each."""
        return sum((p.cost for p in _distinct(self.shots)), Fraction(0))

    @property
    def to_render(self) -> list[PlannedShot]:
        return [p for p in self.shots if p.status == "render"]

    @property
    def to_render_cost(self) -> Fraction:
        return sum((p.cost for p in _distinct(self.to_render)), Fraction(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "project": self.project.name,
            "provider": self.provider,
            "shots": [
                {
                    "id": p.id,
                    "model": p.shot.model.id,
                    "duration": p.shot.duration,
                    "sound": p.shot.sound,
                    "cost_usd": usd(p.cost),
                    "status": p.status,
                    "provider": p.provider,
                    **({"waits_for": list(p.waits_for)} if p.waits_for else {}),
                    "change": p.change,
                    "changed_fields": list(p.changed_fields),
                    "key": p.job.key,
                    **({"row": p.shot.row, "shot": p.shot.name} if p.shot.row is not None else {}),
                    **({"prompt_change": dict(zip(("old", "new"), pc, strict=True))}
                       if (pc := p.prompt_change) else {}),
                }
                for p in self.shots
            ],
            "removed": self.removed,
            "restitch": self.restitch,
            "counts": self.change_counts(),
            "total_cost_usd": usd(self.total_cost),
            "to_render_cost_usd": usd(self.to_render_cost),
            "budget_usd": self.budget_usd,
            "over_budget": self.over_budget,
            "selected": self.selected,
            "project_sha256": self.project_sha256,
            "lock_keys": {sid: e.get("key") for sid, e in sorted(self.lock_entries.items())},
            "remote": self.remote,
            **({"rows": self.rows.to_json()} if self.rows is not None else {}),
        }


def _distinct(shots: Sequence[PlannedShot]) -> list[PlannedShot]:
    """The first shot of each key."""
    return list({p.job.key: p for p in reversed(shots)}.values())


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
    override: str | None = None,
    clip_of: ClipLookup | None = None,
) -> Plan:
    """Resolve every selected shot into a Job with its key, price, cache status and lock change.

    ``provider`` is the project's (or ``--provider``'s); a shot with its own ``provider:`` renders
    there unless ``override`` (``--provider``) says otherwise for every shot. ``is_cached(key,
    provider)`` tells a cached clip;
    ``clip_of(provider, key)`` finds the clip another shot continues (``video: {from: SHOT}``).
    ``cut_settings`` gives a shot's cut settings as the lock records them; with ``lock_cut`` (the
    lock's ``cut`` section) and ``cut_now`` (the same for the project as it is), edits that only
    re-stitch are told apart from unchanged shots."""
    lock = lock or {}
    selected = select_shots(project, only)
    if override is not None:
        issues = provider_issues(project, selected, override)
        if issues:
            raise ProjectError(issues)
    planned: list[PlannedShot] = []
    unpriced: list[tuple[Shot, str]] = []
    keys: dict[str, tuple[str, str]] = {}  # shot id -> (provider, key): for the shots that continue it
    lookup = clip_of or (lambda provider, key: None)
    chosen = {s.id for s in selected}
    for shot in _upstream_first(project, selected):
        where = shot_provider(shot, provider, override)
        if shot.id not in chosen:  # an input of a selected shot: only its key is needed
            shot, waits = resolve_clips(shot, lookup, keys.get)
            if not waits and shot.model.offer(where) is not None:
                keys[shot.id] = (where, shot_key(where, shot))
            continue
        cost = cost_of(shot, project.prices, where)
        if cost is None:
            unpriced.append((shot, where))
            continue
        shot, waits = resolve_clips(shot, lookup, keys.get)
        key = shot_key(where, shot) if not waits else _waiting_key(where, shot, waits, keys)
        if not waits:
            keys[shot.id] = (where, key)
        offer = shot.offer(where)
        job = Job(
            shot_id=shot.id,
            model=shot.model.id,
            endpoint=offer.endpoint,
            params=shot.wire(where) if not waits else {},
            duration=shot.duration,
            sound=shot.sound,
            aspect_ratio=shot.aspect_ratio,
            key=key,
            cost_usd=usd(cost),
            index=shot.index,
            prompt=shot.prompt,
            extra={"fields": field_digests(shot, where)} if not waits else {},
            provider=where,
            extends=shot.model.extends is not None,
        )
        entry = lock.get(shot.id)
        change, fields = _change(entry, key, shot, where) if not waits else ("changed" if entry else "added", ())
        if change == "unchanged" and entry is not None and cut_settings is not None:
            fields = _cut_change(entry, cut_settings(shot))
            change = "re-stitch" if fields else change
        old_prompt = entry.get("prompt") if entry is not None and change == "changed" else None
        cached = not waits and is_cached(key, where)
        planned.append(
            PlannedShot(
                shot, job, cost, "cached" if cached else "render", change, fields,
                old_prompt if isinstance(old_prompt, str) else None, tuple(waits),
            )
        )  # fmt: skip
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
    order = {s.id: n for n, s in enumerate(selected)}
    planned.sort(key=lambda p: order[p.id])
    removed = sorted(set(lock) - {s.id for s in project.shots})
    restitch = project_cut_change(lock_cut, cut_now) if lock_cut is not None and cut_now is not None else []
    return Plan(project, provider, planned, removed, lock, list(only) if only else None, restitch=restitch)


def _upstream_first(project: Project, shots: Sequence[Shot]) -> list[Shot]:
    """The shots with each one after the shots whose clips it continues (the file's order otherwise),
    and before them the shots outside the selection whose clips are inputs (for their keys)."""
    if not any(s.clip_refs() for s in project.shots):
        return list(shots)
    by_id = {s.id: s for s in project.shots}
    out: list[Shot] = []
    done: set[str] = set()

    def visit(shot: Shot, trail: frozenset[str]) -> None:
        if shot.id in done or shot.id in trail:
            return
        for ref in shot.clip_refs():
            upstream = by_id.get(shot.upstream(ref.from_shot or ""))
            if upstream is not None:
                visit(upstream, trail | {shot.id})
        done.add(shot.id)
        out.append(shot)

    for shot in shots:
        visit(shot, frozenset())
    return out


def _waiting_key(provider: str, shot: Shot, waits: list[str], known: Mapping[str, tuple[str, str]]) -> str:
    """A stand-in key for a shot whose input clip is not made yet: stable, never a cache key (its
    real key needs that clip's digest); the render plans the shot again once the clip exists."""
    doc = {"provider": provider, "model": shot.model.id, "waits_for": sorted(waits), "take": shot.take,
           "upstream": sorted(str(known.get(w)) for w in waits)}  # fmt: skip
    return "waits-" + keys.doc_key(doc)[:58]


def _cut_change(entry: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[str, ...]:
    """The cut settings (trim, transition) that differ from the last cut's; none when it recorded none."""
    return tuple(k for k in ("trim", "transition") if k in entry and k in now and entry[k] != now[k])


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


def _exact_usd(value: float) -> Fraction:
    return Fraction(repr(float(value)))


def field_digests(shot: Shot, provider: str) -> dict[str, str]:
    """A short digest per wire field of ``shot`` on ``provider`` (plan/keys.py), kept in the lock."""
    endpoint = None if shot.model.builtin else shot.offer(provider).endpoint
    return keys.field_digests(shot.wire(provider), shot.take, endpoint=endpoint)


def _change(
    entry: Mapping[str, Any] | None, key: str, shot: Shot, provider: str
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
        new = field_digests(shot, provider)
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
    planned = {p.id: p.job.key for p in current.shots}
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
    saved_keys = {str(s.get("id")): s.get("key") for s in saved.get("shots", []) if isinstance(s, Mapping)}
    now_keys: dict[str, Any] = {p.id: p.job.key for p in current.shots}
    if saved_keys != now_keys:
        differ = sorted(k for k in set(saved_keys) | set(now_keys) if saved_keys.get(k) != now_keys.get(k))
        reasons.append("shots differ from the plan: " + ", ".join(str(k) for k in differ))
    return reasons


def clip_keys(project: Project, provider: str, clip_of: ClipLookup) -> dict[str, ShotKey]:
    """Each shot's provider and clip key, without prices (a stitch, a status): no key for a shot whose
    input clip (``video: {from: SHOT}``) does not exist yet, or whose provider does not offer its model."""
    keys: dict[str, tuple[str, str]] = {}
    out: dict[str, ShotKey] = {}
    for shot in _upstream_first(project, project.shots):
        where = shot_provider(shot, provider)
        resolved, waits = resolve_clips(shot, clip_of, keys.get)
        key = shot_key(where, resolved) if not waits and shot.model.offer(where) is not None else None
        if key is not None:
            keys[shot.id] = (where, key)
        out[shot.id] = ShotKey(where, key, resolved)
    return out


@dataclass(frozen=True)
class ShotKey:
    provider: str
    key: str | None  # None: the shot has no clip key yet (its input clip is not made)
    shot: Shot  # with its input clips resolved
