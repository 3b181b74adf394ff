"""The ``local`` provider: an offline, free ffmpeg animatic of each shot (SPEC §5).

Each job becomes a sequence of stills (the start image, then the end image or the
reference images in turn), each with a gentle push-in, cross-faded into one another,
plus a quiet tone bed when sound is on. The clip has exactly ``duration * 24`` frames.

Rendering runs as a background ffmpeg subprocess started by ``submit``; ``poll`` waits up
to ``long_poll`` seconds for it before answering "processing". Everything
``poll`` needs lives on disk under ``<cache_dir>/local-work/``: the finished clip
``<task id>.mp4`` (written via temp file + rename, so it is always complete) and the
render recipe ``<task id>.json``. A restarted process can therefore poll a task it never
submitted: a finished clip is reported at once, and a missing one is rendered again from
its recipe (it is free and deterministic, so a re-render gives the same clip).

``download`` *moves* the finished clip (or still) to its destination (the cache's temp
directory, on the same file system) rather than copying it: the work directory would otherwise
keep a second copy of every clip for good. A second download of the same task, or a poll after the clip was
taken, renders it again from its recipe.

A still (a job of kind ``still``) is a placeholder PNG drawn from its prompt's hash at the size
its model's fields give (:func:`placeholder_still`), written at submit as ``<task id>.png`` with
its recipe, so ``init`` and the examples show stills offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import shutil
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from PIL import Image

from kling_render.errors import DownloadError, DownloadInterrupted
from kling_render.fsutil import atomic_path, atomic_write_json
from kling_render.jobs import Job, MediaRef, TaskResult
from kling_render.media.ffmpeg import run_async
from kling_render.money import Reservation
from kling_render.providers.base import MAX_DOWNLOAD_BYTES, Provider

__all__ = [
    "Animatic",
    "LocalProvider",
    "Still",
    "ffmpeg_args",
    "placeholder_still",
    "plan_animatic",
    "still_size",
    "task_id_for",
]

FPS = 24
SAMPLE_RATE = 48000
# 720p frames: the size Kling's std tier delivers, cheap to encode on two cores, and every
# side a multiple of 16 (whole H.264 macroblocks, even for yuv420p chroma).
SIZES: dict[str, tuple[int, int]] = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
DEFAULT_ASPECT = "16:9"  # the reference-to-video default, and the shape of most stills
PUSH_IN = 0.08  # the camera moves 8 % closer over the whole clip
MAX_FADE_FRAMES = 36  # 1.5 s at most for a cross-fade between stills
PLACEHOLDER_COLOR = "0x4a5060"  # a neutral slate for inputs that exist only as URLs
RECIPE_VERSION = 1
# How long ``poll`` waits for a running render before answering "processing": renders take a
# second or two, so one poll usually sees the clip finished however long the poll interval is.
LONG_POLL_SECONDS = 20.0
_TASK_ID = re.compile(r"^local-[0-9a-f]{16}\Z")
DEFAULT_STILL_SIZE = (1024, 1024)  # a still whose model gives no size
MAX_STILL_SIDE = 8192
_SIZE = re.compile(r"\s*(\d{1,5})\s*[*xX×]\s*(\d{1,5})\s*")


@dataclass(frozen=True)
class Still:
    """One picture of the animatic: a local image, a video's first frame, or a placeholder."""

    path: str | None  # absolute path; None stands for the placeholder frame
    video: bool = False


@dataclass(frozen=True)
class Animatic:
    """Everything needed to render one clip; stored as JSON so a restart can re-render it."""

    width: int
    height: int
    frames: int
    sound: bool
    stills: tuple[Still, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECIPE_VERSION,
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "sound": self.sound,
            "stills": [{"path": s.path, "video": s.video} for s in self.stills],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Animatic:
        if data.get("version") != RECIPE_VERSION:
            raise ValueError(f"unsupported recipe version {data.get('version')!r}")
        stills = tuple(Still(path=s["path"], video=bool(s["video"])) for s in data["stills"])
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            frames=int(data["frames"]),
            sound=bool(data["sound"]),
            stills=stills,
        )


def task_id_for(job: Job) -> str:
    """``local-`` and the first 16 hex digits of the shot key (hashed again if it is not hex)."""
    key = job.key.lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{16,}", key):
        key = hashlib.sha256(job.key.encode()).hexdigest()
    return f"local-{key[:16]}"


def _ratio(text: str) -> float | None:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*", text)
    if not m or float(m.group(1)) <= 0 or float(m.group(2)) <= 0:
        return None
    return float(m.group(1)) / float(m.group(2))


def _nearest_aspect(ratio: float) -> str:
    """The supported aspect closest to ``ratio`` (compared on a log scale: 2:1 and 1:2 are symmetric)."""
    return min(SIZES, key=lambda name: abs(math.log(ratio / (SIZES[name][0] / SIZES[name][1]))))


def _image_ratio(ref: MediaRef | None) -> float | None:
    if ref is None or ref.path is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
            with Image.open(ref.path) as im:
                width, height = im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # unreadable here; ffmpeg reports the real problem when it renders
    return width / height if width > 0 and height > 0 else None


def _ref(value: object) -> MediaRef | None:
    return value if isinstance(value, MediaRef) else None


def _still(ref: MediaRef, *, video: bool = False) -> Still:
    # An input known only by URL cannot be fetched offline: it becomes the placeholder.
    return Still(path=str(ref.path.resolve()) if ref.path is not None else None, video=video)


def plan_animatic(job: Job) -> Animatic:
    """The animatic for ``job``: its size, frame count, stills in order, and sound."""
    params = job.params
    start = _ref(params.get("image"))
    end = _ref(params.get("end_image")) or _ref(params.get("last_image"))
    refs = [r for r in params.get("images") or [] if isinstance(r, MediaRef)]
    keyframes = [r for r in params.get("keyframes") or [] if isinstance(r, MediaRef)]  # Kling 4.0, in order
    videos = [r for r in params.get("videos") or [] if isinstance(r, MediaRef)]
    video = _ref(params.get("video")) or (videos[0] if videos else None)

    frames_in_order = [start, *keyframes, end] if keyframes else [start, end]
    stills = [_still(r) for r in frames_in_order if r is not None] + [_still(r) for r in refs]
    if not stills and video is not None:
        stills = [_still(video, video=True)]  # a video-only reference: its first frame
    if not stills:
        stills = [Still(path=None)]

    ratio = _ratio(job.aspect_ratio) if job.aspect_ratio else None
    if ratio is None:
        ratio = _image_ratio(start or (refs[0] if refs else None))
    width, height = SIZES[_nearest_aspect(ratio) if ratio else DEFAULT_ASPECT]
    frames = job.duration * FPS
    # Every still needs at least two frames of its own around the cross-fades.
    return Animatic(width, height, frames, job.sound, tuple(stills[: max(1, frames // 2)]))


_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "mjpeg"), (b"RIFF", "webp"))


def _decoder(path: str) -> list[str]:
    """``-c:v`` for an image whose name does not say its format (a still kept by the cache as
    ``<key>.img``): ffmpeg's image2 demuxer picks its decoder by the file's suffix."""
    if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        return []
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return []
    for magic, codec in _MAGIC:
        if head.startswith(magic) and (codec != "webp" or head[8:12] == b"WEBP"):
            return ["-c:v", codec]
    return []


def _segments(frames: int, count: int) -> tuple[list[int], int]:
    """Frame lengths of ``count`` stills and the cross-fade length so the joined clip has ``frames``."""
    if count == 1:
        return [frames], 0
    fade = max(1, min(MAX_FADE_FRAMES, frames // (2 * count)))
    total = frames + (count - 1) * fade  # each fade overlaps two stills
    base, extra = divmod(total, count)
    return [base + (1 if i < extra else 0) for i in range(count)], fade


def ffmpeg_args(anim: Animatic, out: Path) -> list[str]:
    """The ffmpeg arguments (after the runner's base flags) that render ``anim`` to ``out`` as MP4."""
    w, h = anim.width, anim.height
    big_w, big_h = 2 * w, 2 * h  # scaled up once: the push-in then crops on a half-pixel grid
    lengths, fade = _segments(anim.frames, len(anim.stills))
    rate = PUSH_IN / max(anim.frames - 1, 1)

    inputs: list[str] = []
    chains: list[str] = []
    for i, still in enumerate(anim.stills):
        cover = (
            f"scale={big_w}:{big_h}:force_original_aspect_ratio=increase,crop={big_w}:{big_h},"
            "setsar=1,format=yuv420p"
        )
        if still.path is None:
            head = (
                f"color=c={PLACEHOLDER_COLOR}:s={big_w}x{big_h}:r={FPS},trim=end_frame=1,format=yuv420p,"
                f"drawgrid=w=iw/8:h=ih/8:t=4:c=white@0.25"
            )
        else:
            n = inputs.count("-i")
            if still.video:
                inputs += ["-t", "1", "-i", "file:" + still.path]
            else:
                inputs += ["-f", "image2", "-pattern_type", "none", *_decoder(still.path), "-i", "file:" + still.path]
            head = f"[{n}:v:0]trim=end_frame=1,{cover}"
        zoom = (
            f"zoompan=z='1+{rate:.8f}*on':x='iw/2-iw/zoom/2':y='ih/2-ih/zoom/2'"
            f":d={lengths[i]}:s={w}x{h}:fps={FPS}"
        )
        chains.append(f"{head},{zoom}[s{i}]")

    joined = "s0"
    done = lengths[0]
    for i in range(1, len(lengths)):
        offset = (done - fade) / FPS
        chains.append(
            f"[{joined}][s{i}]xfade=transition=fade:duration={fade / FPS:.6f}:offset={offset:.6f}[x{i}]"
        )
        joined = f"x{i}"
        done += lengths[i] - fade
    # Clone the last frame if rounding ever left the join a frame short, then cut exactly.
    chains.append(f"[{joined}]tpad=stop_mode=clone:stop=2,trim=end_frame={anim.frames},setsar=1[v]")
    maps = ["-map", "[v]"]

    if anim.sound:
        samples = anim.frames * SAMPLE_RATE // FPS
        seconds = anim.frames / FPS
        swell = "(0.8+0.2*sin(2*PI*0.25*t))"  # a slow swell so the bed is not a flat test tone
        left = f"{swell}*(0.030*sin(2*PI*220*t)+0.018*sin(2*PI*330*t))"
        right = f"{swell}*(0.030*sin(2*PI*220*t)+0.018*sin(2*PI*277.18*t))"
        chains.append(
            f"aevalsrc=exprs='{left}|{right}':s={SAMPLE_RATE}:c=stereo,"
            f"apad=whole_len={samples},atrim=end_sample={samples},"
            f"afade=t=in:d=0.5,afade=t=out:st={max(seconds - 0.5, 0):.6f}:d=0.5[a]"
        )
        maps += ["-map", "[a]", "-c:a", "aac", "-b:a", "128k", "-ar", str(SAMPLE_RATE), "-ac", "2"]
    else:
        maps += ["-an"]

    return [
        "-y",
        *inputs,
        "-filter_complex",
        ";".join(chains),
        *maps,
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        # A fixed thread count and bit-exact muxing: the same recipe gives the same bytes. No
        # -frames:v: the graph already trims to the exact frame count, and ffmpeg 5.1 closes the
        # whole file when that limit is reached, cutting the audio's last AAC frames (2.944 s of
        # sound in a 3 s clip).
        "-threads", "2",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
        "-movflags", "+faststart",
        "-f", "mp4", "file:" + str(out),
    ]  # fmt: skip


def still_size(params: Mapping[str, Any]) -> tuple[int, int]:
    """The size of a still from its wire fields: ``size`` as ``W*H`` (or ``WxH``), else
    ``width``/``height``, else DEFAULT_STILL_SIZE; each side 16 to MAX_STILL_SIDE."""
    width, height = DEFAULT_STILL_SIZE
    match = _SIZE.fullmatch(str(params.get("size", "")))
    if match is not None:
        width, height = int(match.group(1)), int(match.group(2))
    elif isinstance(params.get("width"), int) and isinstance(params.get("height"), int):
        width, height = int(params["width"]), int(params["height"])
    return min(max(width, 16), MAX_STILL_SIDE), min(max(height, 16), MAX_STILL_SIDE)


def placeholder_still(prompt: str, width: int, height: int) -> bytes:
    """A PNG drawn from the prompt's sha256: a muted backdrop, a grid and a few flat shapes, with
    no antialiasing and no text (a font would depend on the machine), so the same prompt and size
    give the same bytes every time with the same Pillow. Offline stand-in for an image model."""
    import io

    from PIL import ImageDraw

    seed = hashlib.sha256(prompt.encode("utf-8")).digest()

    def color(i: int, low: int, span: int) -> tuple[int, int, int]:
        return (low + seed[i] % span, low + seed[i + 1] % span, low + seed[i + 2] % span)

    image = Image.new("RGB", (width, height), color(0, 40, 80))
    draw = ImageDraw.Draw(image)
    step = max(8, min(width, height) // 8)
    grid = color(3, 70, 60)
    for x in range(0, width, step):
        draw.line([(x, 0), (x, height)], fill=grid, width=max(1, step // 32))
    for y in range(0, height, step):
        draw.line([(0, y), (width, y)], fill=grid, width=max(1, step // 32))
    for n in range(4):  # four shapes, placed and coloured by the digest
        b = seed[6 + 6 * n : 12 + 6 * n]
        x0, y0 = b[0] * width // 256, b[1] * height // 256
        x1, y1 = x0 + (32 + b[2]) * width // 512, y0 + (32 + b[3]) * height // 512
        box = [(x0, y0), (min(x1, width - 1), min(y1, height - 1))]
        fill = color(6 + 6 * n + 4, 110, 140)
        if b[4] % 2:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


class LocalProvider(Provider):
    """Offline animatics: submit starts an ffmpeg render, poll watches it, download copies it."""

    name = "local"
    charges = False
    default_concurrency = 2  # two renders keep two cores busy (much of each graph is single-threaded)

    def __init__(self, *, cache_dir: Path, long_poll: float = LONG_POLL_SECONDS) -> None:
        self.work_dir = cache_dir / "local-work"
        self.long_poll = long_poll
        self._renders: dict[str, asyncio.Task[None]] = {}
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def clip_path(self, task_id: str) -> Path:
        return self.work_dir / f"{task_id}.mp4"

    def still_path(self, task_id: str) -> Path:
        return self.work_dir / f"{task_id}.png"

    def _recipe_path(self, task_id: str) -> Path:
        return self.work_dir / f"{task_id}.json"

    async def send(self, reservation: Reservation) -> str:
        """Start the animatic (free; the reservation keeps the one door for every provider)."""
        reservation.use()
        job = reservation.job
        task_id = task_id_for(job)
        if job.kind == "still":
            width, height = still_size(job.params)
            recipe = {"version": RECIPE_VERSION, "still": {"prompt": job.prompt, "width": width, "height": height}}
            atomic_write_json(self._recipe_path(task_id), recipe)
            await asyncio.to_thread(self._draw_still, task_id, job.prompt, width, height)
            return task_id
        anim = plan_animatic(job)
        atomic_write_json(self._recipe_path(task_id), anim.to_json())
        running = self._renders.get(task_id)
        if not self.clip_path(task_id).is_file() and (running is None or running.done()):
            self._start(task_id, anim)
        return task_id

    async def poll(self, task_id: str) -> TaskResult:
        if not _TASK_ID.fullmatch(task_id):
            return TaskResult("failed", error=f"not a local task id: {task_id!r}")
        still = self.still_path(task_id)
        if still.is_file():
            return TaskResult("completed", output_url=still.resolve().as_uri())
        redrawn = await asyncio.to_thread(self._redraw_still, task_id)
        if redrawn is not None:
            return redrawn
        render = self._renders.get(task_id)
        if render is not None and not render.done() and render.get_loop() is not asyncio.get_running_loop():
            render = None  # started under an event loop that is gone: it will never finish
        clip = self.clip_path(task_id)
        if render is None and not clip.is_file():
            # No clip and no live render: the process restarted (or the file was removed).
            try:
                anim = Animatic.from_json(json.loads(self._recipe_path(task_id).read_text("utf-8")))
            except FileNotFoundError:
                return TaskResult("failed", error=f"unknown local task {task_id} (no render recipe on disk)")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                return TaskResult("failed", error=f"unreadable render recipe for {task_id}: {exc}")
            render = self._start(task_id, anim)
        if render is not None:
            # Wait a little for the render (it never takes long) rather than send the runner to
            # sleep for a whole poll interval; a timed-out wait leaves the render running.
            await asyncio.wait({render}, timeout=self.long_poll)
            if not render.done():
                return TaskResult("processing")
            self._renders.pop(task_id, None)
            error = None if render.cancelled() else render.exception()
            if error is not None:
                return TaskResult("failed", error=str(error))
        if clip.is_file():
            return TaskResult("completed", output_url=clip.resolve().as_uri())
        return TaskResult("failed", error=f"the render of {task_id} was stopped before it finished")

    async def download(self, url: str, dest: Path) -> None:
        src = self._source_of(url)
        if not src.is_file():  # taken by an earlier download: render it again from its recipe (free)
            result = await self.poll(src.stem)
            while result.status == "processing":
                result = await self.poll(src.stem)
            if not src.is_file():
                raise DownloadError(f"local clip {src.name} is gone and cannot be rendered again: {result.error}")
        size = src.stat().st_size
        if size > MAX_DOWNLOAD_BYTES:
            raise DownloadError(f"local clip {src.name} is {size} bytes, over the download cap")
        try:
            await asyncio.to_thread(_move, src, dest)
        except OSError as exc:
            raise DownloadInterrupted(f"cannot move local clip {src.name}: {exc}") from exc

    async def aclose(self) -> None:
        """Stop renders still running (their ffmpeg processes are killed)."""
        running = [t for t in self._renders.values() if not t.done()]
        self._renders.clear()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _draw_still(self, task_id: str, prompt: str, width: int, height: int) -> None:
        if not self.still_path(task_id).is_file():
            with atomic_path(self.still_path(task_id), suffix=".png") as tmp:
                tmp.write_bytes(placeholder_still(prompt, width, height))

    def _redraw_still(self, task_id: str) -> TaskResult | None:
        """A still whose image is gone (a cleaned work dir) drawn again from its recipe; None when
        the task is not a still."""
        try:
            recipe = json.loads(self._recipe_path(task_id).read_text("utf-8"))
            spec = recipe["still"]
            prompt, width, height = str(spec["prompt"]), int(spec["width"]), int(spec["height"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._draw_still(task_id, prompt, width, height)
        return TaskResult("completed", output_url=self.still_path(task_id).resolve().as_uri())

    def _start(self, task_id: str, anim: Animatic) -> asyncio.Task[None]:
        render = asyncio.get_running_loop().create_task(self._render(task_id, anim))
        self._renders[task_id] = render
        return render

    async def _render(self, task_id: str, anim: Animatic) -> None:
        # One semaphore per event loop: a semaphore may not be shared between loops.
        loop = asyncio.get_running_loop()
        slots = self._slots.setdefault(loop, asyncio.Semaphore(self.default_concurrency))
        async with slots:
            with atomic_path(self.clip_path(task_id), suffix=".mp4") as tmp:
                await run_async(ffmpeg_args(anim, tmp), f"rendering the local animatic {task_id}")

    def _source_of(self, url: str) -> Path:
        """The work-dir file a ``file://`` URL names; DownloadError for anything else."""
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"the local provider only downloads its own file:// clips, not {url!r}")
        src = Path(url2pathname(parsed.path)).resolve()
        if src.parent != self.work_dir.resolve() or src.suffix not in (".mp4", ".png"):
            raise DownloadError(f"{url!r} is not a clip of the local provider")
        if not _TASK_ID.fullmatch(src.stem) or not (src.is_file() or self._recipe_path(src.stem).is_file()):
            raise DownloadError(f"local clip {src.name} was never rendered")
        return src


def _move(src: Path, dest: Path) -> None:
    """``src`` becomes ``dest`` (a rename on one file system; else a copy, then ``src`` removed)."""
    try:
        os.replace(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
        src.unlink(missing_ok=True)
