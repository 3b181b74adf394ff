"""A fake fal (SPEC §5) on a real socket: its queue, platform API, storage and CDN, for tests and runs.

In a test::

    with FakeFal(latency=0.2) as server:
        server.faults.add("503", "/fal-ai/kling-video/requests/", count=2)
        ... FalProvider(server.api_key, server.base_url, server.base_url, server.base_url, cache_dir) ...
        assert len(server.submits()) == 1 and len(server.charged()) == 1

As a process (the first stdout line is the base URL; the key is FAL_KEY's, else a test key)::

    python tests/fake_fal.py --port 0 --latency 3 --chaos-seed 7 --chaos-rate 0.2

Steered over HTTP like the WaveSpeed stand-in: ``GET /_fake/requests``, ``GET /_fake/stats``,
``POST /_fake/faults`` with ``{"kind", "path_prefix", "count", ...}``, ``POST /_fake/clear``.

What it serves, as fal documents it (and as strictly):
- ``POST /{endpoint}`` (the queue) with ``Authorization: Key <key>`` only; the body is checked
  against the catalog's fal offer of that endpoint (every field known, every value in fal's form:
  durations as text on v3/O3/O1, integers on v4) and fal's own docs (required inputs, the
  options). It answers ``request_id``, ``status_url``, ``response_url``, ``cancel_url``, which name
  owner and app only; the full endpoint path does not find a request (404), as at fal.
- ``GET {status_url}``: 202 ``IN_QUEUE``/``IN_PROGRESS``, then 200 ``COMPLETED`` (with ``error``
  and ``error_type`` when the request failed). ``GET {response_url}``: ``{"video": {"url"}}``, or
  the failed request's own error (its status, ``detail``, ``X-Fal-Error-Type``).
- ``PUT {cancel_url}``: 200 ``OK`` while queued (the request never runs, nothing is charged), 202
  ``CANCELLATION_REQUESTED`` while it runs (it still ends, and is charged), 400 ``ALREADY_COMPLETED``.
- ``GET /v1/models/requests/by-endpoint``: requests that have ended (fal sorts by end time), newest
  first, ``endpoint_id`` required, ``start``/``end`` (end exclusive), ``limit`` (1-100), ``cursor``,
  ``request_id``, ``expand=payloads`` (``json_input``, ``json_output``).
- ``GET /v1/models/pricing?endpoint_id=a,b``: ``prices`` from ``server.prices`` (``PRICES``).
- ``POST /storage/upload/initiate?storage_type=fal-cdn-v3`` then a ``PUT`` of the bytes to the
  ``upload_url`` (without the key, with the announced Content-Type); ``file_url`` serves them.
- ``GET /files/{id}.mp4``: the clip (tiny H.264, the asked duration); the key must never come here.

Fault kinds: ``429`` (``retry_after``), ``500``/``502``/``503``/``504``, ``401``/``403``
(``message``), ``balance`` (403, the account is locked), ``drop`` (close without answering),
``hang`` (``seconds``, then drop), ``no_id`` (a submit answered 200 without a request id); on a
submit, 5xx, drop, hang and no_id still create the request (``lost`` too: created, then the
answer dropped), unless ``create: false``; 429 and 4xx never do. Request faults: ``fail`` (the
next request ends COMPLETED with ``error``; ``status_code`` 422 (default, may be charged) or 500
(free), ``error_type``), ``slow`` (``latency``), ``length`` (``seconds`` of clip). Output faults:
``expired`` (404), ``truncate``; ``result_gone`` (the result answers 404, as after fal's 1 hour).
``every`` N applies a fault to every Nth matching request. ``body_contains`` limits a submit or
request fault to a body containing that text. Chaos mode draws transport faults per path
(``CHAOS_KINDS``); ``--chaos-kinds`` restricts them and may add ``fail``.

Money: ``charged()`` lists the requests fal would bill: those that completed, and those that
failed with a 4xx (422 "may be charged": counted); not those cancelled while queued nor those
failed by fal's infrastructure (5xx). ``listing_unfinished = True`` makes the list show running
requests too (fal's docs do not say it never does).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))

from fake_wavespeed import clip_bytes  # noqa: E402
from stand_in_http import (  # noqa: E402
    Drop,
    Reply,
    StandIn,
    StandInHandler,
    iso,
    json_reply,
    serve_until_signalled,
)

from kling_render.catalog.catalog import load_catalog  # noqa: E402

API_KEY = "fal-test-key-0123456789"
SIZES = {"16:9": "16:9", "9:16": "9:16", "1:1": "1:1"}
# fal's own docs per endpoint family (independent of the catalog): the duration's form and range,
# the inputs it requires. v3/O3/O1 take the duration as text ("3".."15"); v4 as an integer.
TEXT_DURATIONS = {"v3": range(3, 16), "o3": range(3, 16), "o1": range(3, 11)}
REQUIRED = {
    "fal-ai/kling-video/v3/pro/image-to-video": ("start_image_url",),
    "fal-ai/kling-video/v3/standard/image-to-video": ("start_image_url",),
    "fal-ai/kling-video/o3/standard/image-to-video": ("image_url",),
    "fal-ai/kling-video/o1/standard/image-to-video": ("start_image_url", "prompt"),
    "fal-ai/kling-video/v4/image-to-video": ("start_image_url",),
}
MEDIA_WIRES = ("image_url", "start_image_url", "end_image_url", "image_urls", "middle_image_urls", "video_url")
# What GET /v1/models/pricing answers: USD per unit, the unit (fal's own figures, from its pages).
PRICES: dict[str, tuple[float, str]] = {
    "fal-ai/kling-video/o3/standard/image-to-video": (0.084, "video_second"),
    "fal-ai/kling-video/v3/pro/image-to-video": (0.112, "video_second"),
    "fal-ai/kling-video/v3/standard/image-to-video": (0.084, "video_second"),
    "fal-ai/kling-video/o1/standard/image-to-video": (0.084, "video_second"),
    "fal-ai/kling-video/o3/standard/reference-to-video": (0.084, "video_second"),
    "fal-ai/kling-video/v3/standard/text-to-video": (0.084, "video_second"),
    "fal-ai/kling-video/v4/text-to-video": (0.157, "video_second"),
    "fal-ai/kling-video/v4/image-to-video": (0.157, "video_second"),
}
CHAOS_KINDS = {
    "/fal-ai/kling-video/requests/": ("429", "500", "503", "drop"),
    "/fal-ai/kling-video/": ("429", "503", "500", "502", "504", "drop"),
    "/v1/models/requests/": ("429", "503"),
    "/storage/": ("429", "503"),
    "/files/": ("503", "truncate", "drop"),
}
UNCERTAIN = {"500", "502", "503", "504", "drop", "hang", "no_id", "lost"}
REQUEST_KINDS = {"fail", "slow", "length"}
OUTPUT_KINDS = {"expired", "truncate"}
MESSAGES = {401: "Unauthorized: invalid credentials", 403: "Forbidden"}
BALANCE_MESSAGE = "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."


def offers() -> dict[str, Any]:
    """The catalog's fal offers by endpoint (what the fake accepts)."""
    found = {}
    for model in load_catalog().values():
        offer = model.offer("fal")
        if offer is not None:
            found[offer.endpoint] = offer
    return found


def validate(endpoint: str, body: Any) -> tuple[int, str] | None:
    """Why fal would refuse this input (a 422 and its detail), or None."""
    offer = offers().get(endpoint)
    if offer is None:
        return 404, f"Application {endpoint!r} not found"
    if not isinstance(body, dict):
        return 422, "the input must be a JSON object"
    wires = {f.wire: f for f in offer.fields}
    for name in sorted(set(body) - set(wires)):
        return 422, f"body.{name}: extra inputs are not permitted"
    for name in REQUIRED.get(endpoint, ()):
        if name not in body:
            return 422, f"body.{name}: field required"
    multi = "multi_prompt" in wires
    if multi and ("prompt" in body) == ("multi_prompt" in body):
        return 422, "either prompt or multi_prompt must be provided, but not both"
    if not multi and "prompt" in wires and "prompt" in body and not isinstance(body["prompt"], str):
        return 422, "body.prompt: input should be a valid string"
    family = endpoint.split("/")[2]
    duration = body.get("duration")
    if family in TEXT_DURATIONS:
        options = [str(d) for d in TEXT_DURATIONS[family]]
        if duration is not None and duration not in options:
            return 422, f"body.duration: input should be one of {', '.join(repr(o) for o in options)}"
        for shot in body.get("multi_prompt") or []:
            if not isinstance(shot, dict) or not isinstance(shot.get("duration"), str):
                return 422, "body.multi_prompt.duration: input should be a valid string"
    elif duration is not None and (type(duration) is not int or not 3 <= duration <= 30):  # v4: an integer
        return 422, "body.duration: input should be an integer from 3 to 30"
    for wire, field in wires.items():
        if wire in body and field.enum is not None and body[wire] not in field.enum:
            return 422, f"body.{wire}: input should be one of {', '.join(map(str, field.enum))}"
    if "generate_audio" in body and not isinstance(body["generate_audio"], bool):
        return 422, "body.generate_audio: input should be a valid boolean"
    return None


@dataclass
class Fault:
    kind: str
    path_prefix: str = "/"
    count: int = 1
    method: str | None = None
    retry_after: float | None = None
    message: str | None = None
    error: str = "The content could not be processed: the prompt was flagged"
    error_type: str | None = None
    status_code: int = 422  # fail: the HTTP status of the failed request's result
    latency: float = 5.0
    seconds: float = 30.0
    create: bool | None = None
    every: int = 1
    seen: int = 0
    body_contains: str | None = None

    def creates(self) -> bool:
        return self.create if self.create is not None else self.kind in UNCERTAIN


class Faults:
    """Scripted faults (by kind, path prefix, method) and a seeded chaos mode."""

    def __init__(self, seed: int | None = None, rate: float = 0.0, kinds: set[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._items: list[Fault] = []
        self._rng = random.Random(seed)
        self.rate, self.kinds = rate, kinds
        self.injected: Counter[str] = Counter()

    def add(self, kind: str, path_prefix: str = "/", count: int = 1, **options: Any) -> Fault:
        fault = Fault(kind, path_prefix, count, **options)
        with self._lock:
            self._items.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def take(self, method: str, path: str, kinds: set[str] | None = None, body: str = "") -> Fault | None:
        with self._lock:
            fault = self._take(method, path, kinds, body)
            if fault is not None:
                self.injected[fault.kind] += 1
            return fault

    def _take(self, method: str, path: str, kinds: set[str] | None, body: str) -> Fault | None:
        for fault in self._items:
            wanted = fault.kind in kinds if kinds else fault.kind not in REQUEST_KINDS
            mine = path.startswith(fault.path_prefix) and fault.method in (None, method)
            mine = mine and (fault.body_contains is None or fault.body_contains in body)
            if fault.count > 0 and wanted and mine and _applies(fault.kind, method, path):
                fault.seen += 1
                if fault.seen % max(1, fault.every):
                    continue
                fault.count -= 1
                return fault
        if self.rate <= 0:
            return None
        if kinds:
            if kinds == {"fail"} and "fail" in (self.kinds or ()) and self._rng.random() < self.rate:
                kind = "runner_server_error"
                return Fault("fail", error="chaos: the runner failed", status_code=500, error_type=kind)
            return None
        for prefix, choices in CHAOS_KINDS.items():
            if path.startswith(prefix):
                allowed = [k for k in choices if self.kinds is None or k in self.kinds]
                if allowed and self._rng.random() < self.rate:
                    return Fault(self._rng.choice(allowed), prefix, retry_after=0.5)
                return None
        return None


def _applies(kind: str, method: str, path: str) -> bool:
    if kind in OUTPUT_KINDS:
        return method == "GET" and path.startswith("/files/")
    if kind == "result_gone":
        return method == "GET" and re.fullmatch(r"/[\w.-]+/[\w.-]+/requests/[\w-]+", path) is not None
    if kind in REQUEST_KINDS or kind in ("no_id", "lost"):
        return method == "POST" and _is_submit(path)
    return True


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON, else the byte count
    status: int = 0  # 0: dropped without an answer


@dataclass
class Request:
    id: str
    endpoint: str
    body: dict[str, Any]
    created: float  # monotonic: drives the status
    latency: float
    sent_at: float  # wall clock
    error: str | None = None
    error_type: str | None = None
    status_code: int = 200  # of its result
    cancelled: bool = False  # removed from the queue before it ran
    polls: int = 0
    clip_seconds: int | None = None

    @property
    def app(self) -> str:
        return "/".join(self.endpoint.split("/")[:2])


class FakeFal(StandIn):
    """The fake fal: state, faults and a threaded HTTP server on 127.0.0.1 (stand_in_http.py)."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.2, api_key: str = API_KEY,
        faults: Faults | None = None,
    ) -> None:  # fmt: skip
        self.latency, self.api_key = latency, api_key
        self.faults = faults or Faults()
        self.requests: list[Recorded] = []
        self.queue: dict[str, Request] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.prices = dict(PRICES)
        self.listing_unfinished = False
        super().__init__(host, port, _Handler, "fake-fal")

    def submits(self) -> list[Recorded]:
        """Every submit POST received (answered or not)."""
        return [r for r in self.requests if r.method == "POST" and _is_submit(r.path)]

    def charged(self) -> list[Request]:
        """The requests fal would bill (see the module doc)."""
        with self.lock:
            ended = [r for r in self.queue.values() if self.status_of(r) == "COMPLETED"]
        return [r for r in ended if not r.cancelled and (r.error is None or r.status_code < 500)]

    def status_of(self, request: Request) -> str:
        if request.cancelled:
            return "COMPLETED"
        elapsed = time.monotonic() - request.created
        if elapsed >= request.latency:
            return "COMPLETED"
        return "IN_QUEUE" if elapsed < request.latency / 10 else "IN_PROGRESS"

    def ended_at(self, request: Request) -> float:
        return request.sent_at + (0.0 if request.cancelled else request.latency)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            queue = list(self.queue.values())
        charged = {r.id for r in self.charged()}
        return {
            "requests": len(self.requests),
            "submits": len(self.submits()),
            "faults": dict(self.faults.injected),
            "queue": {r.id: {"endpoint": r.endpoint, "body": r.body, "polls": r.polls, "failed": r.error is not None,
                             "cancelled": r.cancelled, "charged": r.id in charged} for r in queue},
        }  # fmt: skip


def _is_submit(path: str) -> bool:
    """A queue submit: ``/owner/app/path...`` (not a request's URL, nor another API)."""
    other = path.startswith(("/v1/", "/storage/", "/files/", "/upload/", "/_fake/"))
    return path.count("/") >= 3 and "/requests/" not in path and not other


class _Handler(StandInHandler):
    @property
    def fake(self) -> FakeFal:
        fake = self.server.fake
        assert isinstance(fake, FakeFal)
        return fake

    def _dispatch(self) -> None:
        body = self.read_body()
        parts = urlsplit(self.path)
        path, query = parts.path, parts.query
        self.record: Recorded | None = None
        if path.startswith("/_fake/"):
            return self._send(self._control(path))
        self.record = Recorded(self.command, path, query, dict(self.headers.items()), body)
        with self.fake.lock:
            self.fake.requests.append(self.record)
        text = self.raw.decode("utf-8", "replace") if isinstance(body, dict) else ""
        fault = self.fake.faults.take(self.command, path, body=text)
        submit = self.command == "POST" and _is_submit(path)
        try:
            if fault is None:
                return self._send(self._route(path, query, body))
            kind = fault.kind
            if kind in OUTPUT_KINDS or kind == "result_gone":
                return self._send(self._output_fault(fault, path, query, body))
            if submit and fault.creates():
                reply = self._route(path, query, body)  # the request exists, whatever its answer
                if kind == "no_id" and reply[0] == 200:
                    answer = json.loads(reply[1])
                    answer.pop("request_id", None)
                    return self._send(json_reply(200, answer))
            if kind == "hang":
                self.fake.stopping.wait(fault.seconds)
            if kind in {"drop", "hang", "lost"}:
                raise Drop
            if kind == "balance":
                return self._send(json_reply(403, {"detail": fault.message or BALANCE_MESSAGE}))
            status = int(kind)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            if status >= 500:
                headers["X-Fal-Error-Type"] = "runner_scheduling_failure" if status == 503 else "internal_error"
            detail = fault.message or MESSAGES.get(status, f"injected {status}")
            self._send(json_reply(status, {"detail": detail}, headers))
        except Drop:
            self.drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- routes -----------------------------------------------------------------------------

    def _authorized(self) -> Reply | None:
        header = self.headers.get("Authorization", "")
        if header != f"Key {self.fake.api_key}":  # echoes it: clients must keep keys out of their errors
            return json_reply(401, {"detail": f"Unauthorized: invalid credentials {header!r}"})
        return None

    def _route(self, path: str, query: str, body: Any) -> Reply:
        if path.startswith("/files/"):
            if "Authorization" in self.headers:
                return json_reply(400, {"detail": "the CDN takes no Authorization header"})
            return self._file(path)
        if self.command == "PUT" and path.startswith("/upload/"):
            return self._put(path.removeprefix("/upload/"))
        refused = self._authorized()
        if refused is not None:
            return refused
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        if self.command == "POST" and path == "/storage/upload/initiate":
            return self._initiate(args, body)
        if self.command == "GET" and path == "/v1/models/requests/by-endpoint":
            return self._list(parse_qs(query))
        if self.command == "GET" and path == "/v1/models/pricing":
            return self._pricing(args)
        found = re.fullmatch(r"/([\w.-]+/[\w.-]+)/requests/([\w-]+)(/status|/cancel)?", path)
        if found:
            return self._request(found.group(1), found.group(2), found.group(3) or "")
        if self.command == "POST" and _is_submit(path):
            return self._submit(path.lstrip("/"), body)
        return json_reply(404, {"detail": f"no route for {self.command} {path}"})

    def _submit(self, endpoint: str, body: Any) -> Reply:
        problem = validate(endpoint, body) or self._check_media(body)
        if problem:
            return json_reply(problem[0], {"detail": [{"loc": ["body"], "msg": problem[1], "type": "value_error"}]})
        text = json.dumps(body, ensure_ascii=False)
        fail = self.fake.faults.take("POST", "/" + endpoint, {"fail"}, text)
        slow = self.fake.faults.take("POST", "/" + endpoint, {"slow"}, text)
        length = self.fake.faults.take("POST", "/" + endpoint, {"length"}, text)
        latency = slow.latency if slow else self.fake.latency
        request = Request(uuid.uuid4().hex, endpoint, body, time.monotonic(), latency, time.time())
        if fail is not None:
            request.error, request.error_type, request.status_code = fail.error, fail.error_type, fail.status_code
        if length is not None:
            request.clip_seconds = int(length.seconds)
        with self.fake.lock:
            self.fake.queue[request.id] = request
        return json_reply(200, {**self._handle(request), "status": "IN_QUEUE", "queue_position": 0})

    def _handle(self, request: Request) -> dict[str, Any]:
        base = f"{self.fake.base_url}/{request.app}/requests/{request.id}"
        return {"request_id": request.id, "status_url": f"{base}/status", "response_url": base,
                "cancel_url": f"{base}/cancel"}  # fmt: skip

    def _check_media(self, body: Any) -> tuple[int, str] | None:
        if not isinstance(body, dict):
            return None
        for wire in MEDIA_WIRES:
            values = body.get(wire)
            for value in values if isinstance(values, list) else [values] if values is not None else []:
                if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                    return 422, f"body.{wire}: input should be a valid URL, got {value!r:.60}"
                prefix = self.fake.base_url + "/files/upload/"
                if value.startswith(prefix):
                    upload = self.fake.uploads.get(value[len(prefix) :].split("/")[0])
                    if upload is None or upload["data"] is None:
                        return 422, f"body.{wire}: {value} could not be downloaded"
        return None

    def _request(self, app: str, request_id: str, tail: str) -> Reply:
        request = self.fake.queue.get(request_id)
        if request is None or request.app != app:  # status/result URLs name only owner and app
            return json_reply(404, {"detail": f"Request {request_id!r} not found"})
        status = self.fake.status_of(request)
        if tail == "/cancel":
            if self.command != "PUT":
                return json_reply(405, {"detail": "use PUT"})
            if status == "IN_QUEUE":
                request.cancelled = True
                request.error, request.error_type, request.status_code = "Request cancelled", "client_cancelled", 499
                return json_reply(200, {"status": "OK"})
            if status == "IN_PROGRESS":
                return json_reply(202, {"status": "CANCELLATION_REQUESTED"})
            return json_reply(400, {"status": "ALREADY_COMPLETED"})
        if self.command != "GET":
            return json_reply(405, {"detail": "use GET"})
        if tail == "/status":
            with self.fake.lock:
                request.polls += 1
            view: dict[str, Any] = {**self._handle(request), "status": status, "logs": None}
            if status == "IN_QUEUE":
                view["queue_position"] = 0
                return json_reply(202, view)
            if status == "IN_PROGRESS":
                return json_reply(202, view)
            view["metrics"] = {"inference_time": request.latency}
            view["error"], view["error_type"] = request.error, request.error_type
            return json_reply(200, view)
        if status != "COMPLETED":
            return json_reply(400, {"detail": "Request is still in progress"})
        return self._result(request)

    def _result(self, request: Request) -> Reply:
        if request.error is not None:
            headers = {"X-Fal-Error-Type": request.error_type} if request.error_type else {}
            return json_reply(request.status_code, {"detail": request.error}, headers)
        return json_reply(200, {"video": self._video(request)})

    def _video(self, request: Request) -> dict[str, Any]:
        return {"url": f"{self.fake.base_url}/files/{request.id}.mp4", "content_type": "video/mp4",
                "file_name": "output.mp4"}  # fmt: skip

    def _file(self, path: str) -> Reply:
        if path.startswith("/files/upload/"):
            upload = self.fake.uploads.get(path.split("/")[3])
            if upload is None or upload["data"] is None:
                return json_reply(404, {"detail": "not found"})
            return 200, upload["data"], {"Content-Type": upload["content_type"]}
        request = self.fake.queue.get(Path(path).stem)
        if request is None or self.fake.status_of(request) != "COMPLETED" or request.error is not None:
            return json_reply(404, {"detail": "not found"})
        duration = request.body.get("duration", 5)
        seconds = request.clip_seconds if request.clip_seconds is not None else int(duration)
        aspect = str(request.body.get("aspect_ratio", "16:9"))
        data = clip_bytes(seconds, SIZES.get(aspect, "16:9"), bool(request.body.get("generate_audio")))
        return 200, data, {"Content-Type": "video/mp4"}

    def _initiate(self, args: dict[str, str], body: Any) -> Reply:
        if args.get("storage_type") != "fal-cdn-v3":
            return json_reply(422, {"detail": "storage_type must be fal-cdn-v3"})
        if not isinstance(body, dict) or set(body) != {"content_type", "file_name"} or not body["file_name"]:
            return json_reply(422, {"detail": "need content_type and file_name"})
        token = uuid.uuid4().hex
        with self.fake.lock:
            self.fake.uploads[token] = {**body, "data": None}
        return json_reply(200, {"upload_url": f"{self.fake.base_url}/upload/{token}",
                           "file_url": f"{self.fake.base_url}/files/upload/{token}/{body['file_name']}"})  # fmt: skip

    def _put(self, token: str) -> Reply:
        upload = self.fake.uploads.get(token)
        if upload is None:
            return json_reply(404, {"detail": "no such upload"})
        if "Authorization" in self.headers:
            return json_reply(400, {"detail": "the signed upload URL takes no Authorization header"})
        if self.headers.get("Content-Type") != upload["content_type"]:
            return json_reply(403, {"detail": "signature mismatch: the Content-Type differs from the announced one"})
        upload["data"] = self.raw
        return 200, b"", {}

    def _list(self, query: dict[str, list[str]]) -> Reply:
        """Requests by endpoint (those that ended, newest end first), filtered and paged by a cursor."""
        endpoints = [e for v in query.get("endpoint_id", []) for e in v.split(",") if e]
        if not endpoints:
            return json_reply(422, {"detail": "endpoint_id is required"})
        one = {k: v[-1] for k, v in query.items()}
        try:
            limit = int(one.get("limit", 50))
            start = _when(one.get("start"), time.time() - 24 * 3600)
            end = _when(one.get("end"), None)
            offset = int(base64.b64decode(one["cursor"]).decode()) if "cursor" in one else 0
        except (ValueError, KeyError):
            return json_reply(422, {"detail": "bad limit, start, end or cursor"})
        if not 1 <= limit <= 100:
            return json_reply(422, {"detail": "limit must be between 1 and 100"})
        wanted = one.get("request_id")
        if wanted and "start" not in one:
            start = time.time() - 90 * 24 * 3600
        with self.fake.lock:
            queue = list(self.fake.queue.values())
        chosen = [
            r for r in queue
            if r.endpoint in endpoints
            and (self.fake.listing_unfinished or self.fake.status_of(r) == "COMPLETED")
            and start <= r.sent_at and (end is None or r.sent_at < end)
            and (wanted is None or r.id == wanted)
        ]  # fmt: skip
        chosen.sort(key=self.fake.ended_at, reverse=True)
        page = chosen[offset : offset + limit]
        payloads = one.get("expand") == "payloads"
        items = []
        for r in page:
            item: dict[str, Any] = {"request_id": r.id, "endpoint_id": r.endpoint, "sent_at": iso(r.sent_at),
                                    "started_at": iso(r.sent_at), "ended_at": iso(self.fake.ended_at(r)),
                                    "status_code": r.status_code, "duration": r.latency}  # fmt: skip
            if payloads:
                item["json_input"] = r.body
                item["json_output"] = {"video": self._video(r)} if r.error is None else {"detail": r.error}
            items.append(item)
        more = offset + limit < len(chosen)
        cursor = base64.b64encode(str(offset + limit).encode()).decode() if more else None
        return json_reply(200, {"items": items, "next_cursor": cursor, "has_more": more})

    def _pricing(self, args: dict[str, str]) -> Reply:
        ids = [e for e in args.get("endpoint_id", "").split(",") if e]
        if not 1 <= len(ids) <= 50:
            return json_reply(422, {"detail": "give 1 to 50 endpoint ids"})
        prices = [{"endpoint_id": e, "unit_price": self.fake.prices[e][0], "unit": self.fake.prices[e][1],
                   "currency": "USD"} for e in ids if e in self.fake.prices]  # fmt: skip
        return json_reply(200, {"prices": prices, "next_cursor": None, "has_more": False})

    def _output_fault(self, fault: Fault, path: str, query: str, body: Any) -> Reply:
        reply = self._route(path, query, body)
        if reply[0] != 200:
            return reply
        if fault.kind in ("expired", "result_gone"):
            return json_reply(404, {"detail": "not found"})
        data = reply[1]  # truncate: announce it all, send half, hang up
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
        return json_reply(404, {"detail": "unknown control path"})


def _when(value: str | None, default: float | None) -> Any:
    if value is None:
        return default
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=3.0, help="seconds from submit to completed")
    parser.add_argument("--api-key", default=os.environ.get("FAL_KEY") or API_KEY)
    parser.add_argument("--chaos-seed", type=int, default=None)
    parser.add_argument("--chaos-rate", type=float, default=0.0)
    parser.add_argument("--chaos-kinds", default=None, help="comma list restricting chaos faults")
    parser.add_argument("--list-unfinished", action="store_true", help="the requests list shows running requests")
    parser.add_argument("--fault", action="append", default=[], help="KIND[:PATH_PREFIX[:COUNT]]")
    opts = parser.parse_args(argv)
    kinds = set(opts.chaos_kinds.split(",")) if opts.chaos_kinds else None
    faults = Faults(opts.chaos_seed, opts.chaos_rate, kinds)
    for spec in opts.fault:
        kind, prefix, count = [*spec.split(":"), "/", "1"][:3]
        faults.add(kind, prefix or "/", int(count))
    server = FakeFal(host=opts.host, port=opts.port, latency=opts.latency, api_key=opts.api_key, faults=faults)
    server.listing_unfinished = opts.list_unfinished
    return serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(main())
