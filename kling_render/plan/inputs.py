"""Keys and plan pieces for generated inputs: stills, continuity frames and takes (pure).

Keys (computed by plan/keys.py, the one place keys are made):

- A clip (one take of a shot): ``{provider, model, params, take}`` (+ ``endpoint`` for a declared
  model), exactly as before; take ``k`` of a shot is that document with ``take: k``, so a shot's
  first take keeps the key it always had. ``pick`` is never in a key.
- A still: ``{kind: "still", provider, model, endpoint, params, take}``.
- ``params`` are the step's provider's wire body (its names and value forms, ``Offer``), so a
  shot has one key per provider, and WaveSpeed's keys are what they were before other providers.
- In ``params`` every input stands for its content: a local file ``sha256:<hex>``, a URL itself,
  a still's image ``sha256:<hex>`` of its bytes (as if it were a local file), a frame
  ``frame:<clip sha256>@<frame index>`` (the upstream's picked clip and the exact frame of it,
  :mod:`kling_render.media.frames`), another shot's whole clip (a clip to continue) the
  ``sha256:<hex>`` of that clip. A key is therefore known only once the inputs it names are
  made: until then the step waits, and the plan says it will (re-)render and counts its cost.

The plan names steps ``still:<id>`` (a still), ``<id>`` (a shot's first take) and ``<id>#<take>``
(another take). Edges run from the step that makes an input to each take of the shot that uses
it (a shot waits only for its own upstreams); a frame's (or a clip's) upstream is the upstream
shot's picked take. Each step renders on its own provider (``provider:`` of the shot or still,
else the project's): its key, cache and state are that provider's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol

from kling_render.catalog.catalog import Model, Offer, Price, still_cost, usd, wire_params
from kling_render.jobs import ClipRef, FrameRef, GeneratedRef, Job, MediaRef, StillRef, UnresolvedInputError
from kling_render.media.frames import ClipFrames, frame_index, frame_key_value
from kling_render.plan import keys
from kling_render.project.generated import STILL_PREFIX, Still, refs_in
from kling_render.project.project import Project, Shot

__all__ = [
    "ClipFacts",
    "Edge",
    "NothingMade",
    "Outputs",
    "Resolution",
    "StillFacts",
    "Unit",
    "Wait",
    "cut_keys",
    "edges",
    "frame_position",
    "order",
    "resolve",
    "step_names",
    "step_provider",
    "still_cost_of",
    "still_job",
    "still_key",
    "take_key",
    "take_name",
    "unit_keys",
    "wait_reason",
]


# -- keys ----------------------------------------------------------------------------------------


def offer_of(model: Model, provider: str) -> Offer:
    """How ``provider`` takes ``model``; ValueError when it does not offer it (validation and
    ``--provider`` check that first: this is a bug guard)."""
    offer = model.offer(provider)
    if offer is None:
        raise ValueError(f"{provider} does not offer {model.id}")
    return offer


def take_key(provider: str, shot: Shot, *, take: int | None = None, params: Mapping[str, Any] | None = None) -> str:
    """The key of take ``take`` (default: the first, ``shot.take``) of ``shot`` on ``provider``, with
    ``params`` by field name (default: the shot's own, which must hold no unresolved input), sent as
    that provider takes them."""
    offer = offer_of(shot.model, provider)
    return keys.clip_key(
        provider,
        shot.model.id,
        wire_params(offer, shot.params if params is None else params),
        shot.take if take is None else take,
        endpoint=None if shot.model.builtin else offer.endpoint,
    )


def still_key(provider: str, still: Still, *, params: Mapping[str, Any] | None = None) -> str:
    """The key of ``still`` on ``provider``: its kind, provider, model, endpoint, inputs and take."""
    offer = offer_of(still.model, provider)
    body = wire_params(offer, still.params if params is None else params)
    return keys.still_key(provider, still.model.id, offer.endpoint, body, still.take)


def step_provider(node: Still | Shot, provider: str) -> str:
    """Where a still or shot renders: its own ``provider:``, else the project's ``provider``."""
    return node.provider or provider


def take_name(shot: Shot, take: int) -> str:
    """How plans, status and reports name a take: the shot's id for its first take, ``id#<take>``
    for the others."""
    return shot.id if take == shot.take else f"{shot.id}#{take}"


def still_cost_of(still: Still, prices: Mapping[tuple[str, str], Price], provider: str) -> Fraction | None:
    """The exact price of one still on ``provider``, or None when neither the catalog nor the project
    has one (the free ``local`` provider shows the price of the form it reads: WaveSpeed's)."""
    offer = still.model.offer(provider)
    price = prices.get((offer.provider, still.model.id)) if offer is not None else None
    return None if price is None else still_cost(price)


# -- the graph -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """``downstream`` (a take ``intro#2`` or a still ``still:b``) needs what ``upstream`` makes
    (``still:a``, or the picked take of a shot), as its ``field``."""

    upstream: str
    downstream: str
    field: str
    ref: GeneratedRef


def _owners(project: Project) -> tuple[dict[str, Still], dict[str, Shot]]:
    return {s.id: s for s in project.stills}, {s.id: s for s in project.shots}


def _upstream_name(ref: GeneratedRef, shots: Mapping[str, Shot]) -> str:
    if isinstance(ref, StillRef):
        return STILL_PREFIX + ref.still
    upstream = shots.get(ref.shot)
    return ref.shot if upstream is None else take_name(upstream, upstream.picked_take)


def edges(project: Project) -> list[Edge]:
    """Every dependency of the project's steps, in project order (stills first)."""
    _, shots = _owners(project)
    out: list[Edge] = []
    for still in project.stills:
        for name, ref in refs_in(still.params):
            out.append(Edge(_upstream_name(ref, shots), still.step_id, name, ref))
    for shot in project.shots:
        for name, ref in refs_in(shot.params):
            for take in shot.take_numbers:
                out.append(Edge(_upstream_name(ref, shots), take_name(shot, take), name, ref))
    return out


def order(project: Project, wanted: Sequence[str] | None = None) -> list[Still | Shot]:
    """Stills and shots with every maker before its users (the project's own order otherwise):
    all of them, or the shots ``wanted`` (ids) and what they need.

    The project is acyclic (a cycle is a validation error); an edge to an id the project lacks
    is ignored."""
    nodes: dict[str, Still | Shot] = {s.step_id: s for s in project.stills}
    nodes.update({s.id: s for s in project.shots})
    placed: set[str] = set()
    out: list[Still | Shot] = []
    for start in nodes if wanted is None else wanted:
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            name, expanded = stack.pop()
            if name in placed or name not in nodes:
                continue
            if expanded:
                placed.add(name)
                out.append(nodes[name])
                continue
            stack.append((name, True))
            node = nodes[name]
            for _, ref in reversed(refs_in(node.params)):
                up = STILL_PREFIX + ref.still if isinstance(ref, StillRef) else ref.shot
                if up not in placed:
                    stack.append((up, False))
    return out


# -- resolving inputs against what is made --------------------------------------------------------


@dataclass(frozen=True)
class StillFacts:
    """A made image (a still, or a frame extracted from a clip): the sha256 of its bytes, and
    where it is (when local)."""

    sha256: str
    path: Path | None = None
    name: str | None = None  # the name it is uploaded under (its format's suffix)


@dataclass(frozen=True)
class ClipFacts:
    """A made clip: its sha256, its frames, where it is (when local), and its duration as the
    cache records it (what the cut counts a video-extend clip's new part from; None: its frames')."""

    sha256: str
    frames: ClipFrames
    path: Path | None = None
    duration: float | None = None

    @property
    def seconds(self) -> float:
        return self.duration if self.duration is not None else float(self.frames.count / self.frames.fps)


class Outputs(Protocol):
    """What is made already (the cache, the remote): None when it is not. A still and a clip by
    their provider and key; a frame by its key value (``frame:<clip sha256>@<index>``), once
    extracted as a PNG (a frame not extracted yet still keys its users: only the upload needs the file)."""

    def still(self, provider: str, key: str) -> StillFacts | None: ...

    def clip(self, provider: str, key: str) -> ClipFacts | None: ...

    def frame(self, key_value: str) -> StillFacts | None: ...


class NothingMade:
    """An :class:`Outputs` that knows of nothing (a fresh cache)."""

    def still(self, provider: str, key: str) -> StillFacts | None:
        return None

    def clip(self, provider: str, key: str) -> ClipFacts | None:
        return None

    def frame(self, key_value: str) -> StillFacts | None:
        return None


@dataclass(frozen=True)
class Wait:
    """An input of a step that is not made yet: the wire ``field``, the ``upstream`` step that
    makes it, and the reference as written."""

    field: str
    upstream: str
    ref: GeneratedRef


@dataclass(frozen=True)
class Unit:
    """One step to make: a still (``still:<id>``) or one take of a shot (``intro``, ``intro#2``).

    ``key`` and ``params`` (inputs made so far as MediaRef: a still's image by its sha256, a
    frame by its ``frame:`` key value, its PNG not yet extracted) are None while ``waits`` is not
    empty."""

    name: str
    kind: Literal["still", "clip"]
    key: str | None
    params: Mapping[str, Any] | None  # by field name (the provider's wire body: ``wire_params``)
    waits: tuple[Wait, ...] = ()
    take: int | None = None  # the take number of a clip
    picked: bool = True  # a clip: whether the cut uses this take
    pending_key: str | None = None  # while waiting: a stand-in, the same for steps that will share a key
    provider: str = "local"  # where it renders (its key, cache and state are that provider's)

    @property
    def some_key(self) -> str:
        """The key, or while waiting the stand-in (hex, never a real key: it names no cache entry)."""
        key = self.key if self.key is not None else self.pending_key
        assert key is not None
        return key


@dataclass
class Resolution:
    """Every step of a project, resolved as far as what is made allows, in dependency order."""

    units: dict[str, Unit] = field(default_factory=dict)
    made: dict[str, bool] = field(default_factory=dict)  # by unit name: its output was looked up and found

    def of_shot(self, shot: Shot) -> list[Unit]:
        return [self.units[take_name(shot, t)] for t in shot.take_numbers if take_name(shot, t) in self.units]


def resolve(project: Project, provider: str, outputs: Outputs, *, wanted: Sequence[str] | None = None) -> Resolution:
    """Each still and each take of each shot (or of the shots ``wanted`` and what they need) with
    its key when its inputs are made, else what it waits for; a frame's index comes from the made
    clip's frames and the upstream's trim. ``provider`` is the project's: a step with its own
    ``provider:`` renders there."""
    _, shots = _owners(project)
    res = Resolution()
    still_out: dict[str, StillFacts] = {}
    clip_out: dict[str, ClipFacts] = {}
    nodes = order(project, wanted)
    # Only what some step takes as an input is looked up (a clip's frames cost an ffmpeg run).
    inputs = {_upstream_name(ref, shots) for node in nodes for _, ref in refs_in(node.params)}
    for node in nodes:
        params, waits = _inputs(node.params, shots, still_out, clip_out, outputs)
        stand_in = _stand_in(params, shots, res) if waits else None
        where = step_provider(node, provider)
        if isinstance(node, Still):
            key = None if waits else still_key(where, node, params=params)
            facts = outputs.still(where, key) if key is not None and node.step_id in inputs else None
            if facts is not None:
                still_out[node.step_id] = facts
            pending = None if stand_in is None else _pending(still_key(where, node, params=stand_in))
            res.units[node.step_id] = Unit(node.step_id, "still", key, None if waits else params, waits,
                                           pending_key=pending, provider=where)  # fmt: skip
            res.made[node.step_id] = facts is not None
            continue
        for take in node.take_numbers:
            name = take_name(node, take)
            key = None if waits else take_key(where, node, take=take, params=params)
            clip = outputs.clip(where, key) if key is not None and name in inputs else None
            if clip is not None:
                clip_out[name] = clip
            picked = take == node.picked_take
            pending = None if stand_in is None else _pending(take_key(where, node, take=take, params=stand_in))
            res.units[name] = Unit(name, "clip", key, None if waits else params, waits, take, picked, pending,
                                   where)  # fmt: skip
            res.made[name] = clip is not None
    return res


def _stand_in(params: Mapping[str, Any], shots: Mapping[str, Shot], res: Resolution) -> dict[str, Any]:
    """``params`` with each input not made yet standing for the step that makes it (its key or
    stand-in, and for a frame the position and the upstream's trim): steps that will have one key
    (a shot every row shares) have one stand-in, so the plan prices them once."""

    def one(value: Any) -> Any:
        if not isinstance(value, StillRef | FrameRef | ClipRef):
            return value
        upstream = res.units.get(_upstream_name(value, shots))
        maker = "?" if upstream is None else upstream.some_key
        if isinstance(value, StillRef | ClipRef):
            return MediaRef(key=f"after:{maker}")
        shot = shots.get(value.shot)
        trim = "" if shot is None else f"{shot.trim.start!r}-{shot.trim.end!r}"
        return MediaRef(key=f"after:{maker}@{value.frame!r}@{trim}")

    return {k: [one(v) for v in value] if isinstance(value, list) else one(value) for k, value in params.items()}


def _pending(key: str) -> str:
    """A stand-in key: the digest of a key it can never equal."""
    return keys.doc_key({"pending": key})


def step_names(project: Project) -> list[str]:
    """Every paid step's name (each take of each shot, each still): what the lock may hold."""
    return [take_name(s, t) for s in project.shots for t in s.take_numbers] + [s.step_id for s in project.stills]


def unit_keys(project: Project, provider: str, outputs: Outputs | None = None) -> dict[str, str]:
    """Every step's key, or its stand-in while an input is not made (by ``outputs``: without it,
    nothing is)."""
    res = resolve(project, provider, outputs or NothingMade())
    return {name: unit.some_key for name, unit in res.units.items()}


def cut_keys(project: Project, provider: str, outputs: Outputs | None = None) -> dict[str, str]:
    """Each shot's picked take's key (its stand-in while waiting), by shot id: what the cut uses.
    A shot that takes a frame of another's clip has its key only once that clip is made (``outputs``)."""
    return {sid: unit.some_key for sid, unit in cut_units(project, provider, outputs).items()}


def cut_units(project: Project, provider: str, outputs: Outputs | None = None) -> dict[str, Unit]:
    """Each shot's picked take (its provider, and its key once its inputs are made), by shot id."""
    res = resolve(project, provider, outputs or NothingMade())
    return {shot.id: res.units[take_name(shot, shot.picked_take)] for shot in project.shots}


def _inputs(
    params: Mapping[str, Any],
    shots: Mapping[str, Shot],
    still_out: Mapping[str, StillFacts],
    clip_out: Mapping[str, ClipFacts],
    outputs: Outputs,
) -> tuple[dict[str, Any], tuple[Wait, ...]]:
    """``params`` with each generated input made so far replaced by its MediaRef, and the waits."""
    waits: list[Wait] = []

    def one(name: str, value: Any) -> Any:
        if isinstance(value, StillRef):
            upstream = STILL_PREFIX + value.still
            facts = still_out.get(upstream)
            if facts is None:
                waits.append(Wait(name, upstream, value))
                return value
            return MediaRef(path=facts.path, sha256=facts.sha256, filename=facts.name)
        if isinstance(value, ClipRef):
            upstream = _upstream_name(value, shots)
            made = clip_out.get(upstream)
            if made is None or made.path is None:
                waits.append(Wait(name, upstream, value))
                return value
            return MediaRef(path=made.path, sha256=made.sha256)  # keyed by the clip's bytes, as a local file
        if isinstance(value, FrameRef):
            shot = shots.get(value.shot)
            upstream = _upstream_name(value, shots)
            clip = clip_out.get(upstream)
            if shot is None or clip is None:
                waits.append(Wait(name, upstream, value))
                return value
            key_value = frame_key_value(clip.sha256, frame_position(value, shot, clip))
            png = outputs.frame(key_value)
            if png is None:
                return MediaRef(key=key_value, source=clip.path)  # extracted before it is sent (run/frames.py)
            return MediaRef(path=png.path, sha256=png.sha256, key=key_value, filename=png.name)
        return value

    out = {name: [one(name, v) for v in value] if isinstance(value, list) else one(name, value)
           for name, value in params.items()}  # fmt: skip
    return out, tuple(waits)


def frame_position(ref: FrameRef, upstream: Shot, clip: ClipFacts) -> int:
    """The index, in the upstream's ``clip``, of the frame ``ref`` takes: within the range the cut
    keeps (its trim, counted from the start of the shot's own part: a video-extend clip's new part)."""
    offset = upstream.new_part_offset(clip.seconds)
    end = upstream.trim.end
    return frame_index(ref.frame, offset + upstream.trim.start, None if end is None else offset + end, clip.frames)


def still_job(still: Still, unit: Unit, cost: Fraction) -> Job:
    """The Job that makes ``still`` (kind ``still``: one image, no duration), with the inputs of
    ``unit`` (its resolution), which must not wait."""
    if unit.key is None or unit.params is None:
        raise UnresolvedInputError(f"{unit.name} waits for {', '.join(w.upstream for w in unit.waits)}")
    offer = offer_of(still.model, unit.provider)
    return Job(
        shot_id=still.step_id,
        model=still.model.id,
        endpoint=offer.endpoint,
        params=wire_params(offer, unit.params),
        duration=0,
        sound=False,
        aspect_ratio=None,
        key=unit.key,
        cost_usd=usd(cost),
        index=still.index,
        prompt=still.prompt,
        kind="still",
        provider=unit.provider,
    )


# -- what the plan says --------------------------------------------------------------------------

_FIELD_WORDS = {"image": "start", "end_image": "end", "last_image": "end"}


def wait_reason(waits: Sequence[Wait], changes: Iterable[str] = ()) -> str:
    """Why a step will (re-)render without a known key: ``will re-render: its start frame comes
    from intro, which changes``. ``changes`` names the upstreams that were made before and change
    now; any other upstream "is not made yet"."""
    changing = set(changes)
    parts = []
    for wait in dict.fromkeys(waits):
        noun = "frame" if isinstance(wait.ref, FrameRef) else "image"
        where = _FIELD_WORDS.get(wait.field)
        what = f"its {where} {noun}" if where else f"a reference {noun} ({wait.field})"
        if isinstance(wait.ref, ClipRef):
            what = "the clip it continues" if wait.field == "video" else f"an input clip ({wait.field})"
        state = "which changes" if wait.upstream in changing else "which is not made yet"
        parts.append(f"{what} comes from {wait.upstream}, {state}")
    verb = "will re-render" if changing else "will render"
    return f"{verb}: {'; '.join(parts)}"
