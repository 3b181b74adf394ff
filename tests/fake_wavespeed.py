"""A fake WaveSpeed API (SPEC §5) on a real socket, for tests, crash runs and benchmarks.

In a test::

    with FakeWaveSpeed(latency=0.2) as server:      # or the ``fake_wavespeed`` fixture (conftest.py)
        server.faults.add("429", "/api/v3/kwaivgi/", count=2, retry_after=1)
        ... WaveSpeedProvider(server.api_key, server.base_url, cache_dir) ...
        assert len(server.submits()) == 1

As a process (the first stdout line is the base URL)::

    python tests/fake_wavespeed.py --port 0 --latency 3 --chaos-seed 7 --chaos-rate 0.2

A separate process is inspected and steered over HTTP: ``GET /_fake/requests``,
``GET /_fake/stats``, ``POST /_fake/faults`` with ``{"kind", "path_prefix", "count", ...}``,
``POST /_fake/clear`` (drop every scripted fault).

Fault kinds: ``429`` (with ``retry_after``), ``500``/``502``/``503``/``504``, ``401``/``402``/``403``
(``message``), ``envelope`` (an HTTP 200 whose body is ``{"code": code, "message": message}``),
``balance`` (an envelope saying the balance is empty: its code is not documented, so ``code``
defaults to 400), ``drop`` (close without answering), ``hang`` (answer nothing for ``seconds``,
then drop), ``huge`` (a JSON answer of ``size`` bytes, its length announced when ``announce``), ``gzip``
(a small gzip body that inflates to ``size`` bytes),
``no_id``/``bad_id`` (a submit answered 200 without a task id, or with ``task_id``), ``fail``
(the next task submitted ends ``status`` (failed, timeout, cancelled) with ``error`` and
``code``), ``slow`` (the next task takes ``latency`` seconds), ``length`` (the next task's clip
lasts ``seconds`` instead of the asked duration), ``no_outputs`` (the next task completes with
no output), ``output_url`` (the next task's ``outputs[0]`` is ``url``, formatted
with ``{base}`` and ``{id}``; ``""`` is an empty URL), ``expired`` (output 404), ``truncate``
(half the body), ``redirect`` (302 to the same output), ``redirect_file`` (302 to file:),
``oversize`` (announce a 3 GiB body, send a little, hang up; ``GET /pages/...`` is a web page,
for ``output_url``), ``stall`` (send the output at
``rate`` bytes/s for ``seconds``, then hang up), ``html`` (an HTML page instead of the clip),
``trickle`` (announce the whole clip, send half, wait ``seconds`` or until ``release`` (a
threading.Event, in process) is set, then send the rest: a slow download), ``corrupt`` (the
whole clip, its length, boxes and framing right, with bytes flipped inside one picture's slice
data: only a decode finds it), ``cut_short`` (the first half of the clip as a complete answer:
a file truncated before it was served), ``drip`` (any answer, its body sent at ``rate`` bytes/s,
and with ``head`` its status line and headers too: an answer that never stalls a single read and
never ends), ``poll_status`` (a poll answered with ``status`` as the task's status, ``{token}``
replaced by the bearer token received: a server that echoes the key).
``every`` N applies a fault to every Nth matching request only (``count`` times); a fault with
``body_contains`` applies only to a request whose body contains that text (one row's shot, say).

As on the real service, a submit answered 5xx (503 included), dropped, hung, without an id or
with a bad one still creates its task, unless the fault says ``create: false``; 429 and 4xx
never do. ``POST /api/v3/predictions`` lists tasks of the last 7 days, newest first, with the
filters ``model``, ``status``, ``created_after``, ``created_before``, ``page`` and ``page_size``
(1-100) and, with ``include_inputs``, each task's request body (``listing_inputs = False``
makes it ignore that). Chaos mode draws transport faults per endpoint (``CHAOS_KINDS``);
``--chaos-kinds`` restricts them (``429`` is the one that never creates a task) and may add
``fail`` (with ``--chaos-fail-code``). The 401 message echoes the token it got, so clients must
keep keys out of their errors.

Media: tiny clips (192×108) by default; ``media="720p"``/``"1080p"`` (``--media``) serves what
Kling delivers instead: H.264 at 24 fps and a real bitrate (a moving, noisy test pattern,
``MEDIA``), each size and duration encoded once into ``kling-render-fake-clips`` in the temp dir.
Every task gets the same clip, unless ``variants=N`` (``--variants N``): then each prompt gets one
of N distinct clips (other hue, other noise), in the order prompts are first served, the same one
for as long as the server runs; ``distinct`` (``--distinct``) gives every task its own clip, as a
generative model does (two takes of one request differ); a stitch benchmark needs distinct clips (identical ones make
identical segments, which a segment store encodes once).
``POST /api/v3/model/pricing`` prices ``{model_id, inputs}`` from ``server.prices`` (``PRICES``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # run as a file, or imported as tests.fake_wavespeed
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from stand_in_http import Drop, Reply, StandIn, StandInHandler, iso, json_reply, serve_until_signalled

V3_FIELDS = {"image", "prompt", "multi_prompt", "negative_prompt", "end_image", "duration", "cfg_scale"}
V3_FIELDS |= {"sound", "element_list", "shot_type"}
V3_T2V_FIELDS = V3_FIELDS - {"image", "end_image"} | {"aspect_ratio"}
MODELS: dict[str, set[str]] = {
    "kling-video-o3-std/image-to-video": {
        "prompt", "multi_prompt", "image", "end_image", "duration", "sound", "shot_type",
    },
    "kling-v3.0-pro/image-to-video": V3_FIELDS,
    "kling-v3.0-std/image-to-video": V3_FIELDS,
    "kling-video-o1-std/image-to-video": {"prompt", "image", "last_image", "duration"},
    "kling-video-o3-std/reference-to-video": {
        "prompt", "images", "video", "keep_original_sound", "sound", "aspect_ratio", "duration",
    },
    "kling-v3.0-std/text-to-video": V3_T2V_FIELDS,
    "kling-v3.0-pro/text-to-video": V3_T2V_FIELDS,
    # Kling 4.0 (WaveSpeed's docs pages and launch notes): 3-30 s, audio always, no sound switch.
    "kling-v4.0/text-to-video": {"prompt", "aspect_ratio", "resolution", "dynamic_range", "duration"},
    "kling-v4.0/image-to-video": {
        "image", "prompt", "keyframes", "last_image", "aspect_ratio", "resolution", "dynamic_range", "duration",
    },
    "kling-v4.0/reference-to-video": {
        "prompt", "images", "videos", "audios", "keep_original_sound", "aspect_ratio", "resolution", "dynamic_range",
        "duration",
    },
    "kling-v4.0/video-edit": {"prompt", "video", "images", "aspect_ratio", "resolution", "duration"},
    "kling-v4.0/video-extend": {"video", "prompt", "last_image", "resolution", "duration"},
}  # fmt: skip
V4_RESOLUTIONS = ("720p", "1080p", "4k")
SHOT_TYPES = ("customize", "intelligent")
# What POST /api/v3/model/pricing answers: USD per second, the sound factor, the rate with a video.
# The fake's own figures (from WaveSpeed's pages), not the catalog's: a test changes them here.
PRICES: dict[str, tuple[float, float, float | None] | dict[str, float]] = {
    "kling-video-o3-std/image-to-video": (0.18, 4 / 3, None),
    "kling-v3.0-pro/image-to-video": (0.112, 1.5, None),
    "kling-v3.0-std/image-to-video": (0.084, 1.5, None),
    "kling-video-o1-std/image-to-video": (0.084, 1.0, None),
    "kling-video-o3-std/reference-to-video": (0.084, 1.0, 0.126),
    "kling-v3.0-std/text-to-video": (0.084, 1.5, None),
    "kling-v3.0-pro/text-to-video": (0.112, 1.5, None),
    # Kling 4.0: USD per second by resolution (720p and 1080p are on WaveSpeed's pages; the others
    # are the fake's own, as WaveSpeed's pricing endpoint would answer what its pages do not show).
    "kling-v4.0/text-to-video": {"720p": 0.157, "1080p": 0.235, "4k": 0.47},
    "kling-v4.0/image-to-video": {"720p": 0.157, "1080p": 0.235, "4k": 0.47},
    "kling-v4.0/reference-to-video": {"720p": 0.157, "1080p": 0.235, "4k": 0.47},
    "kling-v4.0/video-edit": {"720p": 0.188, "1080p": 0.282, "4k": 0.564},
    "kling-v4.0/video-extend": {"720p": 0.157, "1080p": 0.235, "4k": 0.47},
}
# Image models: USD per generated image, whatever the inputs.
IMAGE_PRICES: dict[str, float] = {"bytedance/seedream-v4.5": 0.04, "bytedance/seedream-v4.5/edit": 0.04}
# Image models the stand-in serves (POST /api/v3/<path>): their fields. A test adds the path of an
# image model its project declares under `models:` (``FakeWaveSpeed(image_models={...})``).
IMAGE_MODELS: dict[str, set[str]] = {
    "bytedance/seedream-v4.5": {"prompt", "size"},
    "bytedance/seedream-v4.5/edit": {"prompt", "images", "size"},
}
MEDIA_FIELDS = ("image", "end_image", "last_image", "video")
MEDIA_LISTS = ("images", "keyframes", "videos", "audios")
SIZES = {"16:9": (192, 108), "9:16": (108, 192), "1:1": (128, 128)}
# media name -> (short side, video bitrate, grain): ~1.25 and ~1.75 MB/s, what real 720p/1080p clips
# carry. Grain is temporal noise (ffmpeg's noise=alls): 12 makes every frame as costly to re-encode as
# camera grain does (the worst case for a stitch); the "-clean" kinds have none, a moving pattern as
# smooth as most generated footage, at the same size and bitrate ceiling.
MEDIA: dict[str, tuple[int, str, int]] = {
    "720p": (720, "10M", 12),
    "1080p": (1080, "14M", 12),
    "720p-clean": (720, "10M", 0),
    "1080p-clean": (1080, "14M", 0),
}
CHAOS_KINDS = {
    "/api/v3/kwaivgi/": ("429", "503", "500", "502", "504", "drop"),
    "/api/v3/predictions/": ("429", "500", "503", "drop"),
    "/api/v3/media/uploads": ("429", "503"),
    "/upload/": ("503",),
    "/outputs/": ("503", "truncate", "drop"),
}
# On submit these still create the task: the answer is lost or unusable, the task exists.
UNCERTAIN = {"500", "502", "503", "504", "drop", "hang", "huge", "gzip", "no_id", "bad_id"}
TASK_KINDS = {"fail", "slow", "output_url", "no_outputs", "length"}
SUBMIT_ANSWER_KINDS = {"no_id", "bad_id"}
OUTPUT_KINDS = {
    "expired", "truncate", "redirect", "redirect_file", "oversize", "stall", "html", "trickle", "corrupt", "cut_short",
}  # fmt: skip
MESSAGES = {401: "invalid API key", 402: "Insufficient balance", 403: "forbidden: this key may not use the model"}
BALANCE_MESSAGE = "Insufficient balance, please top up your account"
HTML_PAGE = b"<!doctype html><html><body><h1>Service temporarily unavailable</h1></body></html>"
RETENTION = 7 * 24 * 3600.0  # the service lists (and keeps) tasks for 7 days


def validate(model: str, body: Any) -> str | None:
    """Why the real service would refuse this submit body (400), or None."""
    if model not in MODELS:
        return f"unknown model {model!r}"
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    allowed = MODELS[model]
    for name in sorted(set(body) - allowed):
        return f"unknown parameter {name!r} for {model}"
    if model.startswith("kling-v4.0/"):
        return _validate_v4(model, body)
    multi, o1, ref = "multi_prompt" in allowed, "o1-std" in model, "reference" in model
    if multi and ("prompt" in body) == ("multi_prompt" in body):
        return "either prompt or multi_prompt must be provided, but not both"
    if not multi and not isinstance(body.get("prompt"), str):
        return "prompt is required"
    if "image" in allowed and "image" not in body:
        return "image is required"
    if "shot_type" in body and body["shot_type"] not in SHOT_TYPES:
        return f"shot_type must be one of {', '.join(SHOT_TYPES)}"
    duration = body.get("duration", 5)
    if not isinstance(duration, int) or isinstance(duration, bool):
        return "duration must be an integer"
    if not 3 <= duration <= (10 if o1 else 15):
        return f"duration {duration} is out of range"
    if o1 and "last_image" not in body and duration not in (5, 10):
        return "only 5s or 10s are supported when last_image is not used"
    for name in ("sound", "keep_original_sound"):
        if name in body and not isinstance(body[name], bool):
            return f"{name} must be a boolean"
    cfg = body.get("cfg_scale", 0.5)
    if not isinstance(cfg, int | float) or not 0 <= cfg <= 1:
        return "cfg_scale must be between 0 and 1"
    if "multi_prompt" in body:
        shots = body["multi_prompt"]
        if "end_image" in body:
            return "multi_shot is not supported with end image"
        if not isinstance(shots, list) or not shots or not all(isinstance(s, dict) for s in shots):
            return "multi_prompt must be a non-empty list of {prompt, duration}"
        if sum(s.get("duration", 0) for s in shots) != duration:
            return "multi_prompt durations must sum to duration"
    if "aspect_ratio" in allowed and body.get("aspect_ratio", "16:9") not in SIZES:
        return "aspect_ratio must be 16:9, 9:16 or 1:1"
    if ref:
        images = body.get("images", [])
        if not isinstance(images, list) or len(images) > (4 if "video" in body else 7):
            return "images: at most 7 (4 with a video)"
        if "video" in body and body.get("sound"):
            return "sound is not supported with a reference video"
    return None


def _validate_v4(model: str, body: dict[str, Any]) -> str | None:
    """Kling 4.0's rules as WaveSpeed's pages state them."""
    task = model.split("/")[1]
    if task != "image-to-video" and not isinstance(body.get("prompt"), str):
        return "prompt is required"
    duration = body.get("duration", 5)
    if not isinstance(duration, int) or isinstance(duration, bool) or not 3 <= duration <= 30:
        return "duration must be an integer from 3 to 30"
    if body.get("resolution", "720p") not in V4_RESOLUTIONS:
        return "resolution must be 720p, 1080p or 4k"
    if "dynamic_range" in body and (body["dynamic_range"] != "hdr" or body.get("resolution") not in ("1080p", "4k")):
        return "dynamic_range hdr is for 1080p and 4k"
    required = {"image-to-video": "image", "video-edit": "video", "video-extend": "video"}.get(task)
    if required and required not in body:
        return f"{required} is required"
    if len(body.get("keyframes", [])) > 8:
        return "keyframes: at most 8"
    files = sum(len(body.get(n, [])) for n in ("images", "videos", "audios"))
    if task == "reference-to-video" and (files > 15 or len(body.get("images", [])) > 10):
        return "references: at most 10 images and 15 files"
    return None


@dataclass
class Fault:
    kind: str
    path_prefix: str = "/"
    count: int = 1
    method: str | None = None
    retry_after: float | str | None = None
    error: str = "content moderation: the prompt was flagged"
    latency: float = 5.0
    seconds: float = 30.0
    url: str | None = None
    code: int | None = None  # fail: the task's error code; envelope/balance: the envelope's code
    message: str | None = None  # the answer's message (status and envelope faults)
    status: str = "failed"  # fail: the task's final status (failed, timeout, cancelled)
    every: int = 1  # apply to every Nth matching request only
    create: bool | None = None  # on submit: does the task exist anyway (default: by kind)
    task_id: str | None = None  # bad_id: the id the answer carries
    size: int = 256 * 1024 * 1024  # huge: bytes of the answer
    announce: bool = True  # huge: announce the length (else: read until the connection closes)
    rate: float = 10.0  # stall: bytes per second
    release: Any = None  # trickle: a threading.Event that ends the wait early (in-process tests)
    seen: int = 0  # matching requests so far (for ``every``)
    body_contains: str | None = None  # task faults: only a submit whose JSON body contains this text
    head: bool = False  # drip: the status line and headers drip too

    def creates(self) -> bool:
        """On a submit: whether the task is created although the answer is this fault."""
        if self.create is not None:
            return self.create
        return self.kind in UNCERTAIN or (self.kind == "envelope" and (self.code or 400) >= 500)


class Faults:
    """Faults to inject, matched by kind, path prefix and method; plus an optional seeded chaos mode."""

    def __init__(
        self, seed: int | None = None, rate: float = 0.0, kinds: set[str] | None = None, fail_code: int | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._items: list[Fault] = []
        self._rng = random.Random(seed)
        self.rate, self.kinds, self.fail_code = rate, kinds, fail_code
        self.injected: Counter[str] = Counter()  # faults handed out, by kind (chaos ones too)

    def take(self, method: str, path: str, kinds: set[str] | None = None, body: str = "") -> Fault | None:
        """The next fault of ``kinds`` (default: any but the task kinds, chaos too) for a request
        (``body``: a submit's JSON body, for faults with ``body_contains``)."""
        fault = self._take(method, path, kinds, body)
        if fault is not None:
            with self._lock:
                self.injected[fault.kind] += 1
        return fault

    def add(self, kind: str, path_prefix: str = "/", count: int = 1, **options: Any) -> Fault:
        fault = Fault(kind, path_prefix, count, **options)
        with self._lock:
            self._items.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _take(self, method: str, path: str, kinds: set[str] | None, body: str = "") -> Fault | None:
        with self._lock:
            for fault in self._items:
                wanted = fault.kind in kinds if kinds else fault.kind not in TASK_KINDS
                mine = path.startswith(fault.path_prefix) and fault.method in (None, method)
                mine = mine and (fault.body_contains is None or fault.body_contains in body)
                if fault.count > 0 and wanted and mine and _applies(fault.kind, method, path):
                    fault.seen += 1
                    if fault.seen % max(1, fault.every):
                        continue
                    fault.count -= 1
                    return fault
            if self.rate <= 0 or (kinds and (kinds != {"fail"} or "fail" not in (self.kinds or ()))):
                return None  # chaos fails tasks only when --chaos-kinds names "fail"
            if kinds:
                if self._rng.random() >= self.rate:
                    return None
                return Fault("fail", error="chaos: generation failed", code=self.fail_code)
            for prefix, choices in CHAOS_KINDS.items():
                allowed = [k for k in choices if self.kinds is None or k in self.kinds]
                if path.startswith(prefix) and allowed and self._rng.random() < self.rate:
                    return Fault(self._rng.choice(allowed), prefix, retry_after=1)
        return None


def _applies(kind: str, method: str, path: str) -> bool:
    if kind in OUTPUT_KINDS:
        return method == "GET" and path.startswith("/outputs/")
    if kind in TASK_KINDS or kind in SUBMIT_ANSWER_KINDS:
        return method == "POST" and path.startswith("/api/v3/kwaivgi/")
    return True


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, else the byte count
    status: int = 0  # 0: dropped without an answer
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass
class Task:
    id: str
    model: str
    body: dict[str, Any]
    created: float  # monotonic: drives the status
    latency: float
    error: str | None = None
    polls: int = 0
    downloads: int = 0
    output_url: str | None = None
    created_at: float = 0.0  # wall clock, as listed (tests move it back to age a task)
    code: int | None = None  # the failure code of a failed task
    fail_status: str = "failed"
    no_outputs: bool = False
    clip_seconds: int | None = None  # the clip's real length, when it differs from the asked one
    kind: str = "clip"  # "image" for an image model's task (its output is a PNG)


class FakeWaveSpeed(StandIn):
    """The fake service: state, faults and a threaded HTTP server on 127.0.0.1 (stand_in_http.py)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.2,
        api_key: str = "test-key-0123456789",
        faults: Faults | None = None,
        media: str = "tiny",
        variants: int = 0,
        distinct: bool = False,
        image_models: dict[str, set[str]] | None = None,
    ) -> None:
        if media != "tiny" and media not in MEDIA:
            raise ValueError(f"media must be tiny or one of {sorted(MEDIA)}")
        self.latency, self.api_key, self.media = latency, api_key, media
        self.variants = variants  # 0: one clip for every task; N: one of N distinct clips per prompt
        self.distinct = distinct  # every task its own clip, as a generative model makes (takes, edits upstream)
        self._variant_of: dict[str, int] = {}
        self.faults = faults or Faults()
        self.requests: list[Recorded] = []
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.task_requests: Counter[str] = Counter()
        self.prices = dict(PRICES)  # per model, as in PRICES; a test may change one
        self.image_models = {**IMAGE_MODELS, **(image_models or {})}  # path -> fields
        self.listing_inputs = True  # False: the task list ignores include_inputs
        self.extend_input_seconds = 2  # what a video-extend output holds before its new part
        self.max_running = 0  # the most tasks running at once (the real service limits it per tier)
        super().__init__(host, port, _Handler, "fake-wavespeed")

    def submits(self, model: str | None = None) -> list[Recorded]:
        """Every submit POST received (answered or not), optionally for one model."""
        prefix = "/api/v3/kwaivgi/" + (model or "")
        return [r for r in self.requests if r.method == "POST" and r.path.startswith(prefix)]

    def image_submits(self) -> list[Recorded]:
        """Every submit POST of an image model received (answered or not)."""
        paths = {f"/api/v3/{m}" for m in self.image_models}
        return [r for r in self.requests if r.method == "POST" and r.path in paths]

    def listings(self) -> list[Recorded]:
        """Every task-list request received."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/api/v3/predictions"]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": len(self.requests),
                "submits": len(self.submits()),
                "faults": dict(self.faults.injected),
                "listings": len(self.listings()),
                "max_running": self.max_running,
                "tasks": {t.id: {"model": t.model, "polls": t.polls, "downloads": t.downloads,
                                 "failed": t.error is not None, "code": t.code, "body": t.body,
                                 "requests": self.task_requests[t.id]} for t in self.tasks.values()},
            }  # fmt: skip

    def variant_of(self, task: Task) -> int:
        """The clip variant a task is served: 0 (the one clip) unless ``variants``; then 1..N by the
        order its prompt was first served (cycling), so one prompt always gets the same clip."""
        if self.distinct:
            with self.lock:
                return self._variant_of.setdefault(task.id, len(self._variant_of) + 1)
        if not self.variants:
            return 0
        prompt = json.dumps(task.body.get("prompt", task.body.get("multi_prompt")), sort_keys=True)
        with self.lock:
            return self._variant_of.setdefault(prompt, len(self._variant_of) % self.variants + 1)

    def status_of(self, task: Task) -> str:
        elapsed = time.monotonic() - task.created
        if elapsed >= task.latency:
            return task.fail_status if task.error else "completed"
        return "created" if elapsed < task.latency / 10 else "processing"


class _Handler(StandInHandler):
    @property
    def fake(self) -> FakeWaveSpeed:
        fake = self.server.fake
        assert isinstance(fake, FakeWaveSpeed)
        return fake

    def _dispatch(self) -> None:
        self.record: Recorded | None = None
        body = self.read_body()
        path = self.path.split("?", 1)[0]
        if path.startswith("/_fake/"):
            return self._send(self._control(path))
        self.record = Recorded(self.command, path, dict(self.headers.items()), body, at=time.monotonic())
        self.record_path = path
        with self.fake.lock:
            self.fake.requests.append(self.record)
        fault = self.fake.faults.take(self.command, path, body=self.raw.decode("utf-8", "replace"))
        submit = self.command == "POST" and path.startswith("/api/v3/kwaivgi/")
        try:
            if fault is None:
                return self._send(self._route(path, body))
            kind = fault.kind
            if kind in OUTPUT_KINDS:
                reply = self._route(path, body)
                return self._send(self._output_fault(fault, path, reply) if reply[0] == 200 else reply)
            if submit and fault.creates():
                reply = self._route(path, body)  # a submit creates its task even if the answer is lost
                if kind in SUBMIT_ANSWER_KINDS and reply[0] == 200:
                    return self._send(self._odd_id(fault, reply))
            if kind == "hang":
                self.fake.stopping.wait(fault.seconds)
            if kind in {"drop", "hang"}:
                raise Drop
            if kind == "huge":
                return self._huge(fault)
            if kind == "drip":
                return self._drip(fault, self._route(path, body))
            if kind == "poll_status":
                return self._send(self._echo_status(fault, self._route(path, body)))
            if kind == "gzip":
                return self._send(self._gzip_bomb(fault))
            if kind in {"envelope", "balance"}:
                code = fault.code or 400
                default = BALANCE_MESSAGE if kind == "balance" else f"injected envelope code {code}"
                return self._send(json_reply(200, {"code": code, "message": fault.message or default}))
            status = int(kind)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            message = fault.message or MESSAGES.get(status, f"injected {status}")
            self._send(json_reply(status, {"code": status, "message": message}, headers))
        except Drop:
            self.drop()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (a capped answer)
            self.close_connection = True

    def _route(self, path: str, body: Any) -> Reply:
        if path.startswith("/api/v3/"):
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if token != self.fake.api_key:  # echoes the token: clients must keep it out of errors
                return json_reply(401, {"code": 401, "message": f"invalid API key {token!r}"})
        if self.command == "POST" and path == "/api/v3/media/uploads":
            return self._upload_slot(body)
        if self.command == "POST" and path == "/api/v3/model/pricing":
            return self._pricing(body)
        if self.command == "POST" and path.startswith("/api/v3/kwaivgi/"):
            return self._submit(path.removeprefix("/api/v3/kwaivgi/"), body)
        if self.command == "POST" and path.removeprefix("/api/v3/") in self.fake.image_models:
            return self._submit_image(path.removeprefix("/api/v3/"), body)
        if self.command == "POST" and path == "/api/v3/predictions":
            return self._list(body)
        poll = re.fullmatch(r"/api/v3/predictions/([\w-]+)/result", path)
        if self.command == "GET" and poll:
            return self._poll(poll.group(1))
        if self.command == "PUT" and path.startswith("/upload/"):
            return self._put(path.removeprefix("/upload/"))
        if self.command == "GET" and path.startswith("/media/"):
            upload = self.fake.uploads.get(path.split("/")[2])
            if upload and upload["data"] is not None:
                return 200, upload["data"], {"Content-Type": upload["content_type"]}
        if self.command == "GET" and path.startswith("/outputs/"):
            return self._output(path)
        if self.command == "GET" and path.startswith("/pages/"):  # an output URL that is a web page
            return 200, HTML_PAGE, {"Content-Type": "text/html"}
        return json_reply(404, {"code": 404, "message": f"no route for {self.command} {path}"})

    def _upload_slot(self, body: Any) -> Reply:
        ok = isinstance(body, dict) and set(body) == {"filename", "size", "content_type"}
        if not ok or not isinstance(body["size"], int) or body["size"] <= 0 or not body["filename"]:
            return json_reply(400, {"code": 400, "message": "need filename, size (>0), content_type"})
        token = uuid.uuid4().hex
        with self.fake.lock:
            self.fake.uploads[token] = {**body, "data": None}
        headers = {"Content-Type": body["content_type"], "x-fake-upload-token": token}
        return _ok({
            "upload": {"method": "PUT", "url": f"{self.fake.base_url}/upload/{token}", "headers": headers},
            "download_url": f"{self.fake.base_url}/media/{token}/{body['filename']}",
        })  # fmt: skip

    def _pricing(self, body: Any) -> Reply:
        """``{model_id, inputs}`` -> ``data: {model_id, unit_price, currency}``, as WaveSpeed documents it."""
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), dict):
            return json_reply(400, {"code": 400, "message": "need model_id and inputs"})
        model_id = str(body.get("model_id", ""))
        if model_id in IMAGE_PRICES:
            return _ok({"model_id": model_id, "unit_price": IMAGE_PRICES[model_id], "currency": "USD"})
        price = self.fake.prices.get(model_id.removeprefix("kwaivgi/"))
        if price is None:
            return json_reply(400, {"code": 400, "message": f"model {model_id!r} not found"})
        inputs = body["inputs"]
        if isinstance(price, dict):  # Kling 4.0: a rate per resolution, audio included
            unit = price[inputs.get("resolution", "720p")] * inputs.get("duration", 5)
            return _ok({"model_id": model_id, "unit_price": round(unit, 6), "currency": "USD"})
        rate, sound, video_rate = price
        if inputs.get("video") and video_rate is not None:
            rate = video_rate
        unit = rate * inputs.get("duration", 5) * (sound if inputs.get("sound") else 1)
        return _ok({"model_id": model_id, "unit_price": round(unit, 6), "currency": "USD"})

    def _put(self, token: str) -> Reply:
        upload = self.fake.uploads.get(token)
        if upload is None:
            return json_reply(404, {"message": "no such upload"})
        if "Authorization" in self.headers:
            return json_reply(400, {"message": "the upload URL takes no Authorization header"})
        if self.headers.get("x-fake-upload-token") != token or (
            self.headers.get("Content-Type") != upload["content_type"]
        ):
            return json_reply(403, {"message": "signature mismatch: send exactly the announced headers"})
        if len(self.raw) != upload["size"]:
            return json_reply(400, {"message": f"got {len(self.raw)} bytes, announced {upload['size']}"})
        upload["data"] = self.raw
        return 200, b"", {}

    def _submit(self, model: str, body: Any) -> Reply:
        problem = validate(model, body) or self._check_media(body)
        if problem:
            return json_reply(400, {"code": 400, "message": problem})
        text = json.dumps(body, ensure_ascii=False)  # every task fault may say ``body_contains``
        fail = self.fake.faults.take("POST", self.record_path, {"fail"}, text)
        slow = self.fake.faults.take("POST", self.record_path, {"slow"}, text)
        latency = slow.latency if slow else self.fake.latency
        task = Task(uuid.uuid4().hex, model, body, time.monotonic(), latency, fail.error if fail else None)
        task.created_at = time.time()
        if fail is not None:
            task.code, task.fail_status = fail.code, fail.status
        custom = self.fake.faults.take("POST", self.record_path, {"output_url"}, text)
        if custom is not None and custom.url is not None:
            task.output_url = custom.url.format(base=self.fake.base_url, id=task.id)
        task.no_outputs = self.fake.faults.take("POST", self.record_path, {"no_outputs"}, text) is not None
        length = self.fake.faults.take("POST", self.record_path, {"length"}, text)
        if length is not None:
            task.clip_seconds = int(length.seconds)
        with self.fake.lock:
            self.fake.tasks[task.id] = task
            running = sum(1 for t in self.fake.tasks.values() if self.fake.status_of(t) in ("created", "processing"))
            self.fake.max_running = max(self.fake.max_running, running)
        return _ok(self._task_view(task))

    def _submit_image(self, model: str, body: Any) -> Reply:
        """An image model's submit: the same task life as a clip's; its output is a PNG."""
        fields = self.fake.image_models[model]
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return json_reply(400, {"code": 400, "message": "prompt is required"})
        for name in sorted(set(body) - fields):
            return json_reply(400, {"code": 400, "message": f"unknown parameter {name!r} for {model}"})
        problem = self._check_media(body)
        if problem:
            return json_reply(400, {"code": 400, "message": problem})
        task = Task(uuid.uuid4().hex, model, body, time.monotonic(), self.fake.latency, kind="image")
        task.created_at = time.time()
        with self.fake.lock:
            self.fake.tasks[task.id] = task
        return _ok(self._task_view(task))

    def _check_media(self, body: dict[str, Any]) -> str | None:
        values = [body[n] for n in MEDIA_FIELDS if n in body] + [v for n in MEDIA_LISTS for v in body.get(n, [])]
        for value in values:
            if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                return f"media inputs must be http(s) URLs, got {value!r}"
            if value.startswith(self.fake.base_url + "/media/"):
                upload = self.fake.uploads.get(value.split("/")[4])
                if upload is None or upload["data"] is None:
                    return f"{value} was never uploaded"
        return None

    def _poll(self, task_id: str) -> Reply:
        task = self.fake.tasks.get(task_id)
        if task is None:
            return json_reply(404, {"code": 404, "message": f"task {task_id} not found"})
        with self.fake.lock:
            task.polls += 1
            self.fake.task_requests[task_id] += 1
        return _ok(self._task_view(task))

    def _task_view(self, task: Task) -> dict[str, Any]:
        status = self.fake.status_of(task)
        suffix = ".png" if task.kind == "image" else ".mp4"
        output = task.output_url if task.output_url is not None else f"{self.fake.base_url}/outputs/{task.id}{suffix}"
        outputs = [output] if status == "completed" and not task.no_outputs else []
        failed = status == task.fail_status and task.error is not None
        view = {
            "id": task.id, "model": task.model if task.kind == "image" else f"kwaivgi/{task.model}",
            "status": status, "outputs": outputs,
            "error": task.error if failed else "", "has_nsfw_contents": [],
            "urls": {"get": f"{self.fake.base_url}/api/v3/predictions/{task.id}/result"},
            "created_at": iso(task.created_at), "timings": {"inference": int(task.latency * 1000)},
        }  # fmt: skip
        if not failed:
            view["code"] = 0
        elif task.code is not None:
            view["code"] = task.code
        return view

    def _list(self, body: Any) -> Reply:
        """``POST /api/v3/predictions``: the tasks of the last 7 days, newest first, filtered and paged."""
        if not isinstance(body, dict):
            return json_reply(400, {"code": 400, "message": "the body must be a JSON object"})
        page, size = body.get("page"), body.get("page_size")
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            return json_reply(400, {"code": 400, "message": "page must be an integer >= 1"})
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100:
            return json_reply(400, {"code": 400, "message": "page_size must be between 1 and 100"})
        bounds = []
        for name in ("created_after", "created_before"):
            value = body.get(name)
            try:
                bounds.append(None if value is None else datetime.fromisoformat(str(value)).timestamp())
            except ValueError:
                return json_reply(400, {"code": 400, "message": f"{name} must be an ISO 8601 date-time"})
        after, before = bounds
        model, status = body.get("model"), body.get("status")
        horizon = time.time() - RETENTION
        with self.fake.lock:
            tasks = sorted(self.fake.tasks.values(), key=lambda t: t.created_at, reverse=True)
        chosen = [
            t for t in tasks
            if t.created_at >= horizon
            and (model is None or model == (t.model if t.kind == "image" else f"kwaivgi/{t.model}"))
            and (status is None or status == _list_status(self.fake.status_of(t)))
            and (after is None or t.created_at >= after)
            and (before is None or t.created_at <= before)
        ]  # fmt: skip
        items = []
        for task in chosen[(page - 1) * size : page * size]:
            view = self._task_view(task)
            if body.get("include_inputs") is True and self.fake.listing_inputs:
                view["inputs"] = task.body
            items.append(view)
        return _ok({"page": page, "total": len(chosen), "items": items})

    def _odd_id(self, fault: Fault, reply: Reply) -> Reply:
        """A submit answer without its task id, or with ``fault.task_id`` instead (the task exists)."""
        envelope = json.loads(reply[1])
        if fault.kind == "no_id":
            envelope["data"].pop("id", None)
        else:
            envelope["data"]["id"] = fault.task_id if fault.task_id is not None else "bad\nid"
        return json_reply(200, envelope)

    def _drip(self, fault: Fault, reply: Reply) -> None:
        """``reply`` sent at ``fault.rate`` bytes/s (its head too with ``fault.head``): every read
        gets a byte or two in time, the answer takes minutes."""
        status, data, headers = reply
        if self.record is not None:
            self.record.status = status
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        lines += [f"{name}: {value}" for name, value in {"Content-Length": str(len(data)), **headers}.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if not fault.head:
            self.wfile.write(head)
            self.wfile.flush()
            head = b""
        step, pause = max(1, int(fault.rate / 10)), 0.1
        rest = head + data
        try:
            for at in range(0, len(rest), step):
                self.wfile.write(rest[at : at + step])
                self.wfile.flush()
                if self.fake.stopping.wait(pause):
                    raise Drop
        except OSError:  # the client gave up on the drip: what a bounded client does
            raise Drop from None
        self.close_connection = True

    def _echo_status(self, fault: Fault, reply: Reply) -> Reply:
        """A poll answer whose task status is ``fault.status`` with the bearer token in it."""
        if reply[0] != 200 or not self.path.startswith("/api/v3/predictions/"):
            return reply
        envelope = json.loads(reply[1])
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        envelope["data"]["status"] = fault.status.replace("{token}", token)
        return json_reply(200, envelope)

    def _gzip_bomb(self, fault: Fault) -> Reply:
        """A small gzip body that inflates to a JSON answer of ``fault.size`` bytes."""
        return 200, _bomb(fault.size), {"Content-Type": "application/json", "Content-Encoding": "gzip"}

    def _huge(self, fault: Fault) -> None:
        """A valid-looking JSON answer of ``fault.size`` bytes, written in pieces (never held whole)."""
        head = b'{"code": 200, "message": "success", "data": {"status": "processing", "pad": "'
        tail = b'"}}'
        pad = max(0, fault.size - len(head) - len(tail))
        if self.record is not None:
            self.record.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if fault.announce:
            self.send_header("Content-Length", str(len(head) + pad + len(tail)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        piece = b"x" * (1024 * 1024)
        try:
            self.wfile.write(head)
            while pad > 0:
                self.wfile.write(piece[: min(pad, len(piece))])
                pad -= len(piece)
            self.wfile.write(tail)
        except OSError:  # the client stopped reading: what a bounded client does
            raise Drop from None
        if not fault.announce:
            raise Drop  # the end of the body is the end of the connection

    def _output(self, path: str) -> Reply:
        task = self.fake.tasks.get(Path(path).stem)
        if task is None or self.fake.status_of(task) != "completed":
            return json_reply(404, {"message": "NoSuchKey: the object expired or does not exist"})
        with self.fake.lock:
            task.downloads += 1
            self.fake.task_requests[task.id] += 1
        wanted = task.body
        if task.kind == "image":
            variant = self.fake.variant_of(task) if self.fake.distinct else 0  # a generative model's own image
            return 200, image_bytes(str(wanted.get("prompt", "")), str(wanted.get("size", "640*360")), variant), {
                "Content-Type": "image/png"
            }
        seconds = task.clip_seconds if task.clip_seconds is not None else wanted.get("duration", 5)
        if task.model == "kling-v4.0/video-extend":  # the input clip with the new part joined after it
            seconds += self.fake.extend_input_seconds
        aspect = wanted.get("aspect_ratio", "16:9")
        data = clip_bytes(seconds, aspect, bool(wanted.get("sound")), self.fake.media, self.fake.variant_of(task))
        return 200, data, {"Content-Type": "video/mp4"}

    def _output_fault(self, fault: Fault, path: str, reply: Reply) -> Reply:
        if fault.kind == "expired":
            return json_reply(404, {"message": "NoSuchKey: the object expired or does not exist"})
        if fault.kind in {"redirect", "redirect_file"}:
            target = "file:///etc/passwd" if fault.kind == "redirect_file" else path
            return 302, b"", {"Location": target}
        data = reply[1]
        if fault.kind == "html":  # a web page where the clip should be (a CDN error page, say)
            return 200, HTML_PAGE, {"Content-Type": "text/html"}
        if fault.kind == "corrupt":  # bit rot: right length, right container, a broken bitstream
            return 200, _corrupt(data), reply[2]
        if fault.kind == "cut_short":  # a complete HTTP answer of half a clip
            return 200, _cut_short(data), reply[2]
        if fault.kind == "trickle":  # half now, the rest after ``seconds`` (or ``release``)
            self._head(200, len(data), reply[2])
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            deadline = time.monotonic() + fault.seconds
            while time.monotonic() < deadline and not (fault.release is not None and fault.release.is_set()):
                if self.fake.stopping.wait(0.02):
                    raise Drop
            self.wfile.write(data[len(data) // 2 :])
            return 0, b"", {}  # answered already
        if fault.kind == "stall":  # announce it all, then trickle it at ``rate`` bytes/s, then hang up
            self._head(200, len(data), reply[2])
            step = max(1, int(fault.rate / 10))
            sent, started = 0, time.monotonic()
            try:
                while sent < len(data) and time.monotonic() - started < fault.seconds:
                    self.wfile.write(data[sent : sent + step])
                    self.wfile.flush()
                    sent += step
                    if self.fake.stopping.wait(0.1):
                        break
            except OSError:  # the client gave up on the trickle: what a bounded client does
                pass
            raise Drop
        if fault.kind == "oversize":  # announce far more than any clip, send a little, hang up
            self._head(200, 3 * 1024**3, reply[2])
            self.wfile.write(data[:1024])
            raise Drop
        # truncate: announce it all, send half, hang up
        self._head(200, len(data), reply[2])
        self.wfile.write(data[: len(data) // 2])
        raise Drop

    def _control(self, path: str) -> Reply:
        if path == "/_fake/requests":
            with self.fake.lock:
                return json_reply(200, [asdict(r) for r in self.fake.requests])
        if path == "/_fake/stats":
            return json_reply(200, self.fake.stats())
        if path == "/_fake/faults" and self.command == "POST":
            return json_reply(200, asdict(self.fake.faults.add(**json.loads(self.raw))))
        if path == "/_fake/clear" and self.command == "POST":
            self.fake.faults.clear()
            return json_reply(200, {"cleared": True})
        return json_reply(404, {"message": "unknown control path"})


def _ok(data: dict[str, Any]) -> Reply:
    return json_reply(200, {"code": 200, "message": "success", "data": data})


def _list_status(status: str) -> str:
    """A task's status as the task list filters it: completed, failed or processing."""
    if status == "completed":
        return "completed"
    return "processing" if status in ("created", "processing") else "failed"


@functools.lru_cache(maxsize=4)
def _bomb(size: int) -> bytes:
    head = b'{"code": 200, "message": "success", "data": {"status": "processing", "pad": "'
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [packer.compress(head)]
    piece = b"x" * (1024 * 1024)
    for _ in range(max(1, size // len(piece))):
        parts.append(packer.compress(piece))
    parts += [packer.compress(b'"}}'), packer.flush()]
    return b"".join(parts)


def _corrupt(data: bytes, sample: int | None = None) -> bytes:
    """``data`` with bit rot inside one picture: bytes flipped in the slice data of the largest NAL
    unit of video sample ``sample`` (0-based; the middle one by default). The file's length, boxes
    and every sample's framing stay intact, so only a decode finds it (the stitch's)."""
    from kling_render.media.mp4 import parse_movie

    video = parse_movie(data).first("vide")
    assert video is not None and video.samples
    n = video.samples // 2 if sample is None else sample
    pos, end = video.offsets[n], video.offsets[n] + video.sizes[n]
    units = []
    while pos + 4 <= end:  # x264 writes 4-byte NAL lengths
        length = int.from_bytes(data[pos : pos + 4], "big")
        units.append((pos + 4, pos + 4 + length))
        pos += 4 + length
    start, stop = max(units, key=lambda u: u[1] - u[0])
    out = bytearray(data)
    for i in range(start + 8, stop, 5):  # past the NAL header and the start of the slice header
        out[i] ^= 0x5A
    return bytes(out)


def _cut_short(data: bytes) -> bytes:
    """The first half of a clip, served as a complete answer (a file truncated before upload)."""
    return data[: len(data) // 2]


_clip_lock = threading.Lock()
_clips: dict[tuple[int, str, bool, str, int], bytes] = {}


def media_size(aspect: str, media: str = "tiny") -> tuple[int, int]:
    """The clip size the fake serves for ``aspect`` at ``media`` (tiny, 720p, 1080p)."""
    width, height = SIZES.get(aspect, SIZES["16:9"])
    if media == "tiny":
        return width, height
    short = MEDIA[media][0]
    long = short * 16 // 9
    return (long, short) if width > height else (short, long) if height > width else (short, short)


def image_bytes(prompt: str, size: str, variant: int = 0) -> bytes:
    """What an image model delivers, deterministically: a PNG drawn from the prompt's hash (and
    ``variant`` > 0: another image for the same prompt, as two tasks of a generative model give)."""
    import io

    from PIL import Image, ImageDraw

    try:
        w, h = (max(16, min(2048, int(v))) for v in size.replace("x", "*").split("*"))
    except ValueError:
        w, h = 640, 360
    seed = hashlib.sha256((prompt if not variant else f"{prompt}#{variant}").encode("utf-8")).digest()
    img = Image.new("RGB", (w, h), (seed[0], seed[1], seed[2]))
    draw = ImageDraw.Draw(img)
    for n in range(6):
        x0, y0 = seed[3 + n] * w // 256, seed[9 + n] * h // 256
        draw.rectangle((x0, y0, x0 + w // 5, y0 + h // 5), fill=(seed[15 + n], seed[21 + n], seed[27 - n]))
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False)
    return out.getvalue()


def clip_bytes(
    duration: int, aspect: str = "16:9", sound: bool = False, media: str = "tiny", variant: int = 0
) -> bytes:
    """A real H.264 MP4 of exactly ``duration`` seconds, generated once and cached on disk: tiny by
    default, else at ``media`` size and bitrate (``MEDIA``; a noisy moving pattern, ~1-2 MB/s);
    ``variant`` > 0 is another hue and noise seed (a distinct clip of the same kind)."""
    key = (duration, aspect, sound, media, variant)
    with _clip_lock:
        if key not in _clips:
            _clips[key] = clip_file(duration, aspect, sound, media, variant).read_bytes()
        return _clips[key]


def clip_file(duration: int, aspect: str = "16:9", sound: bool = False, media: str = "tiny", variant: int = 0) -> Path:
    """The file behind :func:`clip_bytes` (made if missing; its bytes are not held): a benchmark
    makes the clips a run will serve before it starts the clock."""
    width, height = media_size(aspect, media)
    cache = Path(tempfile.gettempdir()) / "kling-render-fake-clips"
    real = "" if media == "tiny" else f"-{MEDIA[media][1]}" + ("" if MEDIA[media][2] else "-clean")
    tag = f"-v{variant}" if variant else ""
    dest = cache / f"clip-{duration}s-{width}x{height}{real}-{'a' if sound else 'n'}{tag}.mp4"
    if dest.exists():
        return dest
    from kling_render.media.ffmpeg import run

    cache.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".{os.getpid()}.{threading.get_ident()}.mp4")
    shade = f",hue=h={variant * 47 % 360}" if variant else ""
    if media == "tiny":
        lavfi = f"testsrc=size={width}x{height}:rate=24:duration={duration}{shade}"
        encode = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    else:  # temporal noise (grain) keeps every frame expensive, as camera grain does
        _, rate, grain = MEDIA[media]
        seed = f":all_seed={variant}" if variant else ""
        noise = f",noise=alls={grain}:allf=t{seed}" if grain else ""
        lavfi = f"testsrc2=size={width}x{height}:rate=24:duration={duration}{shade}{noise}"
        encode = ["-c:v", "libx264", "-preset", "veryfast", "-b:v", rate, "-maxrate", rate]
        encode += ["-bufsize", rate, "-g", "48", "-pix_fmt", "yuv420p"]
    args = ["-y", "-f", "lavfi", "-i", lavfi]
    if sound:
        args += ["-f", "lavfi", "-i", f"sine=frequency={440 + 20 * (variant % 40)}:duration={duration}"]
    args += encode
    args += ["-c:a", "aac"] if sound else []
    run([*args, "-movflags", "+faststart", str(tmp)], "making a fake clip")
    os.replace(tmp, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=3.0, help="seconds from submit to completed")
    parser.add_argument("--api-key", default=os.environ.get("WAVESPEED_API_KEY") or "test-key-0123456789")
    parser.add_argument("--chaos-seed", type=int, default=None)
    parser.add_argument("--chaos-rate", type=float, default=0.0)
    parser.add_argument("--chaos-kinds", default=None, help="comma list restricting chaos faults")
    parser.add_argument("--chaos-fail-code", type=int, default=None, help="the code of tasks chaos fails")
    parser.add_argument("--no-list-inputs", action="store_true", help="the task list ignores include_inputs")
    parser.add_argument("--fault", action="append", default=[], help="KIND[:PATH_PREFIX[:COUNT]]")
    parser.add_argument("--media", choices=["tiny", *MEDIA], default="tiny", help="the size of the clips served")
    parser.add_argument("--variants", type=int, default=0, help="N distinct clips, one per prompt (0: one clip)")
    parser.add_argument("--distinct", action="store_true", help="every task its own clip (as a generative model)")
    parser.add_argument(
        "--image-model", action="append", default=[], metavar="PATH",
        help="serve an image model at POST /api/v3/PATH (fields prompt, images, size), e.g. a declared one",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    kinds = set(opts.chaos_kinds.split(",")) if opts.chaos_kinds else None
    faults = Faults(opts.chaos_seed, opts.chaos_rate, kinds, opts.chaos_fail_code)
    for spec in opts.fault:
        kind, prefix, count = [*spec.split(":"), "/", "1"][:3]
        faults.add(kind, prefix or "/", int(count))
    server = FakeWaveSpeed(
        host=opts.host,
        port=opts.port,
        latency=opts.latency,
        api_key=opts.api_key,
        media=opts.media,
        variants=opts.variants,
        distinct=opts.distinct,
        image_models={path: {"prompt", "images", "size"} for path in opts.image_model},
    )
    server.faults = faults
    server.listing_inputs = not opts.no_list_inputs
    return serve_until_signalled(server)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kling_render, when not installed
    sys.exit(main())
