"""Exact, deterministic frames for continuity (media.frames) and the local provider's placeholder
stills: real ffmpeg on tiny generated clips, real PNGs."""

from __future__ import annotations

import asyncio
import hashlib
import io
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from money_kit import submit as paid_submit
from PIL import Image

from kling_render.errors import FFmpegError
from kling_render.jobs import Job
from kling_render.media import ffmpeg
from kling_render.media.frames import ClipFrames, clip_frames, extract_frame, frame_index
from kling_render.providers.local import LocalProvider, placeholder_still, still_size

FPS = 24
STEP = 4  # luma per frame: frame n is flat grey n * STEP (limited range), 48 frames fit in 16..235


@pytest.fixture(scope="module")
def ramp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 24 fps, losslessly coded, each frame a flat grey that names its decode number."""
    path = tmp_path_factory.mktemp("frames") / "ramp.mp4"
    source = f"nullsrc=s=64x48:r={FPS}:d=2,geq=lum='16+N*{STEP}':cb=128:cr=128"
    ffmpeg.run(["-y", "-f", "lavfi", "-i", source, "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p",
                "-g", "12", "-bf", "2", str(path)], "making the ramp")  # fmt: skip
    return path


def frame_number(png: Path) -> int:
    """Which ramp frame a PNG shows: its grey, back from full-range RGB to the frame number."""
    grey = Image.open(png).convert("L").getpixel((8, 8))
    assert isinstance(grey, int)
    limited = 16 + grey * 219 / 255
    return round((limited - 16) / STEP)


def test_clip_frames_counts_every_frame(ramp: Path) -> None:
    assert clip_frames(ramp) == ClipFrames(Fraction(FPS), 48)


@pytest.mark.parametrize(
    ("pos", "start", "end", "expected"),
    [
        ("first", 0.0, None, 0),
        ("last", 0.0, None, 47),
        ("first", 0.25, 1.5, 6),  # the frame shown at 0.25 s
        ("last", 0.25, 1.5, 35),  # the one shown just before 1.5 s
        (0.5, 0.25, 1.5, 18),  # 0.25 + 0.5 s into the clip
        (1.25, 0.25, 1.5, 35),  # the whole kept length: the last kept frame
        ("last", 0.0, 1.51, 36),  # 1.51 s reaches into frame 36
        ("last", 0.0, 5.0, 47),  # past the clip's end: its last frame
    ],
)
def test_positions_land_on_the_right_frame_of_the_kept_range(
    ramp: Path, tmp_path: Path, pos: str | float, start: float, end: float | None, expected: int
) -> None:
    index = frame_index(pos, start, end, clip_frames(ramp))
    assert index == expected
    png = extract_frame(ramp, index, tmp_path / "f.png")
    assert frame_number(png) == expected  # decoded up to that exact frame, not the nearest keyframe


def test_a_frame_is_the_same_bytes_every_time(ramp: Path, tmp_path: Path) -> None:
    one = extract_frame(ramp, 29, tmp_path / "a.png").read_bytes()
    two = extract_frame(ramp, 29, tmp_path / "b.png").read_bytes()
    assert one == two and one.startswith(b"\x89PNG")
    assert b"tEXt" not in one and b"tIME" not in one  # no metadata: nothing that varies between runs
    assert extract_frame(ramp, 30, tmp_path / "c.png").read_bytes() != one


def test_a_frame_past_the_end_is_an_error_and_leaves_nothing(ramp: Path, tmp_path: Path) -> None:
    with pytest.raises(FFmpegError, match="no such frame"):
        extract_frame(ramp, 48, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_a_frame_of_a_real_clip_with_b_frames(tmp_path: Path) -> None:
    from mediagen import make_clip

    clip = make_clip(tmp_path / "c.mp4", duration=1.0, fps=24, audio=True)
    frames = clip_frames(clip)
    assert frames.count == 24
    last = extract_frame(clip, frame_index("last", 0, None, frames), tmp_path / "last.png")
    with Image.open(last) as image:
        assert image.size == (160, 90) and image.mode == "RGB"


def test_placeholder_still_is_deterministic_and_sized() -> None:
    one = placeholder_still("a ceramic mug", 320, 180)
    assert one == placeholder_still("a ceramic mug", 320, 180)
    assert one != placeholder_still("a ceramic cup", 320, 180)
    assert hashlib.sha256(one).hexdigest() != hashlib.sha256(placeholder_still("a ceramic mug", 180, 320)).hexdigest()
    with Image.open(io.BytesIO(one)) as image:
        assert (image.size, image.format) == ((320, 180), "PNG")


@pytest.mark.parametrize(
    ("params", "size"),
    [({"size": "1280*720"}, (1280, 720)), ({"size": "640x640"}, (640, 640)), ({}, (1024, 1024)),
     ({"width": 300, "height": 500}, (300, 500)), ({"size": "99999*2"}, (8192, 16))],
)  # fmt: skip
def test_still_size_from_the_models_fields(params: dict[str, object], size: tuple[int, int]) -> None:
    assert still_size(params) == size


def test_the_local_provider_makes_a_still_and_makes_it_again_from_its_recipe(tmp_path: Path) -> None:
    job = Job(shot_id="still:hero", model="bytedance/seedream-v4.5", params={"prompt": "a mug", "size": "320*200"},
              duration=0, sound=False, aspect_ratio=None, key="ab" * 32, cost_usd=0.04, prompt="a mug",
              kind="still")  # fmt: skip

    async def run(provider: LocalProvider) -> bytes:
        task = await paid_submit(provider, job)  # through the money door, as every provider request
        result = await provider.poll(task)
        assert result.completed and result.output_url is not None
        dest = tmp_path / f"{task}-out.png"
        await provider.download(result.output_url, dest)
        return dest.read_bytes()

    provider = LocalProvider(cache_dir=tmp_path / "cache")
    first = asyncio.run(run(provider))
    assert first == placeholder_still("a mug", 320, 200)
    # A restarted process whose work dir lost the image draws it again from the recipe.
    task = f"local-{'ab' * 8}"
    url = asyncio.run(provider.poll(task)).output_url
    assert url is not None
    Path(url2pathname(urlparse(url).path)).unlink()
    again = asyncio.run(LocalProvider(cache_dir=tmp_path / "cache").poll(task))
    assert again.completed and again.output_url is not None
    assert Path(url2pathname(urlparse(again.output_url).path)).read_bytes() == first
