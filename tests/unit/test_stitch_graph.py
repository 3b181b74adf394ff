"""Pure tests of the stitch graph: frame arithmetic, offsets, chapters, validation. No ffmpeg."""

from __future__ import annotations

import re
import time
from fractions import Fraction
from pathlib import Path

import pytest

from kling_render.media.probe import MediaInfo
from kling_render.stitch.graph import (
    SAMPLE_RATE,
    TRANSITIONS,
    AudioSettings,
    CutClip,
    OutputSettings,
    build_graph,
    check_clips,
    loudnorm_filter,
    max_transition,
    plan_timeline,
)


def info(duration: float = 5.0, w: int = 1920, h: int = 1080, fps: int = 24, audio: bool = True) -> MediaInfo:
    return MediaInfo(
        duration=duration,
        width=w,
        height=h,
        fps=Fraction(fps),
        video_codec="h264",
        pix_fmt="yuv420p",
        sar="1:1",
        has_audio=audio,
        audio_codec="aac" if audio else None,
        sample_rate=48000 if audio else None,
        channels=2 if audio else None,
    )


def clip(sid: str, duration: float = 5.0, **kw: object) -> CutClip:
    return CutClip(sid, Path(f"/clips/{sid}.mp4"), info(duration), **kw)  # type: ignore[arg-type]


def test_cumulative_frames_never_drift() -> None:
    # 1.01 s at 24 fps is 24.24 frames: rounding each clip alone gives 24+24+24 = 72 and
    # loses 0.03 s; cumulative rounding (24.24, 48.48, 72.72) lands on round(3.03 * 24) = 73.
    tl = plan_timeline([clip("a", 1.01), clip("b", 1.01), clip("c", 1.01)], 24)
    assert tl.frames == (24, 24, 25)
    assert tl.total_frames == 73
    assert tl.samples == tuple(n * SAMPLE_RATE // 24 for n in tl.frames)


def test_many_clips_total_matches_total_duration() -> None:
    clips = [clip(f"s{i}", 1.01) for i in range(100)]
    tl = plan_timeline(clips, 24)
    assert tl.total_frames == (101 * 24)  # 101.0 s exactly
    assert tl.total_samples == tl.total_frames * SAMPLE_RATE // 24


def test_ntsc_unfriendly_rate_keeps_audio_within_a_sample() -> None:
    tl = plan_timeline([clip("a", 1.1), clip("b", 1.1), clip("c", 1.1)], 7)  # 48000/7 is not whole
    assert tl.frames == (8, 7, 8)
    assert tl.samples == (54857, 48000, 54857)
    assert tl.total_samples == round(Fraction(23 * 48000, 7))


def test_transition_offsets_chain_from_previous_output() -> None:
    clips = [
        clip("a", 2.0),
        clip("b", 3.0, transition="fade", transition_duration=0.5),
        clip("c", 2.0),  # cut
        clip("d", 4.0, transition="wipeleft", transition_duration=1.0),
    ]
    tl = plan_timeline(clips, 24)
    assert tl.frames == (48, 72, 48, 96)
    assert tl.xfade == (0, 12, 0, 24)
    assert tl.starts == (0, 36, 108, 132)
    assert tl.total_frames == 48 + 72 + 48 + 96 - 12 - 24
    graph = build_graph(clips, OutputSettings(), None)
    xfades = re.findall(r"xfade=transition=(\w+):duration=([\d.]+):offset=([\d.]+)", graph.filter_complex)
    assert xfades == [("fade", "0.5", "1.5"), ("wipeleft", "1", "5.5")]
    assert re.findall(r"acrossfade=ns=(\d+)", graph.filter_complex) == ["24000", "48000"]
    # b and c are joined by a plain cut: one concat of two clips, then the xfade into d
    assert "[v1][a1][v2][a2]concat=n=2:v=1:a=1" in graph.filter_complex


def test_chapters_start_where_transitions_start() -> None:
    clips = [clip("a", 2.0), clip("b", 2.0, transition="fade", transition_duration=0.5), clip("c", 1.0)]
    tl = plan_timeline(clips, 24)
    assert tl.chapters(["a", "b", "c"]) == [("a", 0, 36), ("b", 36, 84), ("c", 84, 108)]


def test_trims_change_kept_frames_and_start_frame() -> None:
    clips = [clip("a", 5.0, trim_start=1.0, trim_end=3.5), clip("b", 5.0, trim_end=2.0)]
    tl = plan_timeline(clips, 25)
    assert tl.frames == (63, 50)  # 62.5 frames rounds half up; 4.5 s -> 112.5 -> 113 in all
    graph = build_graph(clips, OutputSettings(fps=25), None).filter_complex
    assert "trim=start_frame=25:end_frame=88" in graph
    assert "atrim=start=1," in graph


def test_max_transition_is_half_the_shorter_neighbour() -> None:
    assert max_transition(4.0, 3.0) == 1.5
    assert max_transition(1.0, 10.0) == 0.5


def test_validation_names_every_problem() -> None:
    clips = [
        clip("a", 2.0),
        clip("b", 2.0, transition="fade", transition_duration=1.5),
        clip("c", 2.0, transition="spin", transition_duration=0.2),
        clip("d", 2.0, trim_start=1.5, trim_end=1.5),
        clip("e", 2.0, trim_end=9.0),
    ]
    problems = check_clips(clips, OutputSettings(width=101))
    text = "\n".join(problems)
    assert "b: transition 1.5s is longer than half" in text
    assert "c: unknown transition 'spin'" in text
    assert "d: keeps 0.000s" in text
    assert "e: trim end 9.0 is past" in text
    assert "output size 101x1080" in text
    assert (
        check_clips([clip("a"), clip("b", transition="fade", transition_duration=1.0)], OutputSettings())
        == []
    )


def test_transitions_are_xfade_names_plus_cut() -> None:
    assert {
        "cut",
        "fade",
        "dissolve",
        "fadeblack",
        "fadewhite",
        "wipeleft",
        "wiperight",
        "wipeup",
        "wipedown",
        "slideleft",
        "slideright",
        "circleopen",
        "circleclose",
        "smoothleft",
    } <= TRANSITIONS
    assert "custom" not in TRANSITIONS
    assert len(TRANSITIONS) == 59


def test_contain_pads_and_cover_crops() -> None:
    tall = CutClip("t", Path("t.mp4"), info(2.0, w=180, h=320))
    contain = build_graph([tall], OutputSettings(320, 180, 24, "contain"), None).filter_complex
    assert "scale=102:180:flags=bicubic+accurate_rnd+bitexact,pad=320:180:108:0" in contain
    cover = build_graph([tall], OutputSettings(320, 180, 24, "cover"), None).filter_complex
    assert "scale=320:568:flags=bicubic+accurate_rnd+bitexact,crop=320:180:0:194" in cover


def test_silent_clip_gets_exact_anullsrc() -> None:
    quiet = CutClip("q", Path("q.mp4"), info(1.0, audio=False))
    graph = build_graph([quiet], OutputSettings(), None).filter_complex
    assert "anullsrc=r=48000:cl=stereo" in graph
    assert "atrim=end_sample=48000[a0]" in graph
    assert "-shortest" not in graph


def test_music_duck_and_normalize_graph() -> None:
    clips = [clip("a", 2.0), clip("b", 2.0)]
    audio = AudioSettings(music=Path("bed.m4a"), music_volume=0.25, duck=True, normalize=True)
    measured = {
        "input_i": "-30.1",
        "input_tp": "-10.0",
        "input_lra": "2.0",
        "input_thresh": "-40.3",
        "target_offset": "0.2",
    }
    graph = build_graph(clips, OutputSettings(), audio, music_input=2, loudnorm=loudnorm_filter(measured))
    g = graph.filter_complex
    assert "[2:a:0]aresample=48000" in g and "atrim=end_sample=192000" in g and "volume=0.25" in g
    assert "afade=t=out:st=2.666666667:d=1.333333333" in g
    # Both inputs of the compressor are open-ended and its output cut to length: an end of stream
    # on either side would drop a thread-timing-dependent tail (non-reproducible bytes).
    assert "[music]apad[music_open]" in g and "[duckkey]apad[duckkey_open]" in g
    assert "[music_open][duckkey_open]sidechaincompress=" in g
    assert "release=400,atrim=end_sample=192000[ducked]" in g
    assert "amix=inputs=2:duration=first:dropout_transition=0:normalize=0" in g
    assert "measured_I=-30.1" in g and "linear=true" in g
    assert g.endswith("apad=whole_len=192000,atrim=end_sample=192000[aout]")


def test_graph_for_200_clips_is_cheap() -> None:
    clips = [
        clip(f"s{i}", 3.0, transition="fade" if i % 2 else "cut", transition_duration=0.5) for i in range(200)
    ]
    start = time.perf_counter()
    graph = build_graph(clips, OutputSettings(), AudioSettings(music=Path("m.mp3")), music_input=200)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5
    assert graph.filter_complex.count("xfade=") == 100
    assert graph.timeline.total_frames == 200 * 72 - 100 * 12
    assert len(graph.filter_complex) < 200_000


@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_audio_samples_equal_video_time(fps: int) -> None:
    clips = [
        clip("a", 1.37),
        clip("b", 2.11, transition="dissolve", transition_duration=0.33),
        clip("c", 0.9),
    ]
    tl = plan_timeline(clips, fps)
    assert Fraction(tl.total_samples, SAMPLE_RATE) == Fraction(tl.total_frames, fps)


def test_transition_frames_are_cumulative_too() -> None:
    # 0.3 s at 24 fps is 7.2 frames: rounding each of 50 fades alone would lose 10 frames
    clips = [clip("s0", 2.0)] + [
        clip(f"s{i}", 2.0, transition="fade", transition_duration=0.3) for i in range(1, 51)
    ]
    tl = plan_timeline(clips, 24)
    assert sum(tl.xfade) == 360  # 50 * 0.3 s = 15 s
    assert set(tl.xfade[1:]) == {7, 8}
    assert tl.total_frames == 51 * 48 - 360


def test_clips_already_at_the_output_size_are_not_scaled() -> None:
    out = OutputSettings(1920, 1080, 24)
    same = CutClip("a", Path("/clips/a.mp4"), info(w=1920, h=1080))
    other = CutClip("b", Path("/clips/b.mp4"), info(w=1280, h=720), transition="fade", transition_duration=0.5)
    chains = [c.strip() for c in build_graph([same, other], out, None).filter_complex.split(";")]
    v0 = next(c for c in chains if c.startswith("[0:v:0]"))
    v1 = next(c for c in chains if c.startswith("[1:v:0]"))
    assert "scale=" not in v0 and ",pad=" not in v0 and "setsar=1,format=yuv420p[v0]" in v0
    assert "scale=1920:1080" in v1 and ",pad=1920:1080" in v1
