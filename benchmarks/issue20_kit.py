"""Shared parts of the issue-20 benchmarks (bench_pipelined.py, bench_incremental.py,
bench_distributed.py): everything runs through the real CLI.

- the stand-in WaveSpeed (tests/fake_wavespeed.py) in its own process on 127.0.0.1, serving one
  distinct clip per prompt (``--variants``: identical clips would make identical segments, which
  the segment store encodes once) at ``tiny``, ``720p`` or ``1080p``; the clips are made before
  anything is timed;
- moto's S3 server (tests/moto_s3.py) on 127.0.0.1 for a shared remote;
- checkouts of one project (separate directories, so separate local caches and state), each
  running ``python -m kling_render ...`` as a subprocess in its own process group: timed, its
  output in files (a pipe nobody reads can block a CLI that holds claims), the resident memory of
  its whole process tree (the CLI and every ffmpeg under it) sampled from /proc, killed with its
  children on a timeout or when the benchmark stops;
- the JSON events of ``render --json`` and the document of ``stitch --json``.

Nothing here talks to the internet; every temp directory is removed at the end (``--keep`` keeps it).
Exit codes of the scripts: 0 target met, 1 target missed, 2 the benchmark could not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

API_KEY = "bench-key-0123456789abcdef"
MODEL = "kling-v3.0-std/image-to-video"
# Output size per media size: the cut is made at the size of the clips.
# The "-clean" media (tests/fake_wavespeed.py MEDIA) have no grain: smooth footage, cheaper to re-encode.
OUTPUT = {
    "tiny": (192, 108),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "720p-clean": (1280, 720),
    "1080p-clean": (1920, 1080),
}
S3_ENV = {"AWS_ACCESS_KEY_ID": "AKIABENCHKEY000000", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "us-east-1"}


class BenchError(Exception):
    """The benchmark could not measure (a CLI failed, a server did not start): exit 2."""


# -- processes this benchmark started, stopped however it ends ---------------------------------------

_RUNNING: list[Running] = []  # CLI runs not yet waited for


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill a CLI run and every process of its group (its ffmpeg children). Only before it is
    reaped: until then its pid, the group's id, cannot belong to anyone else."""
    if proc.returncode is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``finally``: servers and CLIs are stopped


def install_signal_handlers() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)


def stop_all() -> None:
    """Kill every CLI run still going (its ffmpeg children too: each run is its own process group)."""
    while _RUNNING:
        _kill(_RUNNING.pop().proc)


# -- the stand-in WaveSpeed and moto --------------------------------------------------------------------


class Fake:
    """tests/fake_wavespeed.py in its own process (its CPU is not the CLI's), stopped by its pid."""

    def __init__(self, *, latency: float, media: str, variants: int, log: Path) -> None:
        env = base_env(WAVESPEED_API_KEY=API_KEY)  # the stand-in's --api-key default: no key in argv
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(TESTS / "fake_wavespeed.py"), "--port", "0", "--latency", str(latency),
                 "--media", media, "--variants", str(variants)],
                stdout=subprocess.PIPE, stderr=err, env=env,
            )  # fmt: skip
        self.base_url = _first_line(self.proc, 60.0)
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.close()
            raise BenchError(f"the stand-in WaveSpeed did not start (first line {self.base_url!r}; see {log})")

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.base_url}/_fake/stats", timeout=30) as answer:
            doc: dict[str, Any] = json.loads(answer.read())
        return doc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode().strip() if ready else ""


def premake_clips(media: str, count: int, *, seconds: int, sound: bool) -> float:
    """Make the ``count`` distinct clips the stand-in will serve (variants 1..count) before anything
    is timed, two at a time; they are kept in the temp dir across runs. Returns the seconds taken."""
    from fake_wavespeed import clip_file

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda v: clip_file(seconds, "16:9", sound, media, v), range(1, count + 1)))
    return time.monotonic() - started


@contextmanager
def servers(
    work: Path, *, latency: float, media: str, variants: int, remote: bool = False
) -> Iterator[tuple[Fake, Any]]:
    """The stand-in (and moto when ``remote``), stopped on the way out, with every CLI run."""
    fake = Fake(latency=latency, media=media, variants=variants, log=work / "fake.log")
    moto = None
    try:
        if remote:
            from moto_s3 import MotoS3

            moto = MotoS3.start(log=work / "moto.log")
        yield fake, moto
    finally:
        stop_all()
        fake.close()
        if moto is not None:
            moto.stop()


def s3_env(moto: Any, bucket: str, prefix: str = "bench") -> dict[str, str]:
    return {"KLING_RENDER_REMOTE": f"s3://{bucket}/{prefix}", "AWS_ENDPOINT_URL": moto.endpoint, **S3_ENV}


def remote_segments(moto: Any, bucket: str) -> dict[str, str]:
    """The step records on the remote (``<prefix>/segments/<key>.json``: encoded segments and audio
    passes alike), each as key -> ``video`` or ``audio``, told apart by the MP4 handlers of the
    bytes it names (``<prefix>/blobs/sha256/<sha[:2]>/<sha>.mp4``): an audio pass has no video track."""
    found: dict[str, str] = {}
    for name in moto.list_raw(bucket):
        if "/segments/" not in name or not name.endswith(".json") or "/segments/claims/" in name:
            continue  # a shard's claim (segments/claims/<key>.json) is not a record
        prefix, key = name.split("/segments/", 1)[0], name.rsplit("/", 1)[1][: -len(".json")]
        kind = "video"  # a record this cannot read is counted as a segment
        try:
            digest = json.loads(moto.get_raw(bucket, name))["sha256"]
            data = moto.get_raw(bucket, f"{prefix}/blobs/sha256/{digest[:2]}/{digest}.mp4")
        except Exception:  # a record of another layout: counted as a segment, not classified
            found[key] = kind
            continue
        handlers = set(re.findall(rb"hdlr.{8}(vide|soun)", data, re.DOTALL))
        if handlers == {b"soun"}:
            kind = "audio"
        found[key] = kind
    return found


def base_env(**extra: str) -> dict[str, str]:
    """This environment without any kling-render, WaveSpeed, AWS or proxy settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WAVESPEED_", "KLING_RENDER_", "AWS_")) and k.lower() not in ("http_proxy", "https_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["KLING_RENDER_HEARTBEAT"] = "600"  # no heartbeat lines in the logs
    env["KLING_RENDER_RECONCILE_GRACE"] = "1"  # the stand-in lists its tasks at once
    return {**env, **extra}


def cli_env(fake: Fake, *, key: bool = True, remote: dict[str, str] | None = None) -> dict[str, str]:
    env = base_env(WAVESPEED_BASE_URL=fake.base_url, **(remote or {}))
    if key:
        env["WAVESPEED_API_KEY"] = API_KEY
    return env


# -- the project ----------------------------------------------------------------------------------------


def shot_id(n: int) -> str:
    return f"s{n:03d}"


def write_project(
    root: Path, shots: int, *, media: str, seconds: int = 5, fade: float = 0.5, sound: bool = True, cut_every: int = 6
) -> Path:
    """A wavespeed project of ``shots`` distinct shots (one clip each from the stand-in) at the size
    of ``media``; every shot after the first fades in from the one before (``fade`` s), except every
    ``cut_every``-th, a plain cut: the cut is re-encoded, as segments."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    Image.new("RGB", (640, 360), (40, 90, 120)).save(root / "images" / "a.png")
    width, height = OUTPUT[media]
    lines = [
        "version: 1",
        "name: bench",
        "provider: wavespeed",
        f"defaults: {{model: {MODEL}, image: images/a.png, duration: {seconds}, sound: {str(sound).lower()}}}",
        f"output: {{path: renders/final.mp4, width: {width}, height: {height}, fps: 24}}",
        "shots:",
    ]
    for n in range(shots):
        blend = fade and n and (not cut_every or n % cut_every)
        transition = f", transition: {{type: fade, duration: {fade:g}}}" if blend else ""
        lines.append(f'  - {{id: {shot_id(n)}, prompt: "shot {shot_id(n)}, a mug on a table, take {n}"{transition}}}')
    path = root / "project.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def trim_shot(project: Path, n: int, end: float) -> None:
    """The edit a user makes most: shot ``n`` ends at ``end`` s (its clip stays; the cut changes)."""
    text = project.read_text(encoding="utf-8")
    old = f"{{id: {shot_id(n)}, "
    if text.count(old) != 1:
        raise BenchError(f"shot {shot_id(n)} is not in {project}")
    project.write_text(text.replace(old, f"{old}trim: {{end: {end:g}}}, "), encoding="utf-8")


# -- the CLI as a subprocess ----------------------------------------------------------------------------


@dataclass
class Result:
    """One CLI run: exit code, wall seconds, output, parsed JSON, peak memory of its process tree."""

    args: tuple[str, ...]
    returncode: int
    wall: float
    stdout: str
    stderr: str
    peak_tree_mb: float = 0.0
    peak_proc_mb: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)  # render --json: every event
    doc: dict[str, Any] = field(default_factory=dict)  # the last JSON object on stdout

    def check(self) -> Result:
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-15:])
            raise BenchError(f"`kling-render {' '.join(self.args)}` failed (exit {self.returncode}):\n{tail}")
        return self

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind]


class Running:
    """A CLI run in the background (its own process group), its memory sampled while it runs."""

    def __init__(self, cmd: list[str], args: tuple[str, ...], cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.args = args
        self.out_path, self.err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True)
        _RUNNING.append(self)
        self.ended: float | None = None
        self._peak = [0, 0]
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            total, largest = tree_rss(self.proc.pid, page)
            self._peak = [max(self._peak[0], total), max(self._peak[1], largest)]
            self._stop.wait(0.05)  # the process is only ever waited for by finish(), never here

    def finish(self, timeout: float) -> Result:
        try:
            self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            _kill(self.proc)
            raise BenchError(f"`kling-render {' '.join(self.args)}` took over {timeout:g} s: killed") from None
        finally:
            self._stop.set()
            if self.proc.returncode is not None and self in _RUNNING:  # else stop_all() kills it
                _RUNNING.remove(self)
        wall = time.monotonic() - self.started
        self._sampler.join()
        stdout = self.out_path.read_text(errors="replace")
        stderr = self.err_path.read_text(errors="replace")
        docs = _json_lines(stdout)
        return Result(
            self.args, self.proc.returncode, wall, stdout, stderr,
            peak_tree_mb=self._peak[0] / 2**20, peak_proc_mb=self._peak[1] / 2**20,
            events=[d for d in docs if "event" in d], doc=docs[-1] if docs else {},
        )  # fmt: skip


def _json_lines(text: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                docs.append(doc)
    if not docs and text.strip().startswith("{"):  # one pretty-printed document
        try:
            doc = json.loads(text)
        except ValueError:
            return docs
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


@dataclass
class Checkout:
    """One machine's checkout of the project: its own directory, so its own cache and state."""

    root: Path
    env: dict[str, str]
    runs: int = 0

    @property
    def project(self) -> Path:
        return self.root / "project.yaml"

    @property
    def cut(self) -> Path:
        return self.root / "renders" / "final.mp4"

    def start(self, *args: str) -> Running:
        self.runs += 1
        logs = self.root.parent / f"{self.root.name}-logs"
        logs.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "kling_render", *args]
        return Running(cmd, args, self.root, self.env, logs / f"{self.runs:02d}-{args[0]}")

    def run(self, *args: str, timeout: float) -> Result:
        return self.start(*args).finish(timeout)

    def render(self, *extra: str, timeout: float) -> Result:
        return self.run("render", str(self.project), "--json", *extra, timeout=timeout).check()

    def stitch(self, *extra: str, timeout: float) -> Result:
        return self.run("stitch", str(self.project), "--json", *extra, timeout=timeout).check()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def checkout(template: Path, dest: Path, env: dict[str, str]) -> Checkout:
    """A copy of the project directory ``template`` (nothing cached: a fresh cache and state)."""
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns(".kling-render", "renders", "*.lock"))
    return Checkout(dest, dict(env))


def tree_rss(root: int, page: int) -> tuple[int, int]:
    """(sum of RSS, largest RSS) over ``root`` and all its descendants, from /proc (as bench_stitch.py)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(statm.split()[1]) * page
    todo, total, largest = [root], 0, 0
    while todo:
        pid = todo.pop()
        if pid in rss:
            total += rss[pid]
            largest = max(largest, rss[pid])
        todo.extend(children.get(pid, []))
    return total, largest


# -- what the CLI reports ---------------------------------------------------------------------------------

_ENCODED = re.compile(r"(\d+) of (\d+) segments encoded(?:, (\d+) pulled from the remote)?")


@dataclass(frozen=True)
class StitchFigures:
    """What a stitch did with its segments: how many the cut has, encoded here, pulled (None: not said)."""

    segments: int
    encoded: int
    pulled: int | None
    stream_copy: bool = False
    up_to_date: bool = False
    source: str = ""  # where the figures were read: "json" or "log"

    def text(self) -> str:
        if self.up_to_date:
            return "the cut was up to date: nothing encoded"
        if self.stream_copy and not self.segments:
            return "stream copy: no segments"
        pulled = f", {self.pulled} pulled from the remote" if self.pulled is not None else ""
        return f"{self.encoded} of {self.segments} segments encoded{pulled}"


def stitch_figures(result: Result) -> StitchFigures | None:
    """From ``stitch --json``'s document or ``render --json``'s ``stitched`` event (``segments``,
    ``segments_encoded``, ``segments_pulled``), else from the log line "N of M segments encoded"."""
    sources = [e for e in result.of_kind("stitched")] + ([result.doc] if result.doc else [])
    for doc in reversed(sources):
        if "segments_encoded" in doc:
            pulled = doc.get("segments_pulled")
            return StitchFigures(int(doc.get("segments", 0)), int(doc["segments_encoded"]),
                                 None if pulled is None else int(pulled), bool(doc.get("stream_copy")),
                                 bool(doc.get("up_to_date")), "json")  # fmt: skip
        if doc.get("up_to_date"):
            return StitchFigures(0, 0, None, bool(doc.get("stream_copy")), True, "json")
    text = "\n".join([result.stderr, *(str(e.get("message", "")) for e in sources)])
    found = _ENCODED.findall(text)
    if found:
        encoded, segments, pulled = found[-1]
        return StitchFigures(int(segments), int(encoded), int(pulled) if pulled else None, source="log")
    if any(d.get("stream_copy") for d in sources):
        return StitchFigures(0, 0, None, stream_copy=True, source="json")
    return None


def event_time(event: dict[str, Any]) -> float:
    """An event's ``ts`` (ISO 8601) as epoch seconds."""
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the scripts' frame -----------------------------------------------------------------------------------


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny media, few shots: a smoke test (< 1 min)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds any one CLI run may take")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (its path is printed)")


def parse(parser: argparse.ArgumentParser, quick: dict[str, Any]) -> argparse.Namespace:
    """Parse, with the ``--quick`` sizes as the defaults when it is given (explicit options still win)."""
    first, _ = parser.parse_known_args()
    if first.quick:
        parser.set_defaults(**quick)
    return parser.parse_args()


def main_frame(name: str, args: argparse.Namespace, body: Callable[[Path], bool]) -> int:
    """Run ``body(work)`` in a fresh temp directory: 0 when it returns True (target met), 1 when
    False, 2 when it raised BenchError; servers and CLI runs are stopped, the directory removed."""
    install_signal_handlers()
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    load = os.getloadavg()
    print(f"{name}: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the start; "
          f"Python {sys.version.split()[0]}" + ("; --quick: a smoke test, the figures say nothing about the target"
                                                 if args.quick else ""), flush=True)  # fmt: skip
    try:
        ok = body(work)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("target: not measured (the benchmark failed) MISSED")
        return 2
    finally:
        stop_all()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0 if ok else 1


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def log(message: str) -> None:
    """Progress on stderr (the figures go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
