"""The project as resolved: shots, outputs, audio, rows and the prices of a shot. Built by loader.py."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kling_render.catalog.catalog import Model, Offer, Price, wire_params
from kling_render.errors import UsageError
from kling_render.jobs import MediaRef
from kling_render.project.generated import Still
from kling_render.suggest import nearby_file, with_hint

if TYPE_CHECKING:
    from kling_render.project.table import Table

VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: $ would accept a trailing newline
DEFAULT_TRANSITION_SECONDS = 0.5


@dataclass(frozen=True)
class Trim:
    start: float = 0.0
    end: float | None = None

    def kept(self, duration: float) -> float:
        return (self.end if self.end is not None else duration) - self.start


@dataclass(frozen=True)
class Transition:
    type: str = "cut"
    duration: float = 0.0


@dataclass(frozen=True)
class Shot:
    """One resolved shot: templates rendered, defaults merged, inputs built.

    ``params`` are the model's inputs by shot key (``duration`` last), media as MediaRef; a
    provider's wire body is :meth:`wire` (its names and value forms). ``given`` holds the inputs
    the shot or ``defaults:`` set (the others are the model's own defaults)."""

    id: str
    index: int
    model: Model
    duration: int
    sound: bool
    aspect_ratio: str | None
    params: dict[str, Any]  # inputs by shot key; media as MediaRef / list[MediaRef]
    prompt: str
    take: int
    trim: Trim
    transition: Transition
    with_video: bool
    line: int
    row: str | None = None  # the row's key in a rows: project (then ``id`` is ``<row>/<shot id>``)
    provider: str | None = None  # the shot's own ``provider:`` (None: the project's)
    tier: str | None = None  # what the price depends on: the resolution (``1080p hdr``), if any
    own: frozenset[str] = frozenset()  # the keys the shot itself sets
    given: frozenset[str] = frozenset()  # the inputs set by the shot or by ``defaults:``
    takes: int = 1  # takes rendered: take .. take + takes - 1
    pick: int | None = None  # the take number cut (None: the first, ``take``)

    @property
    def kept_duration(self) -> float:
        return self.trim.kept(self.duration)

    def new_part_offset(self, clip_duration: float) -> float:
        """Where the shot's own part starts in its clip, in seconds: 0, except for a model that
        continues its input video (video-extend), whose clip holds that input then the new part;
        the shot's part is the last ``duration`` seconds, and its trim is within it. The cut and a
        continuity frame taken from the clip both count from here."""
        return max(0.0, clip_duration - self.duration) if self.model.extends is not None else 0.0

    @property
    def take_numbers(self) -> range:
        """The take numbers rendered; each is a key (take 1 is the key a shot always had)."""
        return range(self.take, self.take + self.takes)

    @property
    def picked_take(self) -> int:
        """The take number whose clip the cut uses (and continuity children start from)."""
        return self.pick if self.pick is not None else self.take

    @property
    def name(self) -> str:
        """The shot's id in the project file (``id`` without the row)."""
        return self.id if self.row is None else self.id[len(self.row) + 1 :]

    def offer(self, provider: str) -> Offer:
        """How ``provider`` takes the shot's model; ValueError when it does not offer it (a plan
        checks that first, with :func:`kling_render.project.rules.provider_problems`)."""
        offer = self.model.offer(provider)
        if offer is None:
            raise ValueError(f"{provider} does not offer {self.model.id}")
        return offer

    def wire(self, provider: str) -> dict[str, Any]:
        """The shot's inputs as ``provider`` takes them (its wire names and value forms)."""
        return wire_params(self.offer(provider), self.params)


@dataclass(frozen=True)
class OutputSpec:
    path: Path
    width: int = 1920
    height: int = 1080
    fps: int = 24
    fit: str = "contain"


@dataclass(frozen=True)
class AudioSpec:
    music: Path | None = None
    music_volume: float = 0.3
    duck: bool = False
    normalize: bool = False


@dataclass
class Project:
    path: Path
    display: str
    name: str
    provider: str
    budget_usd: float | None
    shots: list[Shot]
    output: OutputSpec
    audio: AudioSpec | None
    prices: dict[tuple[str, str], Price]  # by (provider, model id); see price_of
    vars: dict[str, Any] = field(default_factory=dict)
    stills: list[Still] = field(default_factory=list)  # images an image model makes, named by shots
    models: dict[str, Model] = field(default_factory=dict)  # the models the project declares
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per provider (schema-checked)

    def concurrency_for(self, provider: str) -> int | None:
        """``provider_options.<provider>.concurrency``, when the project sets it."""
        value = self.provider_options.get(provider, {}).get("concurrency")
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    remote: str | None = None  # `remote:` (KLING_RENDER_REMOTE wins; see kling_render.store.remote)
    # A rows: project (project_rows.py): ``shots`` holds every row's shots (ids ``<key>/<shot id>``),
    # ``rows`` each row's shots, output and audio, and ``output`` is the first row's. A row's own
    # view (``project_rows.row_view``) has ``row_key`` set and ``rows`` None.
    rows: list[ProjectRow] | None = None
    table: Table | None = None
    row_key: str | None = None

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def work_dir(self) -> Path:
        return self.root / ".kling-render"

    @property
    def state_dir(self) -> Path:
        """Run lock and per-provider state (state.py): named by the file's full name."""
        return self.work_dir / self.path.name

    @property
    def lock_path(self) -> Path:
        """``<stem>.lock`` for a ``.yaml`` file, ``<file name>.lock`` otherwise (lockfile.py)."""
        from kling_render.records.lockfile import lock_path_for

        return lock_path_for(self.path)

    def input_files(self) -> list[tuple[Path, str]]:
        """Every local file the project reads, with what it is for (outputs must never overwrite one):
        every row's media and music, and the rows data file, in a rows: project."""
        found = input_files(self.shots, self.audio)
        for still in self.stills:
            for name, value in still.params.items():
                for ref in value if isinstance(value, list) else [value]:
                    if isinstance(ref, MediaRef) and ref.path is not None:
                        found.append((ref.path, f"the {name} of still {still.id}"))
        for row in self.rows or ():
            if row.audio is not None and row.audio.music is not None:
                found.append((row.audio.music, f"the music of row {row.key}"))
        if self.table is not None:
            found.append((self.table.path, "the rows data file (rows.from)"))
        return found

    def cut_paths(self) -> list[Path]:
        """Every final cut the project makes: one per row in a rows: project."""
        return [row.output.path for row in self.rows] if self.rows is not None else [self.output.path]

    def shot(self, shot_id: str) -> Shot:
        for s in self.shots:
            if s.id == shot_id:
                return s
        raise KeyError(shot_id)


def input_files(shots: list[Shot], audio: AudioSpec | None) -> list[tuple[Path, str]]:
    found: dict[Path, str] = {}
    for shot in shots:
        for name, value in shot.params.items():
            for ref in value if isinstance(value, list) else [value]:
                if isinstance(ref, MediaRef) and ref.path is not None:
                    found.setdefault(ref.path, f"the {name} of shot {shot.id}")
    if audio is not None and audio.music is not None:
        found.setdefault(audio.music, "the music")
    return list(found.items())


def parse_var_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["a=1", "b=x y"]`` -> ``{"a": "1", "b": "x y"}``; a malformed pair is a UsageError."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not VAR_NAME.match(key):
            raise UsageError(f"--var {pair!r}: expected KEY=VALUE with KEY a name like product_name")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # argv bytes that were not UTF-8 arrive as lone surrogates
            raise UsageError(f"--var {key}: the value is not valid UTF-8 text") from None
        out[key] = value
    return out


def missing_file(root: Path, value: str) -> str:
    """``file not found: images/mugg.png (did you mean 'images/mug.png'?)``."""
    near = nearby_file(root, value)
    return with_hint(f"file not found: {value}", f"did you mean '{near}'?" if near else "")


def display_path(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when below it."""
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)



@dataclass(frozen=True)
class ProjectRow:
    """One row's cut: its key, its line in the data file, its shots (ids ``<key>/<shot id>``),
    output and audio."""

    key: str
    line: int
    shots: list[Shot]
    output: OutputSpec
    audio: AudioSpec | None



def price_of(prices: Mapping[tuple[str, str], Price], model: Model, provider: str) -> Price | None:
    """``provider``'s price of ``model`` (the free ``local`` provider shows the price of the form it
    reads: WaveSpeed's), or None."""
    offer = model.offer(provider)
    return prices.get((offer.provider, model.id)) if offer is not None else None


def cost_of(shot: Shot, prices: Mapping[tuple[str, str], Price], provider: str) -> Fraction | None:
    """Exact price of a shot on ``provider``, or None when nobody publishes one (see missing_price)."""
    from kling_render.catalog.catalog import shot_cost

    if missing_price(shot, prices, provider) is not None:
        return None
    price = price_of(prices, shot.model, provider)
    assert price is not None
    return shot_cost(price, shot.duration, sound=shot.sound, with_video=shot.with_video, tier=shot.tier)


def missing_price(shot: Shot, prices: Mapping[tuple[str, str], Price], provider: str) -> str | None:
    """Why the shot has no price on ``provider`` (what to add under ``pricing:``), or None when it has one."""
    from kling_render.catalog.catalog import missing_rate

    offer = shot.model.offer(provider)
    # WaveSpeed's prices are the catalog's first (and what local animatics show): named only for others.
    on = f" on {offer.provider}" if offer is not None and offer.provider != "wavespeed" else ""
    model = shot.model.id
    what = missing_rate(
        price_of(prices, shot.model, provider), sound=shot.sound, with_video=shot.with_video, tier=shot.tier
    )
    if what is None:
        return None
    if what == "sound-on":
        return f"no sound-on price for {model}{on}: add its sound_multiplier under pricing:"
    if what == "reference-video":
        return f"no price with a reference video for {model}{on} (none is published): add it under pricing:"
    if what:
        return (
            f"no {what} price for {model}{on} (none is published): add it under pricing: "
            f"(per_second_by_resolution: {{{what}: ...}})"
        )
    return f"no price for {model}{on}: add it under pricing:"
