"""The values that cross the provider seam: what to generate, and what a task reports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kling_render.masking import contains_secret, mask

# Task states as the provider reports them (SPEC §5).
RUNNING_STATES = frozenset({"created", "processing", "queued", "pending", "running"})
TERMINAL_FAILED_STATES = frozenset({"failed", "cancelled", "canceled", "timeout", "deleted"})

# A task id goes into URLs and files: only ids of this shape are used, whatever a server or a state
# file says (a newline or 64 KB of id would otherwise break every later run).
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

FailureCause = Literal["permanent", "transient", "unclassified"]
"""Why a task failed, as the provider classifies its failure code: ``permanent`` fails the same way
again for the same inputs (never re-paid), ``transient`` may pass next time, ``unclassified`` is a
code (or no code) the provider does not document: retried like transient, within the lifetime cap."""


def valid_task_id(value: object) -> bool:
    """Whether ``value`` may be used as a task id: the shape of :data:`TASK_ID`, and no known secret
    inside (a server echoing the API key as a task id: masked it would name no task, kept it would
    put the key in every file). The one check for ids from every source: a provider's answer, its
    task list, the state file, the cache's records, the remote's claims and clip records."""
    return isinstance(value, str) and TASK_ID.fullmatch(value) is not None and not contains_secret(value)


def shown_id(value: object) -> str:
    """A task id (valid or not) as a message may show it: one short line, secrets masked first (a
    cut could leave part of one)."""
    text = mask(value if isinstance(value, str) else repr(value))
    return repr(text[:40] + "..." if len(text) > 40 else text)


@dataclass(frozen=True)
class MediaRef:
    """One media input: a local file inside the project (with its sha256) or an https URL.

    A generated input, once made, is a MediaRef too: a still is its image file (keyed by its
    sha256 exactly as a local file), a frame the PNG extracted from a clip, keyed by ``key``
    (``frame:<clip sha256>@<frame index>``: the clip and the position, not the PNG's bytes)."""

    path: Path | None = None
    url: str | None = None
    sha256: str | None = None
    key: str | None = None  # what stands for it in keys when not its own content hash (a frame)
    filename: str | None = None  # the name it is uploaded under (a still or frame kept by the cache)
    source: Path | None = None  # a frame not extracted yet: the clip it is taken from

    @property
    def key_value(self) -> str:
        """What stands for this input in a shot's key: content hash for files, the URL otherwise."""
        if self.key is not None:
            return self.key
        if self.path is not None or self.url is None:
            return f"sha256:{self.sha256}"
        return self.url

    @property
    def name(self) -> str:
        if self.filename is not None:
            return self.filename
        return self.path.name if self.path is not None else (self.url or "").rsplit("/", 1)[-1]


FramePos = str | float
"""A frame of a shot's kept (trimmed) range: ``"first"``, ``"last"`` or seconds from its start."""


@dataclass(frozen=True)
class StillRef:
    """An image input made by a still of the project (``{still: ID}``), not known until it is made."""

    still: str  # the still's id (``<row>/<id>`` in a rows: project)

    @property
    def upstream(self) -> str:
        """The step that makes it: ``still:<id>``."""
        return f"still:{self.still}"

    @property
    def label(self) -> str:
        return f"still {self.still}"


@dataclass(frozen=True)
class FrameRef:
    """An image input taken from another shot's clip (``{from: SHOT, frame: POS}``): that shot's
    picked take, at ``frame`` of its kept range."""

    shot: str  # the upstream shot's id (``<row>/<id>`` in a rows: project)
    frame: FramePos

    @property
    def upstream(self) -> str:
        """The shot whose clip gives the frame (its picked take)."""
        return self.shot

    @property
    def label(self) -> str:
        return f"{self.shot}@{self.frame:g}s" if isinstance(self.frame, float | int) else f"{self.shot}@{self.frame}"


@dataclass(frozen=True)
class ClipRef:
    """A video input that is another shot's whole clip (``video: {from: SHOT}``: a clip to
    continue, video-extend): that shot's picked take, as its cached file once it is made."""

    shot: str  # the upstream shot's id (``<row>/<id>`` in a rows: project)

    @property
    def upstream(self) -> str:
        """The shot whose clip it is (its picked take)."""
        return self.shot

    @property
    def label(self) -> str:
        return f"the clip of {self.shot}"


GeneratedRef = StillRef | FrameRef | ClipRef


class UnresolvedInputError(ValueError):
    """A key was asked of parameters that still hold a generated input whose output is not known."""


@dataclass(frozen=True)
class Job:
    """One shot to generate.

    ``params`` holds the wire fields of the model (SPEC §4) exactly as the job's provider's
    API names them (``Shot.wire``); media fields hold a MediaRef (``image``, ``last_image``,
    ``start_image_url``, ``video``...) or a list of MediaRef (``images``, ``image_urls``...).
    """

    shot_id: str
    model: str  # canonical catalog id without the kwaivgi/ prefix
    params: Mapping[str, Any]
    duration: int
    sound: bool
    aspect_ratio: str | None  # "16:9" | "9:16" | "1:1" when the model takes one
    key: str
    cost_usd: float
    index: int = 0
    prompt: str = ""  # the rendered prompt (or the multi_prompt joined), for reports and animatics
    extra: Mapping[str, Any] = field(default_factory=dict)
    endpoint: str = ""  # the provider's model path (WaveSpeed: kwaivgi/<model>); empty: from ``model``
    provider: str = ""  # the provider the job is for (its params are in that provider's form)
    extends: bool = False  # the output is the input clip with the new part joined: longer than ``duration``
    kind: Literal["clip", "still"] = "clip"  # a still is one image (``duration`` 0), a clip a video

    @property
    def wire_model(self) -> str:
        """Where the job is sent: its endpoint, else ``kwaivgi/<model>`` as for every built-in model."""
        return self.endpoint or f"kwaivgi/{self.model}"

    def media(self) -> list[MediaRef]:
        """Every MediaRef in params, in a stable order."""
        refs: list[MediaRef] = []
        for name in sorted(self.params):
            value = self.params[name]
            if isinstance(value, MediaRef):
                refs.append(value)
            elif isinstance(value, list):
                refs.extend(v for v in value if isinstance(v, MediaRef))
        return refs


@dataclass(frozen=True)
class TaskResult:
    """A poll answer: status, the output URL when completed, the reason, code and cause when failed.

    A ``completed`` result without an ``output_url`` is a paid task whose result is unusable. A failed
    task is refunded (or never charged) unless ``refunded`` is False: the provider may have charged
    it (fal: a 422 after a runner spent GPU time on it)."""

    status: str
    output_url: str | None = None
    error: str | None = None
    code: str | None = None
    cause: FailureCause | None = None
    refunded: bool = True

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def failed(self) -> bool:
        return self.status in TERMINAL_FAILED_STATES

    @property
    def terminal(self) -> bool:
        return self.completed or self.failed


@dataclass(frozen=True)
class ListedTask:
    """One task from the provider's task list (for reconciling a submit whose answer was lost)."""

    id: str
    status: str
    created_at: float | None  # epoch seconds, as the provider recorded it
    inputs: Mapping[str, Any] | None  # the request body as the provider recorded it, when it says
