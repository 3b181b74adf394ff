"""Project file -> Project: schema, defaults, templates, model rules, media. Every problem is reported."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kling_render.catalog.catalog import Model, Price, find_model, tier_of
from kling_render.errors import Issue, ProjectError
from kling_render.jobs import GeneratedRef, MediaRef
from kling_render.project import rules
from kling_render.project.document import DocPath, Document, load_document
from kling_render.project.generated import (
    STILL_PREFIX,
    GraphCheck,
    RefSite,
    Still,
    check_graph,
    ids_of,
    not_taken_message,
    parse_ref,
    size_problems,
)
from kling_render.project.media import AUDIO_EXTENSIONS, MediaIndex, MediaProblem, is_url, resolve_inside
from kling_render.project.project import (
    DEFAULT_TRANSITION_SECONDS,
    AudioSpec,
    OutputSpec,
    Project,
    Shot,
    Transition,
    Trim,
    display_path,
    input_files,
    missing_file,
)
from kling_render.project.templates import RESERVED_NAMES, ProjectTemplates, ShotTemplates, TemplateProblem
from kling_render.suggest import did_you_mean


def _did_you_mean(name: str, known: Mapping[str, Any]) -> str:
    hint = did_you_mean(name, known)
    if hint:
        return hint
    return f"the project declares {', '.join(known)}" if known else "the project declares no variables"


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
    from kling_render.catalog.declared import declared_models  # imports jsonschema: slow at start-up

    path = Path(os.path.abspath(path))
    doc = load_document(path, display_path(path))
    if not isinstance(doc.data, dict):
        raise ProjectError([doc.issue((), "the project must be a mapping with version: 1, name and shots")])
    declared, issues = declared_models(doc)
    bad_shots = {i.path.split("]")[0] for i in issues if i.path.startswith("shots[")}
    top_broken = any(not i.path.startswith("shots[") for i in issues)
    if top_broken:
        raise ProjectError(issues)
    resolver = Resolver(path, doc, dict(var_overrides or {}), issues, declared)
    project = resolver.resolve(skip={s + "]" for s in bad_shots})
    from kling_render.media.caps import project_issues  # what the ffmpeg in use lacks for this project

    issues.extend(project_issues(project, doc))
    if issues:
        raise ProjectError(issues)
    return project


class Resolver:
    def __init__(
        self,
        path: Path,
        doc: Document,
        overrides: dict[str, str],
        issues: list[Issue],
        declared: dict[str, Model] | None = None,
    ) -> None:
        self.path = path
        self.models = declared or {}
        self.root = path.parent
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.issues = issues
        self.media = MediaIndex()
        self._media_memo: dict[tuple[str, str, str], tuple[MediaRef | None, list[str]]] = {}
        declared_vars: dict[str, Any] = self.data.get("vars", {})
        self.vars: dict[str, Any] = {**declared_vars, **overrides}
        for name in self.vars:
            if name in RESERVED_NAMES:
                self.add(
                    ("vars", name), f"'{name}' is reserved for the template context; rename the variable"
                )
        for name in overrides:  # a typo'd --var must not be silently ignored
            if name not in declared_vars:
                self.add(
                    ("vars",), f"--var {name} is not declared under vars ({_did_you_mean(name, declared_vars)})"
                )
        self.templates = ProjectTemplates(self.vars, self.data.get("prompts", {}), str(self.data["name"]))
        self._budget_spent = False
        self.output_text: str | None = None  # output.path as the last cut rendered it (None: unusable)
        # The last cut's stills and where its generated inputs are used (reset by each cut).
        self.stills: list[Still] = []
        self.sites: list[RefSite] = []

    def add(self, path: DocPath, message: str, line_path: DocPath | None = None) -> None:
        self.issues.append(self.doc.issue(path, message, line_path=line_path))

    def render_text(self, context: ShotTemplates, source: str, path: DocPath, line_path: DocPath | None) -> str:
        try:
            return context.render(source)
        except TemplateProblem as exc:
            if exc.project_wide:  # said once, at the field where the budget ran out
                if self._budget_spent:
                    return ""
                self._budget_spent = True
            if exc.snippet is None:
                self.add(path, exc.message, line_path)
            else:
                self.add(path, f"in prompts.{exc.snippet}: {exc.message}", ("prompts", exc.snippet))
        return ""

    def resolve(self, skip: set[str]) -> Project:
        data = self.data
        name = str(data["name"])
        prices = self._prices()
        rows = table = None
        if "rows" in data:
            from kling_render.project.rows import expand_rows

            shots, output, audio, rows, table = expand_rows(self, skip, name)
        else:
            shots, output, audio = self.cut(skip, name)
        budget = data.get("budget", {}).get("max_usd")
        return Project(
            path=self.path,
            display=self.doc.file,
            name=name,
            provider=str(data.get("provider", "local")),
            budget_usd=float(budget) if budget is not None else None,
            shots=shots,
            output=output,
            audio=audio,
            prices=prices,
            vars=self.vars,
            stills=self.stills,
            models=self.models,
            provider_options={k: dict(v) for k, v in data.get("provider_options", {}).items()},
            remote=self._remote(),
            rows=rows,
            table=table,
        )

    def cut(
        self, skip: set[str], name: str, *, check_output: bool = True
    ) -> tuple[list[Shot], OutputSpec, AudioSpec | None]:
        """The shots, output and audio of one cut, with the current template context (a row's, in
        a rows: project, whose expansion checks the outputs of all rows together instead)."""
        data = self.data
        self.sites = []
        self.stills = self._stills()
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
        audio = self._audio()
        output = self._output(name, input_files(shots, audio) if check_output else None)
        self._check_cut(shots, output.fps)
        graph = GraphCheck(
            declared_stills=ids_of(data.get("stills", [])),
            declared_shots=ids_of(data["shots"]),
            kept={shot.id: shot for shot in shots},
            sites=self.sites,
        )
        for path, message, line_path in check_graph(graph) + size_problems({s.id: s for s in self.stills}, self.sites):
            self.add(path, message, line_path)
        return shots, output, audio

    def _remote(self) -> str | None:
        """``remote:``, checked here rather than by a schema pattern: a schema message would
        repeat the value, and a URL with a credential in it must never be printed."""
        from kling_render.store.remote.config import parse_remote_url

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

    def _prices(self) -> dict[tuple[str, str], Price]:
        """Every provider's price of every model, by (provider, model id): the catalog's (and the
        declared models'), then ``pricing:`` (its keys for every provider of the model, its
        ``wavespeed:``/``fal:`` entries for one)."""
        from kling_render.catalog.catalog import PAID_PROVIDERS, canonical_model_id, load_catalog, parse_price
        from kling_render.catalog.prices import price_problems

        models = {**load_catalog(), **self.models}
        prices = {
            (offer.provider, mid): offer.price
            for mid, model in models.items()
            for offer in model.offers
            if offer.price is not None
        }
        for raw_id, spec in self.data.get("pricing", {}).items():
            mid = canonical_model_id(raw_id)
            model = models.get(mid)
            if model is None:  # the schema's enum reports it
                continue
            located = False
            for sub in (None, *PAID_PROVIDERS):
                entry = spec if sub is None else spec.get(sub)
                for path, message in price_problems(entry or {}):
                    self.add(("pricing", raw_id, *((sub,) if sub else ()), *path), message)
                    located = True
                if sub is not None and entry is not None and model.offer(sub) is None:
                    offered = ", ".join(model.providers)
                    self.add(("pricing", raw_id, sub), f"{sub} does not offer {mid} (offered by {offered})")
                    located = True
            if located:
                continue
            common = {k: v for k, v in spec.items() if k not in PAID_PROVIDERS}
            misfit = _rate_misfit(raw_id, model, [common, *(spec.get(p) or {} for p in PAID_PROVIDERS if p in spec)])
            if misfit is not None:
                self.add(("pricing", raw_id), misfit)
                continue
            for provider in model.providers:
                own = spec.get(provider)
                if not common and own is None:
                    continue
                try:
                    prices[(provider, mid)] = parse_price(
                        {**common, **(own or {})},
                        base=prices.get((provider, mid)),
                        date="project",
                        source=f"{self.doc.file} pricing",
                    )
                except (ValueError, ZeroDivisionError) as exc:
                    self.add(("pricing", raw_id, *((provider,) if own is not None else ())), f"invalid price: {exc}")
        return prices

    def _output(self, name: str, inputs: list[tuple[Path, str]] | None) -> OutputSpec:
        """``output``, its path rendered as a template; checked against ``inputs`` and what the
        project keeps (outputs.py) unless ``inputs`` is None (the caller checks it)."""
        from kling_render.app.outputs import output_problem, protected_for
        from kling_render.records.lockfile import lock_path_for

        raw = self.data.get("output", {})
        value = self.render_text(self.templates.for_cut(), str(raw.get("path", f"renders/{name}.mp4")),
                             ("output", "path"), None)  # fmt: skip
        out_path = self._local_path(("output", "path"), value, must_exist=False) if value else None
        self.output_text = value if out_path is not None else None  # as written: the rows check uses it
        if out_path is not None:
            # Checked on the path as written (a trailing slash), resolved inside output_problem.
            problem = None
            if inputs is not None:
                protected = protected_for(self.path, lock_path_for(self.path), inputs)
                problem = output_problem(os.path.join(self.root, value), protected)
            if problem is not None:
                self.add(("output", "path"), f"{value}: {problem}")
            elif out_path.suffix.lower() != ".mp4":
                self.add(("output", "path"), f"{value}: the final cut is an MP4: the path must end in .mp4")
                self.output_text = None
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
        value = ""
        if "music" in raw:
            value = self.render_text(self.templates.for_cut(), str(raw["music"]), ("audio", "music"), None)
        if value:
            music = self._local_path(("audio", "music"), value, must_exist=True)
            if music is not None and music.suffix.lower() not in AUDIO_EXTENSIONS:
                self.add(
                    ("audio", "music"), f"{music.name} is not an audio file ({', '.join(AUDIO_EXTENSIONS)})"
                )
            elif music is not None:
                try:
                    self.media.check_media(music, "audio")
                except MediaProblem as exc:
                    self.add(("audio", "music"), str(exc))
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
            self.add(path, missing_file(self.root, value))
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
        model = find_model(str(model_id), self.models)
        if model is None:  # the schema's enum reports it already
            return None
        if model.makes_image:
            self.add(
                (*base, "model"),
                f"{model.id} is an image model (output: image): it makes stills, not shots; declare a "
                "still with it under stills: and give the shot image: {still: ID}",
                line_path=where("model"),
            )
            return None
        shot_id = str(raw["id"])
        context = self.templates.for_shot(shot_id, index)

        n_before = len(self.issues)
        ctx = rules.ShotContext(model=model, merged=merged, own=own)
        for key, message in rules.check(ctx):
            message = not_taken_message(key, model, merged.get(key)) or message
            self.add((*base, key), message, line_path=None if key in own or key not in merged else where(key))
        shot_provider = raw.get("provider")
        provider = str(shot_provider or self.data.get("provider", "local"))
        for key, message in rules.provider_problems(model, provider, merged, own):
            at = key if key in merged or key == "model" else "model"
            if at == "model" and shot_provider is not None:
                at = "provider"
            self.add((*base, at), message, line_path=None if at in own else where(at))
        take, takes = int(raw.get("take", 1)), int(merged.get("takes", 1))
        pick = raw.get("pick")
        if isinstance(pick, int) and not take <= pick < take + takes:
            self.add((*base, "pick"), f"{pick} is not a rendered take ({_rendered(take, takes)})")

        duration = rules.effective_duration(model, merged)
        params, prompt_text = self._params(model, merged, base, where, context, owner=shot_id)
        # Every field the model gives a default is sent, so writing the default by hand never
        # changes the shot's key; the duration is always sent.
        params["duration"] = duration
        for key, message in rules.reference_problems(model, params):
            self.add((*base, key), message, line_path=None if key in own else where(key))
        sound = bool(params.get("sound", False)) if model.takes_sound else False
        aspect_ratio = params.get("aspect_ratio") if model.takes("aspect_ratio") else None
        with_video = rules.given(model, merged, "video") or rules.given(model, merged, "videos")
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
            aspect_ratio=aspect_ratio,
            params=params,
            prompt=prompt_text,
            take=take,
            trim=trim,
            transition=transition,
            with_video=with_video,
            line=self.doc.line(base),
            provider=str(shot_provider) if shot_provider is not None else None,
            tier=tier_of(params.get("resolution"), params.get("dynamic_range")),
            own=frozenset(own),
            given=frozenset(k for k in merged if model.takes(k)),
            takes=takes,
            pick=pick if isinstance(pick, int) else None,
        )

    def _stills(self) -> list[Still]:
        """The project's stills, each with its image model's rules and inputs (no defaults: those
        are the shots'); templates see the project's context without ``shot``."""
        stills: list[Still] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(self.data.get("stills", [])):
            if not isinstance(raw, dict) or "model" not in raw:  # the schema has reported it
                continue
            still_id = str(raw.get("id", ""))
            base: DocPath = ("stills", index)
            if still_id in seen:
                self.add((*base, "id"), f"duplicate still id '{still_id}' (first used by stills[{seen[still_id]}])")
            seen.setdefault(still_id, index)
            model = find_model(str(raw["model"]), self.models)
            if model is None:
                continue
            if not model.makes_image:
                self.add(
                    (*base, "model"),
                    f"{model.id} is a video model: a still needs an image model (output: image), "
                    "such as bytedance/seedream-v4.5, or bytedance/seedream-v4.5/edit with reference images",
                )
                continue
            n_before = len(self.issues)
            ctx = rules.ShotContext(model=model, merged=dict(raw), own=set(raw))
            for key, message in rules.check(ctx):
                self.add((*base, key), not_taken_message(key, model, raw.get(key)) or message)
            own_provider = raw.get("provider")
            provider = str(own_provider or self.data.get("provider", "local"))
            for key, message in rules.provider_problems(model, provider, raw, set(raw)):
                at = key if key in raw and key != "model" else "provider" if own_provider is not None else "model"
                self.add((*base, at), message)
            params, prompt_text = self._params(
                model, dict(raw), base, lambda key: None, self.templates.for_cut(), owner=STILL_PREFIX + still_id
            )
            if len(self.issues) > n_before:
                continue
            stills.append(
                Still(
                    id=still_id,
                    index=index,
                    model=model,
                    params=params,
                    prompt=prompt_text,
                    take=int(raw.get("take", 1)),
                    line=self.doc.line(base),
                    provider=str(own_provider) if own_provider is not None else None,
                )
            )
        return stills

    def _params(
        self,
        model: Model,
        merged: dict[str, Any],
        base: DocPath,
        where: Callable[[str], DocPath | None],
        context: ShotTemplates,
        *,
        owner: str,
    ) -> tuple[dict[str, Any], str]:
        """The wire body (media as MediaRef) and the prompt text, from the model's field specs."""
        params: dict[str, Any] = {}
        prompt_text = ""
        for spec in model.fields:
            if spec.only_with is not None and not rules.given(model, merged, spec.only_with):
                continue
            if spec.name in merged:
                value = merged[spec.name]
            elif spec.has_default:
                value = spec.default
            else:
                continue
            path = (*base, spec.name)
            line_path = where(spec.name)
            kind = spec.type
            if kind == "text":
                value = self.render_text(context, str(value), path, line_path)
                if spec.name == "prompt":
                    prompt_text = value
            elif kind == "multi_prompt":
                value = [
                    {
                        "prompt": self.render_text(context, str(p["prompt"]), (*path, i, "prompt"), None),
                        "duration": p["duration"],
                    }
                    for i, p in enumerate(value)
                ]
                prompt_text = " | ".join(p["prompt"] for p in value)
            elif kind in ("image", "video"):
                value = self._input_media(model, kind, value, path, line_path, context, owner)
                if value is None:
                    continue
                if kind == "video":
                    self._check_lengths(spec, [value], path, line_path, single=True)
            elif kind in ("images", "videos", "audios"):
                item_kind = kind[:-1]
                refs = [
                    self._input_media(model, item_kind, v, (*path, i), line_path if isinstance(v, dict) else None,
                                      context, owner)
                    for i, v in enumerate(value)
                ]  # fmt: skip
                value = [r for r in refs if r is not None]
                if kind != "images":
                    self._check_lengths(spec, value, path, line_path)
            elif kind == "number":
                value = float(value)
            elif kind == "integer":
                value = int(value)
            elif kind == "boolean":
                value = bool(value)
            params[spec.name] = value
        return params, prompt_text

    def _input_media(
        self,
        model: Model,
        kind: str,
        value: Any,
        path: DocPath,
        line_path: DocPath | None,
        context: ShotTemplates,
        owner: str,
    ) -> MediaRef | GeneratedRef | None:
        """A media input: a file or URL (a template), or a generated one (``{still: ID}``, ``{from:
        SHOT, frame: POS}``, a video's ``{from: SHOT}``), recorded for the graph check."""
        if isinstance(value, dict):
            ref = parse_ref(value)
            if ref is not None:
                self.sites.append(RefSite(owner, path, ref, line_path, model))
            return ref
        return self._media(self.render_text(context, str(value), path, line_path), path, line_path, model, kind)

    def _check_lengths(
        self, spec: Any, refs: Sequence[object], path: DocPath, line_path: DocPath | None, *, single: bool = False
    ) -> None:
        """Each local file of a video or ``videos``/``audios`` field within the model's lengths, and their sum."""
        if spec.min_seconds is None and spec.max_seconds is None and spec.max_total_seconds is None:
            return
        total = 0.0
        for i, ref in enumerate(refs):
            if not isinstance(ref, MediaRef) or ref.path is None:
                continue  # a URL (not fetched) or another shot's clip (its length is that shot's)
            try:
                seconds = self.media.duration(ref.path)
            except MediaProblem as exc:
                self.add(path if single else (*path, i), str(exc), line_path if single else None)
                continue
            total += seconds
            problem = _length_problem(spec, seconds, ref.path.name)
            if problem:
                self.add(path if single else (*path, i), problem, line_path if single else None)
        if spec.max_total_seconds is not None and total > spec.max_total_seconds + 1e-6:
            self.add(path, f"{total:.1f} s in all; at most {spec.max_total_seconds:g} s together", line_path)

    def _media(
        self, value: str, path: DocPath, line_path: DocPath | None, model: Model, kind: str
    ) -> MediaRef | None:
        if is_url(value) and value.lower().startswith("https://"):
            return MediaRef(url=value)
        memo_key = (value, model.id, kind)
        found = self._media_memo.get(memo_key)
        if found is None:
            found = self._media_memo[memo_key] = self._inspect(value, model, kind)
        ref, problems = found
        for problem in problems:
            self.add(path, problem, line_path)
        return ref

    def _inspect(self, value: str, model: Model, kind: str) -> tuple[MediaRef | None, list[str]]:
        """The MediaRef for a media value, or the problems with it (memoised: projects reuse images)."""
        from kling_render.project.media import check_image

        try:
            resolved = resolve_inside(self.root, value)
        except MediaProblem as exc:
            return None, [str(exc)]
        if not resolved.is_file():
            return None, [missing_file(self.root, value)]
        if kind == "video":
            if resolved.suffix.lower() not in (".mp4", ".mov"):
                return None, [f"{resolved.name}: the reference video must be .mp4 or .mov"]
            try:
                self.media.check_media(resolved, "video")
            except MediaProblem as exc:
                return None, [str(exc)]
        elif kind == "audio":
            if resolved.suffix.lower() not in AUDIO_EXTENSIONS:
                return None, [f"{resolved.name} is not an audio file ({', '.join(AUDIO_EXTENSIONS)})"]
            try:
                self.media.check_media(resolved, "audio")
            except MediaProblem as exc:
                return None, [str(exc)]
        else:
            try:
                info = self.media.image(resolved)
            except MediaProblem as exc:
                return None, [str(exc)]
            problems = check_image(info, resolved, model)
            if problems:
                return None, problems
        return MediaRef(path=resolved, sha256=self.media.sha256(resolved)), []

    def _check_cut(self, shots: list[Shot], fps: int) -> None:
        """Trims and transitions, checked before anything is paid for (the stitch would refuse them).

        A transition is checked against the shot just before it in the file; when that shot is
        itself broken (already reported), its kept length is unknown and the check waits.
        """
        from kling_render.stitch.graph import max_transition

        by_index = {shot.index: shot for shot in shots}
        frame = 1 / fps
        for shot in shots:
            base: DocPath = ("shots", shot.index)
            kept = shot.kept_duration
            if shot.trim.end is not None and shot.trim.end > shot.duration:
                self.add(
                    (*base, "trim", "end"), f"{shot.trim.end:g} is past the clip's end ({shot.duration} s)"
                )
            if kept <= 0:
                self.add((*base, "trim"), "keeps nothing: start must be before end")
            elif kept < frame:
                self.add((*base, "trim"), f"keeps {kept:g} s, less than one frame at {fps} fps")
            if shot.transition.type == "cut":
                continue
            if shot.index == 0:
                if "transition" in self.data["shots"][0]:
                    self.add((*base, "transition"), "the first shot has no previous shot to transition from")
                continue
            prev = by_index.get(shot.index - 1)
            if shot.transition.duration <= 0:
                self.add(
                    (*base, "transition", "duration"), f"a {shot.transition.type} needs a duration above 0"
                )
            elif prev is not None:
                limit = max_transition(prev.kept_duration, kept)
                if shot.transition.duration > limit + 1e-9:
                    self.add(
                        (*base, "transition", "duration"),
                        f"{shot.transition.duration:g} s is longer than half the shorter neighbour "
                        f"(at most {limit:g} s here)",
                    )


def _rate_misfit(raw_id: str, model: Model, entries: Sequence[Mapping[str, Any]]) -> str | None:
    """A ``pricing:`` entry whose rate does not fit the model: an image model is priced per_image
    (every entry gives it), a video model per second (none gives per_image)."""
    given = {k for entry in entries for k in entry}
    if model.makes_image and not all("per_image" in entry for entry in entries if entry):
        return f"{raw_id} is an image model, priced per_image" + (", not per_second" if "per_second" in given else "")
    if not model.makes_image and "per_image" in given:
        return f"{raw_id} is a video model, priced per_second, not per_image"
    return None


def _rendered(take: int, takes: int) -> str:
    """The takes a shot renders, as the pick message says them."""
    if takes == 1:
        return f"the shot renders take {take} only" + ("" if take == 1 else f" (take: {take})")
    return f"the shot renders takes {take}–{take + takes - 1} (take: {take}, takes: {takes})"


def _length_problem(spec: Any, seconds: float, name: str) -> str | None:
    low, high = spec.min_seconds, spec.max_seconds
    if low is not None and seconds < low - 1e-6:
        return f"{name} lasts {seconds:.1f} s; each must last at least {low:g} s"
    if high is not None and seconds > high + 1e-6:
        return f"{name} lasts {seconds:.1f} s; each must last at most {high:g} s"
    return None


