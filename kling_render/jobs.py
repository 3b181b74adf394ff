"""The values that cross the provider seam: what to generate, and what a task reports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
    return isinstance(value, str) and TASK_ID.fullmatch(value) is not None


def shown_id(value: object) -> str:
    """A task id (valid or not) as a message may show it: one short line."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:40] + "..." if len(text) > 40 else text)


@dataclass(frozen=True)
class MediaRef:
    """One media input: a local file inside the project (with its sha256), an https URL, or another
    shot's clip (``from_shot``: its name in the project file; ``path`` and ``sha256`` are the cached
    clip's once it exists, see ``plan.resolve_clips``)."""

    path: Path | None = None
    url: str | None = None
    sha256: str | None = None
    from_shot: str | None = None

    @property
    def key_value(self) -> str:
        """What stands for this input in a shot's key: content hash for files (and clips), the URL otherwise."""
        if self.path is not None:
            return f"sha256:{self.sha256}"
        if self.from_shot is not None:
            raise ValueError(f"the clip of shot {self.from_shot!r} is not made yet")
        assert self.url is not None
        return self.url

    @property
    def resolved(self) -> bool:
        """False for another shot's clip that does not exist yet."""
        return self.path is not None or self.url is not None

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else (self.url or "").rsplit("/", 1)[-1]


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
