"""The local provider end to end: real ffmpeg renders through submit → poll → download."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from fractions import Fraction
from pathlib import Path

import pytest
from mediagen import make_clip
from money_kit import submit as paid_submit
from PIL import Image

from kling_render.errors import DownloadError
from kling_render.jobs import Job, MediaRef, TaskResult
from kling_render.media import ffmpeg
from kling_render.media.probe import MediaInfo, probe
from kling_render.providers.local import LocalProvider, ffmpeg_args, plan_animatic, task_id_for


def _image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> MediaRef:
    Image.new("RGB", size, color).save(path)
    return MediaRef(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture
def images(tmp_path: Path) -> dict[str, MediaRef]:
    """Small stills: the provider scales them to the clip size itself."""
    d = tmp_path / "images"
    d.mkdir()
    return {
        "wide": _image(d / "wide.png", (320, 180), (200, 120, 60)),
        "wide2": _image(d / "wide2.png", (400, 220), (40, 90, 160)),
        "square": _image(d / "square.png", (300, 310), (90, 160, 90)),
        "tall": _image(d / "tall.png", (300, 520), (160, 60, 140)),
    }


def _job(
    params: dict[str, object], *, duration: int = 3, sound: bool = False, aspect: str | None = None
) -> Job:
    recipe = repr((sorted(params.items(), key=str), duration, sound, aspect))
    key = hashlib.sha256(recipe.encode()).hexdigest()
    return Job(
        shot_id="shot",
        model="kling-v3.0-std/image-to-video",
        params=params,
        duration=duration,
        sound=sound,
        aspect_ratio=aspect,
        key=key,
        cost_usd=0.0,
    )


async def _render(provider: LocalProvider, job: Job, dest: Path) -> TaskResult:
    task_id = await paid_submit(provider, job)
    assert task_id == f"local-{job.key[:16]}"
    result = await _wait(provider, task_id)
    assert result.output_url is not None
    await provider.download(result.output_url, dest)
    return result


async def _wait(provider: LocalProvider, task_id: str) -> TaskResult:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = await provider.poll(task_id)
        if result.terminal:
            assert result.completed, result.error
            return result
        assert result.status == "processing"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{task_id} did not finish")


def _frames(path: Path) -> int:
    """Decoded video frames, counted by ffmpeg itself."""
    stderr = ffmpeg.run(
        ["-i", str(path), "-map", "0:v:0", "-f", "null", "-progress", "pipe:2", "-nostats", "-"], "counting"
    )
    return int(re.findall(r"^frame=(\d+)$", stderr, re.M)[-1])


def _audio_seconds(path: Path) -> float:
    stderr = ffmpeg.run(
        ["-i", str(path), "-map", "0:a:0", "-f", "null", "-progress", "pipe:2", "-nostats", "-"], "timing"
    )
    return int(re.findall(r"^out_time_us=(\d+)$", stderr, re.M)[-1]) / 1e6


def _check(path: Path, *, frames: int, size: tuple[int, int], sound: bool) -> MediaInfo:
    info = probe(path)
    assert (info.width, info.height) == size
    assert info.fps == Fraction(24)
    assert info.video_codec == "h264"
    assert info.pix_fmt == "yuv420p"
    assert info.sar == "1:1"
    assert info.has_audio is sound
    if sound:
        assert (info.audio_codec, info.sample_rate, info.channels) == ("aac", 48000, 2)
        assert _audio_seconds(path) == pytest.approx(frames / 24, abs=0.03)
    assert _frames(path) == frames
    return info


def test_image_only_5s_720p(tmp_path: Path, images: dict[str, MediaRef]) -> None:
    provider = LocalProvider(cache_dir=tmp_path / "cache")
    out = tmp_path / "out.mp4"
    started = time.monotonic()
    asyncio.run(_render(provider, _job({"image": images["wide"]}, duration=5), out))
    print(f"5 s 1280x720 animatic: {time.monotonic() - started:.2f} s")
    _check(out, frames=120, size=(1280, 720), sound=False)


def test_end_image_with_sound(tmp_path: Path, images: dict[str, MediaRef]) -> None:
    provider = LocalProvider(cache_dir=tmp_path / "cache")
    out = tmp_path / "out.mp4"
    job = _job({"image": images["wide"], "end_image": images["wide2"]}, sound=True)
    asyncio.run(_render(provider, job, out))
    _check(out, frames=72, size=(1280, 720), sound=True)
    # The last frame is the end image, not the start image.
    last = tmp_path / "last.png"
    ffmpeg.run(["-sseof", "-0.1", "-i", str(out), "-frames:v", "1", "-y", str(last)], "grabbing")
    with Image.open(last) as im:
        pixel = im.convert("RGB").resize((1, 1)).getpixel((0, 0))
    assert isinstance(pixel, tuple)
    assert pixel[2] > pixel[0]  # blue: the end image


def test_last_image_is_an_end_image(images: dict[str, MediaRef]) -> None:
    anim = plan_animatic(_job({"image": images["wide"], "last_image": images["wide2"]}))
    assert [s.path for s in anim.stills] == [str(images["wide"].path), str(images["wide2"].path)]


def test_reference_images_in_turn_9x16(tmp_path: Path, images: dict[str, MediaRef]) -> None:
    provider = LocalProvider(cache_dir=tmp_path / "cache")
    out = tmp_path / "out.mp4"
    refs = [images["wide"], images["square"], images["tall"]]
    job = _job({"images": refs}, aspect="9:16")
    assert len(plan_animatic(job).stills) == 3
    asyncio.run(_render(provider, job, out))
    _check(out, frames=72, size=(720, 1280), sound=False)


def test_square_aspect_and_url_only_image_is_a_placeholder(tmp_path: Path) -> None:
    provider = LocalProvider(cache_dir=tmp_path / "cache")
    out = tmp_path / "out.mp4"
    url = "https://example.invalid/remote.png"
    job = _job({"image": MediaRef(url=url)}, sound=True, aspect="1:1")
    anim = plan_animatic(job)
    assert [s.path for s in anim.stills] == [None]
    assert not any(url in a for a in ffmpeg_args(anim, tmp_path / "x.mp4"))  # never fetched
    asyncio.run(_render(provider, job, out))
    _check(out, frames=72, size=(720, 720), sound=True)


def test_video_only_reference_uses_its_first_frame(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "ref.mp4", duration=2.0, audio=False)
    job = _job({"video": MediaRef(path=clip, sha256="0" * 64)}, aspect="16:9")
    assert [s.video for s in plan_animatic(job).stills] == [True]
    out = tmp_path / "out.mp4"
    asyncio.run(_render(LocalProvider(cache_dir=tmp_path / "cache"), job, out))
    _check(out, frames=72, size=(1280, 720), sound=False)


@pytest.mark.parametrize(
    ("image", "aspect", "size"),
    [
        ("wide", None, (1280, 720)),
        ("square", None, (720, 720)),
        ("tall", None, (720, 1280)),
        ("wide", "9:16", (720, 1280)),  # the job's aspect wins over the image's
        ("tall", "1:1", (720, 720)),
    ],
)
def test_size_from_aspect(
    images: dict[str, MediaRef], image: str, aspect: str | None, size: tuple[int, int]
) -> None:
    anim = plan_animatic(_job({"image": images[image]}, aspect=aspect))
    assert (anim.width, anim.height) == size
    assert anim.frames == 72


def test_poll_after_restart_and_rerender_of_a_lost_clip(tmp_path: Path, images: dict[str, MediaRef]) -> None:
    cache = tmp_path / "cache"
    job = _job({"image": images["wide"]}, aspect="1:1")

    async def first() -> tuple[str, TaskResult]:
        provider = LocalProvider(cache_dir=cache)
        task_id = await paid_submit(provider, job)
        return task_id, await _wait(provider, task_id)

    task_id, done = asyncio.run(first())
    assert done.output_url is not None
    clip = cache / "local-work" / f"{task_id}.mp4"
    first_bytes = clip.read_bytes()

    async def after_restart() -> tuple[TaskResult, TaskResult, TaskResult]:
        provider = LocalProvider(cache_dir=cache, long_poll=0)  # nothing in memory; no waiting in poll
        still_there = await provider.poll(task_id)
        clip.unlink()
        again = await provider.poll(task_id)
        return still_there, again, await _wait(provider, task_id)

    still_there, again, rerendered = asyncio.run(after_restart())
    assert still_there.completed and still_there.output_url == done.output_url
    assert again.status == "processing"
    assert rerendered.output_url == done.output_url
    assert clip.read_bytes() == first_bytes  # deterministic: the re-render is the same clip


def test_poll_of_unknown_or_malformed_task_fails(tmp_path: Path) -> None:
    provider = LocalProvider(cache_dir=tmp_path / "cache")

    async def go() -> list[TaskResult]:
        return [await provider.poll("local-0123456789abcdef"), await provider.poll("local-../../etc")]

    for result in asyncio.run(go()):
        assert result.failed and result.error


def test_failed_render_is_reported_by_poll(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    provider = LocalProvider(cache_dir=tmp_path / "cache")

    async def go() -> TaskResult:
        task_id = await paid_submit(provider, _job({"image": MediaRef(path=broken, sha256="0" * 64)}))
        while not (result := await provider.poll(task_id)).terminal:
            await asyncio.sleep(0.02)
        return result

    result = asyncio.run(go())
    assert result.failed and result.error and "ffmpeg failed" in result.error
    assert list((tmp_path / "cache" / "local-work").glob("*.mp4")) == []


def test_aclose_stops_a_render_leaving_no_partial_clip(tmp_path: Path, images: dict[str, MediaRef]) -> None:
    provider = LocalProvider(cache_dir=tmp_path / "cache")

    async def go() -> None:
        await paid_submit(provider, _job({"image": images["wide"]}, duration=15))
        await asyncio.sleep(0.2)
        await provider.aclose()

    asyncio.run(go())
    leftovers = [p.name for p in (tmp_path / "cache" / "local-work").iterdir() if p.suffix != ".json"]
    assert leftovers == []


def test_download_accepts_only_its_own_file_urls(tmp_path: Path) -> None:
    provider = LocalProvider(cache_dir=tmp_path / "cache")
    work = tmp_path / "cache" / "local-work"
    work.mkdir(parents=True)
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    (work / "local-0123456789abcdef.mp4").write_bytes(b"clip")
    bad = [
        "https://example.invalid/clip.mp4",
        "http://localhost/clip.mp4",
        outside.as_uri(),
        (work / ".." / ".." / "outside.mp4").as_uri(),
        (work / "local-fedcba9876543210.mp4").as_uri(),  # not rendered
        "file://otherhost" + str(work / "local-0123456789abcdef.mp4"),
    ]

    async def go() -> None:
        for url in bad:
            with pytest.raises(DownloadError):
                await provider.download(url, tmp_path / "dest.mp4")
        await provider.download((work / "local-0123456789abcdef.mp4").as_uri(), tmp_path / "dest.mp4")

    asyncio.run(go())
    assert (tmp_path / "dest.mp4").read_bytes() == b"clip"


def test_a_download_moves_the_clip_out_of_the_work_dir_and_a_second_one_renders_it_again(
    tmp_path: Path, images: dict[str, MediaRef]
) -> None:
    """Issue 23 item 17: the work directory kept a copy of every clip the cache also holds. The
    download now takes the clip; downloading the task again re-renders it, byte for byte."""
    cache = tmp_path / "cache"
    job = _job({"image": images["wide"]}, aspect="1:1")

    async def go() -> tuple[bytes, bytes, TaskResult]:
        provider = LocalProvider(cache_dir=cache, long_poll=5)
        task_id = await paid_submit(provider, job)
        done = await _wait(provider, task_id)
        assert done.output_url is not None
        await provider.download(done.output_url, tmp_path / "first.mp4")
        assert list((cache / "local-work").glob("*.mp4")) == []  # no second copy left behind
        again = await provider.poll(task_id)  # taken: rendered again on demand
        await provider.download(done.output_url, tmp_path / "second.mp4")
        return (tmp_path / "first.mp4").read_bytes(), (tmp_path / "second.mp4").read_bytes(), again

    first, second, again = asyncio.run(go())
    assert first == second and len(first) > 1000
    assert again.completed or again.status == "processing"
    assert list((cache / "local-work").glob("*.mp4")) == []
    assert [p.suffix for p in (cache / "local-work").iterdir()] == [".json"]  # the recipe stays (tiny)


def test_task_id_and_declared_concurrency() -> None:
    job = _job({})
    assert task_id_for(job) == f"local-{job.key[:16]}"
    assert LocalProvider.name == "local"
    assert LocalProvider.default_concurrency == 2


def test_one_poll_usually_sees_the_render_finished(tmp_path: Path, images: dict[str, MediaRef]) -> None:
    """poll waits for a running render, so a long runner poll interval costs nothing."""
    provider = LocalProvider(cache_dir=tmp_path / "cache")

    async def go() -> list[TaskResult]:
        job = _job({"image": images["square"]})
        task_id = await paid_submit(provider, job)
        assert await paid_submit(provider, job) == task_id  # a second submit does not start a second render
        return [await provider.poll(task_id), await provider.poll(task_id)]

    first, second = asyncio.run(go())
    assert first.completed and second == first
