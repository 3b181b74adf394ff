"""Project file -> Project: schema, defaults, templates, model rules, media. Every problem is reported."""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from kling_render import rules
from kling_render.catalog import Model, Price, find_model, parse_fraction
from kling_render.document import DocPath, Document, load_document
from kling_render.errors import Issue, ProjectError, UsageError
from kling_render.jobs import MediaRef
from kling_render.media import AUDIO_EXTENSIONS, MediaIndex, MediaProblem, is_url, resolve_inside
from kling_render.templates import RESERVED_NAMES, TemplateProblem, render

VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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
    """One resolved shot: templates rendered, defaults merged, wire parameters built."""

    id: str
    index: int
    model: Model
    duration: int
    sound: bool
    aspect_ratio: str | None
    params: dict[str, Any]  # wire fields; media as MediaRef / list[MediaRef]
    prompt: str
    take: int
    trim: Trim
    transition: Transition
    with_video: bool
    line: int

    @property
    def kept_duration(self) -> float:
        return self.trim.kept(self.duration)


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
    prices: dict[str, Price]
    vars: dict[str, Any] = field(default_factory=dict)
    remote: str | None = None  # `remote:` (KLING_RENDER_REMOTE wins; see kling_render.remote)

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
        return self.work_dir / self.stem

    @property
    def lock_path(self) -> Path:
        return self.root / f"{self.stem}.lock"

    def shot(self, shot_id: str) -> Shot:
        for s in self.shots:
            if s.id == shot_id:
                return s
        raise KeyError(shot_id)


def parse_var_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["a=1", "b=x y"]`` -> ``{"a": "1", "b": "x y"}``; a malformed pair is a UsageError."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not VAR_NAME.match(key):
            raise UsageError(f"--var {pair!r}: expected KEY=VALUE with KEY a name like product_name")
        out[key] = value
    return out


def display_path(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when below it."""
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block that builds large, acyclic trees.

    Loading or planning 10,000 shots allocates millions of objects; the collector's repeated passes
    over them took about half the time and made it grow faster than linearly. Refcounting still frees
    everything; the collector runs again (if it was on) when the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_project(path: Path, var_overrides: Mapping[str, str] | None = None) -> Project:
    """Load, validate and resolve a project file; raise ProjectError listing every problem."""
    with paused_gc():
        return _load_project(path, var_overrides)


def _load_project(path: Path, var_overrides: Mapping[str, str] | None) -> Project:
    from kling_render.schema import schema_issues  # jsonschema import is the slow part of start-up

    path = Path(os.path.abspath(path))
    doc = load_document(path, display_path(path))
    if not isinstance(doc.data, dict):
        raise ProjectError([doc.issue((), "the project must be a mapping with version: 1, name and shots")])
    issues = schema_issues(doc)
    bad_shots = {i.path.split("]")[0] for i in issues if i.path.startswith("shots[")}
    top_broken = any(not i.path.startswith("shots[") for i in issues)
    if top_broken:
        raise ProjectError(issues)
    resolver = _Resolver(path, doc, dict(var_overrides or {}), issues)
    project = resolver.resolve(skip={s + "]" for s in bad_shots})
    if issues:
        raise ProjectError(issues)
    return project


class _Resolver:
    def __init__(self, path: Path, doc: Document, overrides: dict[str, str], issues: list[Issue]) -> None:
        self.path = path
        self.root = path.parent
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.issues = issues
        self.media = MediaIndex()
        self._media_memo: dict[tuple[str, str, bool], tuple[MediaRef | None, list[str]]] = {}
        self.vars: dict[str, Any] = {**self.data.get("vars", {}), **overrides}
        for name in self.vars:
            if name in RESERVED_NAMES:
                self.add(
                    ("vars", name), f"'{name}' is reserved for the template context; rename the variable"
                )

    def add(self, path: DocPath, message: str, line_path: DocPath | None = None) -> None:
        self.issues.append(self.doc.issue(path, message, line_path=line_path))

    def resolve(self, skip: set[str]) -> Project:
        data = self.data
        name = str(data["name"])
        prices = self._prices()
        shots: list[Shot] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(data["shots"]):
            if not isinstance(raw, dict):  # the schema has reported it (shots: [null] reached here)
                continue
            shot_id = str(raw.get("id", ""))
            if shot_id in seen:
                self.add(
                    ("shots", index, "id"),
                    f"duplicate shot id '{shot_id}' (first used by shots[{seen[shot_id]}])",
                )
            seen.setdefault(shot_id, index)
            if f"shots[{index}]" in skip:
                continue
            shot = self._shot(index, raw, name)
            if shot is not None:
                shots.append(shot)
        self._check_cut(shots)
        budget = data.get("budget", {}).get("max_usd")
        return Project(
            path=self.path,
            display=self.doc.file,
            name=name,
            provider=str(data.get("provider", "local")),
            budget_usd=float(budget) if budget is not None else None,
            shots=shots,
            output=self._output(name),
            audio=self._audio(),
            prices=prices,
            vars=self.vars,
            remote=self._remote(),
        )

    def _remote(self) -> str | None:
        """``remote:``, checked here rather than by a schema pattern: a schema message would
        repeat the value, and a URL with a credential in it must never be printed."""
        from kling_render.remote.config import parse_remote_url

        value = self.data.get("remote")
        if not isinstance(value, str):
            return None
        try:
            parse_remote_url(value)
        except ValueError as exc:
            self.add(("remote",), str(exc))
            return None
        return value

    # -- prices, output, audio ---------------------------------------------------------------

    def _prices(self) -> dict[str, Price]:
        from kling_render.catalog import canonical_model_id, load_catalog

        prices = {mid: m.price for mid, m in load_catalog().items() if m.price is not None}
        for raw_id, spec in self.data.get("pricing", {}).items():
            mid = canonical_model_id(raw_id)
            base = prices.get(mid)
            try:
                prices[mid] = Price(
                    per_second=parse_fraction(spec["per_second"]),
                    sound_multiplier=(
                        parse_fraction(spec["sound_multiplier"])
                        if "sound_multiplier" in spec
                        else (base.sound_multiplier if base else None)
                    ),
                    video_per_second=(
                        parse_fraction(spec["video_per_second"])
                        if "video_per_second" in spec
                        else (base.video_per_second if base else None)
                    ),
                    date="project",
                    source=f"{self.doc.file} pricing",
                )
            except (ValueError, ZeroDivisionError) as exc:
                self.add(("pricing", raw_id), f"invalid price: {exc}")
        return prices

    def _output(self, name: str) -> OutputSpec:
        raw = self.data.get("output", {})
        out_path = self._local_path(
            ("output", "path"), str(raw.get("path", f"renders/{name}.mp4")), must_exist=False
        )
        if out_path is not None and out_path.suffix.lower() != ".mp4":
            self.add(("output", "path"), "the final cut is an MP4: the path must end in .mp4")
        return OutputSpec(
            path=out_path or self.root / "renders" / f"{name}.mp4",
            width=int(raw.get("width", 1920)),
            height=int(raw.get("height", 1080)),
            fps=int(raw.get("fps", 24)),
            fit=str(raw.get("fit", "contain")),
        )

    def _audio(self) -> AudioSpec | None:
        raw = self.data.get("audio")
        if raw is None:
            return None
        music = None
        if "music" in raw:
            music = self._local_path(("audio", "music"), str(raw["music"]), must_exist=True)
            if music is not None and music.suffix.lower() not in AUDIO_EXTENSIONS:
                self.add(
                    ("audio", "music"), f"{music.name} is not an audio file ({', '.join(AUDIO_EXTENSIONS)})"
                )
        return AudioSpec(
            music=music,
            music_volume=float(raw.get("music_volume", 0.3)),
            duck=bool(raw.get("duck", False)),
            normalize=bool(raw.get("normalize", False)),
        )

    def _local_path(self, path: DocPath, value: str, *, must_exist: bool) -> Path | None:
        try:
            resolved = resolve_inside(self.root, value)
        except MediaProblem as exc:
            self.add(path, str(exc))
            return None
        if must_exist and not resolved.is_file():
            self.add(path, f"file not found: {value}")
            return None
        return resolved

    # -- shots --------------------------------------------------------------------------------

    def _shot(self, index: int, raw: dict[str, Any], project_name: str) -> Shot | None:
        defaults: dict[str, Any] = self.data.get("defaults", {})
        merged = {**defaults, **raw}
        own = set(raw)
        base: DocPath = ("shots", index)

        def where(key: str) -> DocPath | None:
            """Line source of a key: the shot's own, else the default's."""
            return None if key in own else ("defaults", key)

        model_id = merged.get("model")
        if model_id is None:
            self.add((*base, "model"), "missing model (set it on the shot or under defaults)")
            return None
        model = find_model(str(model_id))
        if model is None:  # the schema's enum reports it already
            return None
        shot_id = str(raw["id"])
        context = _TemplateContext(self, shot_id, index, project_name)

        n_before = len(self.issues)
        ctx = rules.ShotContext(model=model, merged=merged, own=own)
        for key, message in rules.check(ctx):
            self.add((*base, key), message, line_path=None if key in own or key not in merged else where(key))

        duration = rules.effective_duration(model, merged)
        sound = bool(merged.get("sound", False)) if model.takes_sound else False
        params: dict[str, Any] = {}
        prompt_text = ""
        for key in model.fields:
            source_key = "end_image" if key == model.end_image_field else key
            if source_key not in merged:
                continue
            value = merged[source_key]
            path = (*base, source_key)
            line_path = where(source_key)
            if key in ("prompt", "negative_prompt"):
                params[key] = context.render(str(value), path, line_path)
                if key == "prompt":
                    prompt_text = params[key]
            elif key == "multi_prompt":
                params[key] = [
                    {
                        "prompt": context.render(str(p["prompt"]), (*path, i, "prompt"), None),
                        "duration": p["duration"],
                    }
                    for i, p in enumerate(value)
                ]
                prompt_text = " | ".join(p["prompt"] for p in params[key])
            elif key in ("image", "end_image", "last_image", "video"):
                ref = self._media(context.render(str(value), path, line_path), path, line_path, model, key)
                if ref is not None:
                    params[key] = ref
            elif key == "images":
                refs = [
                    self._media(context.render(str(v), (*path, i), None), (*path, i), None, model, key)
                    for i, v in enumerate(value)
                ]
                params[key] = [r for r in refs if r is not None]
            else:
                params[key] = value
        # Defaults the model documents are sent explicitly, so adding them by hand never changes a key.
        params["duration"] = duration
        if model.takes_sound:
            params["sound"] = sound
        if model.cfg_scale is not None and "cfg_scale" in params:
            params["cfg_scale"] = float(params["cfg_scale"])
        elif model.cfg_scale is not None:
            params["cfg_scale"] = model.cfg_scale[2]
        if model.aspect_ratio_default is not None:
            params.setdefault("aspect_ratio", model.aspect_ratio_default)
        with_video = "video" in merged and "video" in model.fields
        if "keep_original_sound" in model.fields:
            if with_video:
                params.setdefault("keep_original_sound", True)
            else:
                params.pop("keep_original_sound", None)
        if len(self.issues) > n_before:
            return None
        trim_raw = raw.get("trim", {})
        trim = Trim(float(trim_raw.get("start", 0.0)), float(trim_raw["end"]) if "end" in trim_raw else None)
        tr_raw = merged.get("transition", {"type": "cut"})
        tr_type = str(tr_raw.get("type", "cut"))
        tr_default = 0.0 if tr_type == "cut" else DEFAULT_TRANSITION_SECONDS
        transition = Transition(
            tr_type, float(tr_raw.get("duration", tr_default)) if tr_type != "cut" else 0.0
        )
        return Shot(
            id=shot_id,
            index=index,
            model=model,
            duration=duration,
            sound=sound,
            aspect_ratio=params.get("aspect_ratio"),
            params=params,
            prompt=prompt_text,
            take=int(raw.get("take", 1)),
            trim=trim,
            transition=transition,
            with_video=with_video,
            line=self.doc.line(base),
        )

    def _media(
        self, value: str, path: DocPath, line_path: DocPath | None, model: Model, wire_key: str
    ) -> MediaRef | None:
        if is_url(value) and value.lower().startswith("https://"):
            return MediaRef(url=value)
        memo_key = (value, model.id, wire_key == "video")
        found = self._media_memo.get(memo_key)
        if found is None:
            found = self._media_memo[memo_key] = self._inspect(value, model, wire_key)
        ref, problems = found
        for problem in problems:
            self.add(path, problem, line_path)
        return ref

    def _inspect(self, value: str, model: Model, wire_key: str) -> tuple[MediaRef | None, list[str]]:
        """The MediaRef for a media value, or the problems with it (memoised: projects reuse images)."""
        from kling_render.media import check_image

        try:
            resolved = resolve_inside(self.root, value)
        except MediaProblem as exc:
            return None, [str(exc)]
        if not resolved.is_file():
            return None, [f"file not found: {value}"]
        if wire_key == "video":
            if resolved.suffix.lower() not in (".mp4", ".mov"):
                return None, [f"{resolved.name}: the reference video must be .mp4 or .mov"]
        else:
            try:
                info = self.media.image(resolved)
            except MediaProblem as exc:
                return None, [str(exc)]
            problems = check_image(info, resolved, model)
            if problems:
                return None, problems
        return MediaRef(path=resolved, sha256=self.media.sha256(resolved)), []

    def _check_cut(self, shots: list[Shot]) -> None:
        from kling_render.stitch.graph import max_transition

        for position, shot in enumerate(shots):
            prev = shots[position - 1] if position else None
            base: DocPath = ("shots", shot.index)
            if shot.trim.end is not None and shot.trim.end > shot.duration:
                self.add(
                    (*base, "trim", "end"), f"{shot.trim.end:g} is past the clip's end ({shot.duration} s)"
                )
            if shot.trim.kept(shot.duration) <= 0:
                self.add((*base, "trim"), "keeps nothing: start must be before end")
            if shot.transition.type == "cut":
                continue
            if prev is None:
                if "transition" in self.data["shots"][shot.index]:
                    self.add((*base, "transition"), "the first shot has no previous shot to transition from")
                continue
            limit = max_transition(prev.kept_duration, shot.kept_duration)
            if shot.transition.duration > limit + 1e-9:
                self.add(
                    (*base, "transition", "duration"),
                    f"{shot.transition.duration:g} s is longer than half the shorter neighbour "
                    f"(at most {limit:g} s here)",
                )
            if shot.transition.duration <= 0:
                self.add(
                    (*base, "transition", "duration"), f"a {shot.transition.type} needs a duration above 0"
                )


class _LazyPrompts(Mapping[str, str]):
    """``prompts.<name>``: snippets rendered on first use with the shot's context."""

    def __init__(self, ctx: _TemplateContext) -> None:
        self._ctx = ctx
        self._raw: dict[str, str] = ctx.resolver.data.get("prompts", {})
        self._done: dict[str, str] = {}

    def __getitem__(self, key: str) -> str:
        if key not in self._done:
            source = self._raw[key]
            try:
                self._done[key] = render(source, self._ctx.values)
            except TemplateProblem as exc:
                raise _SnippetFailed(key, str(exc)) from None
        return self._done[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


class _SnippetFailed(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class _TemplateContext:
    def __init__(self, resolver: _Resolver, shot_id: str, index: int, project_name: str) -> None:
        self.resolver = resolver
        self.values: dict[str, Any] = {
            **resolver.vars,
            "project": {"name": project_name},
            "shot": {"id": shot_id, "index": index},
        }
        self.values["prompts"] = _LazyPrompts(self)

    def render(self, source: str, path: DocPath, line_path: DocPath | None) -> str:
        try:
            return render(source, self.values)
        except TemplateProblem as exc:
            self.resolver.add(path, str(exc), line_path)
        except _SnippetFailed as exc:
            self.resolver.add(path, f"in prompts.{exc.name}: {exc.message}", ("prompts", exc.name))
        return ""


def cost_of(shot: Shot, prices: Mapping[str, Price]) -> Fraction | None:
    """Exact price of a shot, or None when the catalog (and the project) lack one."""
    from kling_render.catalog import shot_cost

    price = prices.get(shot.model.id)
    if price is None:
        return None
    return shot_cost(price, shot.duration, sound=shot.sound, with_video=shot.with_video)
