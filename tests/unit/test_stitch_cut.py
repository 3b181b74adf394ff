"""End-to-end stitching with the real ffmpeg on tiny clips generated at test time."""

from __future__ import annotations

import re
import time
from fractions import Fraction
from pathlib import Path

import pytest
from mediagen import make_audio, make_clip

from kling_render.errors import CorruptClipError, MissingClipsError, StitchError
from kling_render.media import ffmpeg
from kling_render.stitch import (
    TRANSITIONS,
    AudioSettings,
    CutClip,
    OutputSettings,
    StitchResult,
    probe,
    stitch,
    verify_clip,
)
from kling_render.stitch.graph import kept_duration

OUT = OutputSettings(width=160, height=90, fps=24)


def stream_seconds(path: Path, kind: str) -> float:
    """Decoded length of the first ``kind`` ("v" or "a") stream, from ffmpeg's own progress report."""
    stderr = ffmpeg.run(
        ["-i", f"file:{path}", "-map", f"0:{kind}:0", "-f", "null", "-progress", "pipe:2", "-nostats", "-"],
        "measuring",
    )
    times = [int(m) for m in re.findall(r"out_time_us=(\d+)", stderr)]
    return max(times) / 1e6


def video_frames(path: Path) -> int:
    stderr = ffmpeg.run(
        ["-i", f"file:{path}", "-map", "0:v:0", "-f", "null", "-progress", "pipe:2", "-nostats", "-"],
        "counting frames",
    )
    return int(re.findall(r"^frame=(\d+)", stderr, re.M)[-1])


def read_chapters(path: Path) -> list[tuple[str, float, float]]:
    stderr = ffmpeg.run(["-loglevel", "info", "-i", f"file:{path}", "-f", "null", "-t", "0", "-"], "chapters")
    stderr = stderr.split("Output #0", 1)[0]  # the output dump repeats the chapters
    found = re.findall(
        r"Chapter #\d+:\d+: start (\d+\.\d+), end (\d+\.\d+)\s+Metadata:\s+title\s+: (\S+)", stderr
    )
    return [(title, float(s), float(e)) for s, e, title in found]


def integrated_lufs(path: Path) -> float:
    stderr = ffmpeg.run(
        [
            "-loglevel",
            "info",
            "-i",
            f"file:{path}",
            "-map",
            "0:a:0",
            "-af",
            "ebur128=framelog=quiet",
            "-f",
            "null",
            "-",
        ],
        "measuring loudness",
    )
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", stderr)[-1])


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "a24": make_clip(d / "a24.mp4", width=320, height=180, fps=24, duration=1.5, tone=440),
        "b25": make_clip(d / "b25.mp4", width=160, height=120, fps=25, duration=1.2, audio=False),
        "c30": make_clip(d / "c30.mp4", width=180, height=320, fps=30, duration=2.0, tone=660, channels=2),
        "d24": make_clip(d / "d24.mp4", width=160, height=90, fps=24, duration=1.0, sample_rate=48000),
        "e24": make_clip(
            d / "e24.mp4",
            width=160,
            height=90,
            fps=24,
            duration=1.25,
            sample_rate=48000,
            tone=550,
            pattern="smptebars",
        ),
        "music": make_audio(d / "bed.m4a", duration=1.7, tone=220, volume_db=-20),
    }


def cut(media: dict[str, Path], key: str, shot: str | None = None, **kw: object) -> CutClip:
    path = media[key]
    return CutClip(shot or key, path, probe(path), **kw)  # type: ignore[arg-type]


def mixed_project(media: dict[str, Path]) -> list[CutClip]:
    return [
        cut(media, "a24", "intro", trim_start=0.2),
        cut(media, "b25", "pour", transition="fade", transition_duration=0.4),
        cut(
            media, "c30", "hero", trim_start=0.1, trim_end=1.7, transition="wipeleft", transition_duration=0.3
        ),
        cut(media, "d24", "cut-in"),
        cut(media, "e24", "outro", trim_end=1.0, transition="dissolve", transition_duration=0.25),
    ]


def test_mixed_project_durations_are_frame_exact(media: dict[str, Path], tmp_path: Path) -> None:
    clips = mixed_project(media)
    expected = sum(kept_duration(c) for c in clips) - sum(c.transition_duration for c in clips[1:])
    assert expected == pytest.approx(1.3 + 1.2 + 1.6 + 1.0 + 1.0 - 0.4 - 0.3 - 0.25)
    result = stitch(clips, OUT, None, tmp_path / "final.mp4")
    assert not result.stream_copy
    assert result.path.is_file()
    assert abs(result.frames - expected * 24) <= 1
    video = stream_seconds(result.path, "v")
    audio = stream_seconds(result.path, "a")
    assert abs(video - expected) <= 1 / 24 + 1e-6
    assert abs(audio - video) <= 0.025
    assert video_frames(result.path) == result.frames
    info = verify_clip(result.path)
    assert (info.width, info.height, info.fps, info.pix_fmt, info.sar) == (
        160,
        90,
        Fraction(24),
        "yuv420p",
        "1:1",
    )
    assert (info.audio_codec, info.sample_rate, info.channels) == ("aac", 48000, 2)
    print(f"mixed: expected {expected:.4f}s video {video:.4f}s audio {audio:.4f}s")


def test_chapters_are_written_at_shot_starts(media: dict[str, Path], tmp_path: Path) -> None:
    clips = mixed_project(media)
    result = stitch(clips, OUT, None, tmp_path / "final.mp4")
    got = read_chapters(result.path)
    assert [c[0] for c in got] == ["intro", "pour", "hero", "cut-in", "outro"]
    for (sid, start, end), (rsid, rstart, rend) in zip(got, result.chapters, strict=True):
        assert sid == rsid
        assert start == pytest.approx(rstart, abs=0.002) and end == pytest.approx(rend, abs=0.002)
    # intro keeps 1.3 s (31 frames) and pour fades in over its last 0.4 s (10 frames):
    # pour's chapter starts where the fade starts, frame 21
    assert result.chapters[1][1] == pytest.approx(21 / 24)
    assert result.chapters[-1][2] == pytest.approx(result.duration)


def test_restitch_is_byte_identical(media: dict[str, Path], tmp_path: Path) -> None:
    clips = mixed_project(media)[:3]
    first = stitch(clips, OUT, None, tmp_path / "one.mp4")
    second = stitch(clips, OUT, None, tmp_path / "two.mp4")
    assert first.path.read_bytes() == second.path.read_bytes()
    other = stitch(clips[:2], OUT, None, tmp_path / "three.mp4")
    assert other.path.read_bytes() != first.path.read_bytes()


def test_restitch_with_ducked_music_is_byte_identical(media: dict[str, Path], tmp_path: Path) -> None:
    """Ducking used to end on whichever input of sidechaincompress ended first, a race between
    ffmpeg's threads: about half the re-stitches of one project gave other bytes."""
    clips = [cut(media, "a24"), cut(media, "d24", transition="fade", transition_duration=0.5), cut(media, "e24")]
    audio = AudioSettings(music=media["music"], music_volume=0.5, duck=True, normalize=True)
    digests = {stitch(clips, OUT, audio, tmp_path / f"{i}.mp4").path.read_bytes() for i in range(8)}
    assert len(digests) == 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[CutClip, CutClip]:
    d = tmp_path_factory.mktemp("pair")
    a = make_clip(d / "a.mp4", width=64, height=36, fps=12, duration=0.5, audio=False)
    b = make_clip(d / "b.mp4", width=64, height=36, fps=12, duration=0.5, audio=False, pattern="smptebars")
    return CutClip("a", a, probe(a)), CutClip("b", b, probe(b))


@pytest.mark.parametrize("name", sorted(TRANSITIONS - {"cut"}))
def test_every_transition_renders(name: str, pair: tuple[CutClip, CutClip], tmp_path: Path) -> None:
    a, b = pair
    clips = [a, CutClip("b", b.path, b.info, transition=name, transition_duration=0.25)]
    result = stitch(clips, OutputSettings(64, 36, 12), None, tmp_path / f"{name}.mp4")
    assert result.frames == 12 - 3
    assert video_frames(result.path) == 9


def test_music_is_looped_ducked_and_normalised(media: dict[str, Path], tmp_path: Path) -> None:
    clips = [
        cut(media, "a24"),
        cut(media, "b25"),
        cut(media, "d24", transition="fade", transition_duration=0.5),
    ]
    audio = AudioSettings(music=media["music"], music_volume=0.5, duck=True, normalize=True)
    start = time.perf_counter()
    result = stitch(clips, OUT, audio, tmp_path / "music.mp4")
    elapsed = time.perf_counter() - start
    assert result.duration == pytest.approx(1.5 + 1.2 + 1.0 - 0.5, abs=1 / 24)
    video = stream_seconds(result.path, "v")
    audio_len = stream_seconds(result.path, "a")
    assert abs(audio_len - video) <= 0.025  # 1.7 s music looped to 3.2 s, not the cut stretched to it
    lufs = integrated_lufs(result.path)
    assert -17.0 <= lufs <= -15.0
    plain = stitch(clips, OUT, AudioSettings(music=media["music"]), tmp_path / "plain.mp4")
    assert integrated_lufs(plain.path) < -18.0  # the same cut without normalisation is quieter
    print(f"music: {lufs:.2f} LUFS normalised, {elapsed:.2f}s, video {video:.4f}s audio {audio_len:.4f}s")


def test_music_loops_past_its_own_length(media: dict[str, Path], tmp_path: Path) -> None:
    # b25 is silent, so every sound in the 3.6 s cut is the 1.7 s bed (a -44 dBFS tone after the
    # upmix); at 1.8-2.3 s, after the bed's end and before the 1.2 s fade-out, only a loop can play
    clips = [cut(media, "b25"), cut(media, "b25", "again"), cut(media, "b25", "third")]
    result = stitch(clips, OUT, AudioSettings(music=media["music"], music_volume=1.0), tmp_path / "loop.mp4")
    stderr = ffmpeg.run(
        [
            "-loglevel",
            "info",
            "-ss",
            "2.0",
            "-t",
            "0.5",
            "-i",
            f"file:{result.path}",
            "-map",
            "0:a:0",
            "-af",
            "volumedetect",
            "-f",
            "null",
            "-",
        ],
        "volumedetect",
    )
    mean = float(re.findall(r"mean_volume: (-?[\d.]+) dB", stderr)[-1])
    assert mean > -50.0
    silent = stitch(clips, OUT, None, tmp_path / "silent.mp4")
    stderr = ffmpeg.run(
        [
            "-loglevel",
            "info",
            "-i",
            f"file:{silent.path}",
            "-map",
            "0:a:0",
            "-af",
            "volumedetect",
            "-f",
            "null",
            "-",
        ],
        "volumedetect",
    )
    assert float(re.findall(r"mean_volume: (-?[\d.]+) dB", stderr)[-1]) < -80.0


def test_same_format_cuts_use_stream_copy(media: dict[str, Path], tmp_path: Path) -> None:
    odd = tmp_path / 'it\'s a "clip" $x.mp4'
    odd.write_bytes(media["e24"].read_bytes())
    clips = [cut(media, "d24", "one"), CutClip("two", odd, probe(odd)), cut(media, "d24", "three")]
    result = stitch(clips, OUT, AudioSettings(), tmp_path / "copy.mp4")
    assert result.stream_copy
    info = verify_clip(result.path)  # decodes end to end
    assert info.duration == pytest.approx(1.0 + 1.25 + 1.0, abs=0.05)
    assert video_frames(result.path) == 24 + 30 + 24
    assert [c[0] for c in read_chapters(result.path)] == ["one", "two", "three"]
    assert result.chapters[1] == ("two", 1.0, 2.25)
    again = stitch(clips, OUT, AudioSettings(), tmp_path / "copy2.mp4")
    assert again.path.read_bytes() == result.path.read_bytes()
    # a trim or a size mismatch forces the re-encode
    trimmed = [clips[0], CutClip("two", odd, probe(odd), trim_end=1.0)]
    assert not stitch(trimmed, OUT, None, tmp_path / "enc.mp4").stream_copy
    assert not stitch(clips, OutputSettings(320, 180, 24), None, tmp_path / "big.mp4").stream_copy


def test_invalid_cut_and_missing_clip_write_nothing(media: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "out" / "final.mp4"
    bad = [cut(media, "d24"), cut(media, "e24", transition="fade", transition_duration=0.9)]
    with pytest.raises(StitchError, match="longer than half"):
        stitch(bad, OUT, None, dest)
    ghost = CutClip("ghost", tmp_path / "ghost.mp4", probe(media["d24"]))
    with pytest.raises(MissingClipsError, match="ghost"):
        stitch([cut(media, "d24"), ghost], OUT, None, dest)
    assert not dest.exists()


def test_ffmpeg_failure_leaves_no_partial_file(media: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    data = media["a24"].read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    dest = tmp_path / "final.mp4"
    clip = CutClip("broken", broken, probe(media["a24"]))  # stale info: the file was damaged since
    with pytest.raises(CorruptClipError) as err:  # the decode in the stitch names the clip
        stitch([cut(media, "d24"), clip], OUT, None, dest)
    assert err.value.shot_id == "broken" and "broken: its clip is damaged" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]


def test_relative_paths_resolve_against_base_dir(media: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    local = tmp_path / "clips" / "d.mp4"
    local.write_bytes(media["d24"].read_bytes())
    clips = [CutClip("d", Path("clips/d.mp4"), probe(local), trim_end=0.5)]
    result = stitch(clips, OUT, None, Path("renders/final.mp4"), base_dir=tmp_path)
    assert result.path == tmp_path / "renders" / "final.mp4"
    assert isinstance(result, StitchResult) and result.frames == 12
