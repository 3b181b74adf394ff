"""Generated inputs: stills (images an image model makes) and the image fields that take one
(``{still: ID}``) or a frame of another shot's clip (``{from: SHOT, frame: first|last|SECONDS}``),
and the video fields that take another shot's whole clip (``{from: SHOT}``: a clip to continue).

Pure: the resolver (``project.py``) parses each field and records where every generated input
is used (:class:`RefSite`); :func:`check_graph` then finds, all at once and each at its line, a
still or shot that does not exist, a frame outside the upstream shot's kept range, and a cycle.
A shot's takes and pick are checked where the shot is resolved.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kling_render.catalog.catalog import Model
from kling_render.jobs import ClipRef, FramePos, FrameRef, GeneratedRef, StillRef

DocPath = tuple[str | int, ...]
STILL_PREFIX = "still:"  # a still's step id, and how plans and reports name it: ``still:hero-frame``
MAX_TAKES = 8


@dataclass(frozen=True)
class Still:
    """One resolved still: its image model, templates rendered, wire parameters built (media as
    MediaRef, generated inputs as StillRef / FrameRef)."""

    id: str  # ``<row>/<id>`` in a rows: project
    index: int
    model: Model
    params: dict[str, Any]  # inputs by field name (``wire_params`` makes a provider's body)
    prompt: str
    take: int
    line: int
    row: str | None = None
    provider: str | None = None  # the still's own ``provider:`` (None: the project's)

    @property
    def name(self) -> str:
        """The still's id in the project file (``id`` without the row)."""
        return self.id if self.row is None else self.id[len(self.row) + 1 :]

    @property
    def step_id(self) -> str:
        """``still:<id>``: how the plan, the graph and the report name it."""
        return STILL_PREFIX + self.id


@dataclass(frozen=True)
class RefSite:
    """Where a generated input is used: by ``owner`` (a shot id or ``still:<id>``), at ``path``
    in the document (the mapping ``{still: ...}`` or ``{from: ..., frame: ...}``)."""

    owner: str
    path: DocPath
    ref: GeneratedRef
    line_path: DocPath | None = None  # where the line comes from when not ``path`` (a default)
    model: Model | None = None  # the model of the shot or still that takes the input (its image limits)


class KeptRange(Protocol):
    """What the frame check needs of an upstream shot."""

    @property
    def kept_duration(self) -> float: ...


def parse_ref(value: Mapping[str, Any]) -> GeneratedRef | None:
    """``{still: ID}``, ``{from: SHOT, frame: POS}`` or ``{from: SHOT}`` (a video field's: the whole
    clip; already schema-checked) as a ref; None otherwise."""
    if "still" in value and isinstance(value["still"], str):
        return StillRef(value["still"])
    if "from" in value and isinstance(value["from"], str):
        return FrameRef(value["from"], _frame(value["frame"])) if "frame" in value else ClipRef(value["from"])
    return None


def _frame(value: Any) -> FramePos:
    if isinstance(value, str):
        return value
    return float(value)


def refs_in(params: Mapping[str, Any]) -> list[tuple[str, GeneratedRef]]:
    """Every generated input in wire ``params``, as (wire field, ref), lists flattened in order."""
    found: list[tuple[str, GeneratedRef]] = []
    for name, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, StillRef | FrameRef | ClipRef):
                found.append((name, item))
    return found


def in_row(params: Mapping[str, Any], row: str) -> dict[str, Any]:
    """``params`` with every generated input naming the row's still or shot (``<row>/<id>``)."""

    def one(value: Any) -> Any:
        if isinstance(value, StillRef):
            return StillRef(f"{row}/{value.still}")
        if isinstance(value, FrameRef):
            return FrameRef(f"{row}/{value.shot}", value.frame)
        if isinstance(value, ClipRef):
            return ClipRef(f"{row}/{value.shot}")
        return value

    return {k: [one(v) for v in value] if isinstance(value, list) else one(value) for k, value in params.items()}


def not_taken_message(key: str, model: Model, value: Any) -> str | None:
    """The message for a generated input given to a field the model does not take, or None when
    ``value`` holds none (the generic "not taken" message then applies)."""
    items = value if isinstance(value, list) else [value]
    ref = next((parse_ref(v) for v in items if isinstance(v, Mapping) and parse_ref(v) is not None), None)
    if ref is None:
        return None
    if isinstance(ref, ClipRef):
        takes_video = [spec.name for spec in model.fields if spec.type == "video"]
        hint = f" (it takes {', '.join(takes_video)})" if takes_video else " (it takes no video)"
        return f"{model.id} does not take {key}: the clip of '{ref.shot}' cannot be given here{hint}"
    what = f"still '{ref.still}'" if isinstance(ref, StillRef) else f"a frame of '{ref.shot}'"
    takes_images = [spec.name for spec in model.fields if spec.type in ("image", "images")]
    hint = f" (it takes {', '.join(takes_images)})" if takes_images else " (it takes no image)"
    return f"{model.id} does not take {key}: {what} cannot be given here{hint}"


@dataclass
class GraphCheck:
    """The inputs of :func:`check_graph`: every still and shot id the file declares (resolved or
    not), the resolved shots' kept ranges, and the sites."""

    declared_stills: Sequence[str]
    declared_shots: Sequence[str]
    kept: Mapping[str, KeptRange]  # resolved shots by id
    sites: Sequence[RefSite]


def check_graph(check: GraphCheck) -> list[tuple[DocPath, str, DocPath | None]]:
    """Every problem of the generated inputs: (path, message, line path)."""
    stills, shots = set(check.declared_stills), set(check.declared_shots)
    out: list[tuple[DocPath, str, DocPath | None]] = []
    for site in check.sites:
        ref = site.ref
        if isinstance(ref, StillRef) and ref.still not in stills:
            hint = _near(ref.still, check.declared_stills, "stills")
            out.append(((*site.path, "still"), f"no still named '{ref.still}' ({hint})", site.line_path))
        elif isinstance(ref, FrameRef | ClipRef):
            if ref.shot not in shots:
                hint = _near(ref.shot, check.declared_shots, "shots")
                out.append(((*site.path, "from"), f"no shot named '{ref.shot}' ({hint})", site.line_path))
                continue
            upstream = check.kept.get(ref.shot)
            if upstream is None or isinstance(ref, ClipRef):  # a whole clip: no frame to check
                continue
            problem = frame_problem(ref, upstream.kept_duration)
            if problem is not None:
                out.append(((*site.path, "frame"), problem, site.line_path))
    out.extend(_cycles(check.sites, stills, shots))
    return out


def frame_problem(ref: FrameRef, kept: float) -> str | None:
    """Why ``ref.frame`` is not a frame of the upstream's kept range (0 to ``kept`` seconds), or None."""
    if isinstance(ref.frame, str):
        return None  # first / last: the schema allows nothing else
    if not 0 <= ref.frame <= kept + 1e-9:
        return f"{ref.frame:g} s is outside the kept range of {ref.shot} (0–{kept:g} s)"
    return None


_SIZE = re.compile(r"\s*(\d{1,6})\s*[*xX×]\s*(\d{1,6})\s*")


def declared_size(params: Mapping[str, Any]) -> tuple[int, int] | None:
    """The width and height a still asks its model for (``size: W*H``), when it says."""
    match = _SIZE.fullmatch(str(params.get("size", "")))
    return (int(match.group(1)), int(match.group(2))) if match else None


def size_problems(stills: Mapping[str, Still], sites: Sequence[RefSite]) -> list[tuple[DocPath, str, DocPath | None]]:
    """A still whose declared size breaks the image limits of the model it is given to (v3.0: at
    least 300 px a side, an aspect within 1:2.5..2.5:1): found before the still is paid for."""
    out: list[tuple[DocPath, str, DocPath | None]] = []
    for site in sites:
        still = stills.get(site.ref.still) if isinstance(site.ref, StillRef) else None
        size = declared_size(still.params) if still is not None else None
        if size is None or site.model is None or still is None:
            continue
        width, height = size
        model, name = site.model, f"still {still.id} ({width}x{height}, its size)"
        if model.image_min_side and min(width, height) < model.image_min_side:
            out.append((site.path, f"{name}: {model.id} needs at least {model.image_min_side} px a side",
                        site.line_path))  # fmt: skip
        limit = model.image_max_aspect
        if limit and height and not 1 / limit <= width / height <= limit:
            out.append((site.path, f"{name}: {model.id} needs an aspect ratio between 1:{limit:g} and {limit:g}:1",
                        site.line_path))  # fmt: skip
    return out


def _near(name: str, known: Sequence[str], what: str) -> str:
    near = difflib.get_close_matches(name, list(known), n=1)
    if near:
        return f"did you mean '{near[0]}'?"
    if not known:
        return f"the project has no {what}"
    return f"the project's {what}: {', '.join(known)}"


def _cycles(
    sites: Sequence[RefSite], stills: set[str], shots: set[str]
) -> Iterator[tuple[DocPath, str, DocPath | None]]:
    """One problem per cycle of the inputs graph (shot and still ids as nodes, each edge from the
    user of an input to its maker), at the site that closes it."""
    edges: dict[str, list[RefSite]] = {}
    for site in sites:
        known = (isinstance(site.ref, StillRef) and site.ref.still in stills) or (
            isinstance(site.ref, FrameRef | ClipRef) and site.ref.shot in shots
        )
        if known:
            edges.setdefault(site.owner, []).append(site)
    done: set[str] = set()
    reported: set[frozenset[str]] = set()
    for start in list(edges):
        yield from _walk(start, edges, done, reported)


def _walk(
    start: str, edges: Mapping[str, list[RefSite]], done: set[str], reported: set[frozenset[str]]
) -> Iterator[tuple[DocPath, str, DocPath | None]]:
    """Depth-first from ``start`` without recursion (a chain may be thousands of shots long)."""
    if start in done:
        return
    path: list[str] = [start]
    on_path = {start}
    stack: list[Iterator[RefSite]] = [iter(edges.get(start, ()))]
    while stack:
        site = next(stack[-1], None)
        if site is None:
            stack.pop()
            node = path.pop()
            on_path.discard(node)
            done.add(node)
            continue
        target = site.ref.upstream
        if target in on_path:
            loop = path[path.index(target) :]
            members = frozenset(loop)
            if members not in reported:
                reported.add(members)
                shown = " → ".join([*loop, target])
                leaf = "still" if isinstance(site.ref, StillRef) else "from"
                yield (*site.path, leaf), f"a cycle: {shown} (each waits for the next)", site.line_path
            continue
        if target in done:
            continue
        path.append(target)
        on_path.add(target)
        stack.append(iter(edges.get(target, ())))


def ids_of(items: Iterable[Any]) -> list[str]:
    """The string ids of schema-valid list entries (entries without one are skipped)."""
    return [str(item["id"]) for item in items if isinstance(item, Mapping) and isinstance(item.get("id"), str)]
