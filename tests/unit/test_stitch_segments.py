"""Issue 16, items 1 and 2: the cut encoded as segments and joined by stream copy, segments kept
and reused by their inputs. Real ffmpeg on tiny clips made at test time.

The reference is the single-graph cut the engine made before (every clip one input of one
``filter_complex``, built by ``build_graph``), run here by :func:`single_graph_cut`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import EXAMPLE, Workspace, base_env
from hypothesis import given, settings
from hypothesis import strategies as st
from mediagen import make_audio, make_clip

from kling_render.errors import FFmpegError
from kling_render.fsutil import sha256_file
from kling_render.media import ffmpeg
from kling_render.media.mp4 import avc_config
from kling_render.media.probe import MediaInfo
from kling_render.stitch import AudioSettings, CutClip, OutputSettings, SegmentStore, probe, stitch
from kling_render.stitch.cut import AUDIO_CODEC, BITEXACT, VIDEO_CODEC, _measure_loudness, chapters_text
from kling_render.stitch.graph import build_graph, loudnorm_filter, plan_timeline
from kling_render.stitch.segments import plan_segments
from kling_render.store import segments as segstore_module
from kling_render.store.cache import ClipCache
from kling_render.store.segments import AREA, segment_key

OUT = OutputSettings(width=160, height=90, fps=24)


# -- helpers ------------------------------------------------------------------------------------------


def single_graph_cut(clips: list[CutClip], out: OutputSettings, audio: AudioSettings | None, dest: Path) -> Path:
    """The cut as one ffmpeg graph of every clip: what the engine did before segments."""
    loudnorm = None
    if audio is not None and audio.normalize:
        measured = _measure_loudness(clips, out, audio, dest.parent)
        loudnorm = loudnorm_filter(measured) if measured is not None else None
    music = audio.music if audio is not None else None
    graph = build_graph(clips, out, audio, music_input=len(clips) if music else None, loudnorm=loudnorm)
    meta = dest.with_suffix(".chapters.txt")
    meta.write_text(chapters_text(graph.timeline.chapters([c.shot_id for c in clips]), Fraction(1, out.fps)))
    inputs = [arg for c in clips for arg in ("-i", f"file:{c.path}")]
    if music:
        inputs += ["-stream_loop", "-1", "-i", f"file:{music}"]
    meta_input = str(len(clips) + (1 if music else 0))
    ffmpeg.run(
        ["-y", *inputs, "-f", "ffmetadata", "-i", f"file:{meta}", "-filter_complex", graph.filter_complex,
         "-map", "[vout]", "-map", "[aout]", "-map_chapters", meta_input, "-map_metadata", meta_input,
         *VIDEO_CODEC, *AUDIO_CODEC, *BITEXACT, "-f", "mp4", f"file:{dest}"],
        "the single-graph cut",
    )  # fmt: skip
    return dest


def framemd5(path: Path, stream: str, *, copy: bool) -> list[list[str]]:
    """framemd5 rows (stream, dts, pts, duration, size, md5) of one stream, decoded with -xerror
    (any corrupt packet fails it) or copied."""
    args = ["-xerror", "-i", f"file:{path}", "-map", stream, *(["-c", "copy"] if copy else []), "-f", "framemd5", "-"]
    exe = ffmpeg.ffmpeg_exe()
    import subprocess

    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [[f.strip() for f in line.split(",")] for line in proc.stdout.splitlines() if not line.startswith("#")]


def video_timing(path: Path) -> list[tuple[str, str, str]]:
    """(dts, pts, duration) of every decoded frame."""
    return [(r[1], r[2], r[3]) for r in framemd5(path, "0:v:0", copy=False)]


def raw_frames(path: Path, out: OutputSettings) -> list[bytes]:
    import subprocess

    exe = ffmpeg.ffmpeg_exe()
    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", f"file:{path}", "-map", "0:v:0",
           "-pix_fmt", "yuv420p", "-f", "rawvideo", "-"]  # fmt: skip
    data = subprocess.run(cmd, capture_output=True, check=True).stdout
    size = out.width * out.height * 3 // 2
    return [data[i : i + size] for i in range(0, len(data), size)]


def psnr(a: bytes, b: bytes) -> float:
    mse = sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / len(a)
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def keyframes(path: Path) -> list[int]:
    stderr = ffmpeg.run(["-loglevel", "info", "-i", f"file:{path}", "-map", "0:v:0", "-vf", "showinfo",
                         "-f", "null", "-"], "showinfo")  # fmt: skip
    return [int(m.group(1)) for m in re.finditer(r"\bn:\s*(\d+)\b.*?\biskey:1", stderr)]


def chapters(path: Path) -> list[tuple[str, str, str]]:
    stderr = ffmpeg.run(["-loglevel", "info", "-i", f"file:{path}", "-f", "null", "-t", "0", "-"], "chapters")
    stderr = stderr.split("Output #0", 1)[0]
    found = re.findall(r"Chapter #\d+:\d+: start (\d+\.\d+), end (\d+\.\d+)\s+Metadata:\s+title\s+: (\S+)", stderr)
    return [(title, s, e) for s, e, title in found]


class EncodeCounter:
    """Counts the x264 encodes ffmpeg runs (the segments actually encoded) while passing them on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.graphs: list[str] = []
        real = ffmpeg.run

        def counting(args: list[str], step: str, **kw: object) -> str:
            if "libx264" in args:
                self.graphs.append(args[args.index("-filter_complex") + 1])
            return real(args, step, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(ffmpeg, "run", counting)

    def take(self) -> int:
        count, self.graphs = len(self.graphs), []
        return count


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "a24": make_clip(d / "a24.mp4", width=320, height=180, fps=24, duration=1.5, tone=440),
        "b25": make_clip(d / "b25.mp4", width=160, height=120, fps=25, duration=1.2, audio=False),
        "c30": make_clip(d / "c30.mp4", width=180, height=320, fps=30, duration=2.0, tone=660, channels=2),
        "d24": make_clip(d / "d24.mp4", width=160, height=90, fps=24, duration=1.0, sample_rate=48000),
        # smptebars is tagged bt470bg: a segment of it must still get the same SPS as the others
        "e24": make_clip(d / "e24.mp4", width=160, height=90, fps=24, duration=1.25, tone=550, pattern="smptebars"),
        "music": make_audio(d / "bed.m4a", duration=1.7, tone=220, volume_db=-20),
    }  # fmt: skip


def cut(media: dict[str, Path], key: str, shot: str, **kw: object) -> CutClip:
    path = media[key]
    return CutClip(shot, path, probe(path), **kw)  # type: ignore[arg-type]


def mixed(media: dict[str, Path]) -> list[CutClip]:
    """Other sizes, rates and aspect ratios, trims, a silent clip, a plain cut and three transitions."""
    return [
        cut(media, "a24", "intro", trim_start=0.2),
        cut(media, "b25", "pour", transition="fade", transition_duration=0.4),
        cut(media, "c30", "hero", trim_start=0.1, trim_end=1.7, transition="wipeleft", transition_duration=0.3),
        cut(media, "d24", "cut-in"),
        cut(media, "e24", "outro", trim_end=1.0, transition="dissolve", transition_duration=0.25),
    ]


# -- item 1: the segmented cut is the single-graph cut ------------------------------------------------


@pytest.mark.parametrize("with_music", [False, True], ids=["clip-sound", "music-ducked-normalised"])
def test_segmented_cut_matches_the_single_graph(media: dict[str, Path], tmp_path: Path, with_music: bool) -> None:
    clips = mixed(media)
    audio = AudioSettings(music=media["music"], music_volume=0.5, duck=True, normalize=True) if with_music else None
    new = stitch(clips, OUT, audio, tmp_path / "segmented.mp4")
    old = single_graph_cut(clips, OUT, audio, tmp_path / "single.mp4")
    timeline = plan_timeline(clips, OUT.fps)
    assert new.frames == timeline.total_frames == 123
    # the same frames at the same times: decoded end to end with -xerror, one row per frame
    timing = video_timing(new.path)
    assert timing == video_timing(old)
    assert len(timing) == 123 and [int(pts) for _, pts, _ in timing] == list(range(123))
    # the same chapters, at the transitions' starts
    assert chapters(new.path) == chapters(old)
    assert [c[0] for c in chapters(new.path)] == ["intro", "pour", "hero", "cut-in", "outro"]
    # the same audio, packet for packet: mixed and encoded once for the whole cut
    assert framemd5(new.path, "0:a:0", copy=True) == framemd5(old, "0:a:0", copy=True)
    # the pictures at each position are those of the single graph (encoded apart, so not bit for
    # bit); one frame off would not be: the clips' patterns move every frame
    ours, theirs = raw_frames(new.path, OUT), raw_frames(old, OUT)
    same = [psnr(a, b) for a, b in zip(ours, theirs, strict=True)]
    shifted = [psnr(a, b) for a, b in zip(ours[1:], theirs, strict=False)]
    assert min(same) > 32, min(same)
    assert min(shifted) < 20 < min(same)


def test_segments_start_with_an_idr_frame_and_share_one_sps(media: dict[str, Path], tmp_path: Path) -> None:
    store = SegmentStore(ClipCache(tmp_path / "cache"))
    result = stitch(mixed(media), OUT, None, tmp_path / "cut.mp4", segments=store)
    _, segments = plan_segments(mixed(media), OUT)
    starts = [s.first_frame for s in segments if s.frames]
    assert keyframes(result.path)[: len(starts)] == starts and len(starts) == 5
    files = [store.cache.clip_path(AREA, key) for key in result.segments]
    configs = {avc_config(f) for f in files}
    assert len(files) == 5 and len(configs) == 1 and None not in configs
    assert avc_config(result.path) in configs


def test_restitch_is_byte_identical_whatever_the_parallelism(media: dict[str, Path], tmp_path: Path) -> None:
    clips = mixed(media)
    audio = AudioSettings(music=media["music"], duck=True)
    digests = set()
    for n, workers in enumerate([1, 3, 8]):
        result = stitch(clips, OUT, audio, tmp_path / f"w{workers}.mp4", workers=workers)
        assert result.encoded_segments == 5
        digests.add(sha256_file(result.path))
        if n == 0:  # segments from a store filled in another order give the same cut too
            store = SegmentStore(ClipCache(tmp_path / "cache"))
            for clip_order in (clips[3:], clips):
                stitch(clip_order, OUT, audio, tmp_path / "filled.mp4", segments=store, workers=2)
            again = stitch(clips, OUT, audio, tmp_path / "reused.mp4", segments=store)
            assert again.encoded_segments == 0
            digests.add(sha256_file(again.path))
    assert len(digests) == 1


# -- item 2: incremental segments ------------------------------------------------------------------


@pytest.fixture
def four(media: dict[str, Path]) -> list[CutClip]:
    # every kept length a whole number of frames, so an edit moves no later frame boundary
    return [
        cut(media, "a24", "s1", trim_end=1.5),
        cut(media, "c30", "s2", trim_end=1.5, transition="fade", transition_duration=0.25),
        cut(media, "a24", "s3", trim_start=0.25, trim_end=1.5, transition="fade", transition_duration=0.25),
        cut(media, "e24", "s4", trim_end=1.25, transition="wipeleft", transition_duration=0.25),
    ]


@pytest.mark.parametrize(
    ("shot", "edit", "touched"),
    [
        (2, {"trim_end": 1.25}, [2]),  # its own segment (frames and outgoing blend); nothing after moves
        (2, {"trim_start": 0.5}, [1, 2]),  # also the previous one, which blends into its first frames
        (3, {"transition": "dissolve"}, [2]),  # the blend lives in the segment it leaves
        (3, {"transition_duration": 0.5}, [2, 3]),  # the next one starts later in its clip
        (0, {}, []),  # nothing changed: nothing encoded, the same bytes
    ],
)
def test_an_edit_re_encodes_only_the_segments_it_touches(
    four: list[CutClip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shot: int, edit: dict[str, object],
    touched: list[int],
) -> None:  # fmt: skip
    store = SegmentStore(ClipCache(tmp_path / "cache"))
    encodes = EncodeCounter(monkeypatch)
    first = stitch(four, OUT, None, tmp_path / "first.mp4", segments=store)
    assert encodes.take() == first.encoded_segments == 4
    edited = list(four)
    edited[shot - 1] = replace(four[shot - 1], **edit)  # type: ignore[arg-type]
    second = stitch(edited, OUT, None, tmp_path / "second.mp4", segments=store)
    _, before = plan_segments(four, OUT)
    _, after = plan_segments(edited, OUT)
    changed = [s.index for s, b in zip(after, before, strict=True) if s.filter_complex != b.filter_complex]
    assert [i + 1 for i in changed] == touched
    assert encodes.take() == second.encoded_segments == len(touched)
    assert [k for k in second.segments if k not in first.segments] == [second.segments[i] for i in changed]
    # the cut is the one a stitch from scratch makes
    fresh = stitch(edited, OUT, None, tmp_path / "fresh.mp4")
    assert sha256_file(fresh.path) == sha256_file(second.path)
    if not touched:
        assert sha256_file(second.path) == sha256_file(first.path)


def test_the_cut_lasts_the_kept_clips_minus_the_transitions_to_the_frame(four: list[CutClip], tmp_path: Path) -> None:
    """Frame-exact: kept 1.5 + 1.5 + 1.25 + 1.25 s, three 0.25 s transitions -> 114 frames at 24 fps.
    The audio is one pass: its packets follow each other with no gap at any segment join, and it
    lasts exactly as long as the video."""
    result = stitch(four, OUT, None, tmp_path / "cut.mp4", segments=SegmentStore(ClipCache(tmp_path / "cache")))
    kept = sum((c.trim_end or c.info.duration) - c.trim_start for c in four)
    overlaps = sum(c.transition_duration for c in four[1:])
    expected = round((kept - overlaps) * OUT.fps)
    assert expected == 114 and result.frames == expected and result.duration == pytest.approx(114 / 24)
    frames = video_timing(result.path)
    assert [int(pts) for _, pts, _ in frames] == list(range(expected))  # one frame per tick, none missing
    media = probe(result.path)
    assert media.duration == pytest.approx(114 / 24, abs=0.03)
    # every chapter starts on the frame its shot starts: 0, then each start minus the transition
    starts = [("s1", 0.0), ("s2", 1.25), ("s3", 2.5), ("s4", 3.5)]
    assert [(t, float(s)) for t, s, _ in chapters(result.path)] == starts
    audio = framemd5(result.path, "0:a:0", copy=True)  # stream, dts, pts, duration, size, md5
    pts = [int(r[2]) for r in audio]
    durations = [int(r[3]) for r in audio]
    assert all(a + d == b for a, d, b in zip(pts, durations, pts[1:], strict=False)), "a gap or overlap in the audio"
    sample_rate = 48000
    audible = (pts[-1] + durations[-1] - max(pts[0], 0)) / sample_rate
    assert audible == pytest.approx(114 / 24, abs=1024 / sample_rate)  # within one AAC frame


def test_an_audio_only_edit_encodes_no_segment(four: list[CutClip], media: dict[str, Path], tmp_path: Path) -> None:
    store = SegmentStore(ClipCache(tmp_path / "cache"))
    stitch(four, OUT, None, tmp_path / "a.mp4", segments=store)
    music = stitch(four, OUT, AudioSettings(music=media["music"]), tmp_path / "b.mp4", segments=store)
    assert music.encoded_segments == 0
    assert framemd5(music.path, "0:v:0", copy=True) == framemd5(tmp_path / "a.mp4", "0:v:0", copy=True)
    assert framemd5(music.path, "0:a:0", copy=True) != framemd5(tmp_path / "a.mp4", "0:a:0", copy=True)


def test_a_damaged_cached_segment_is_quarantined_and_encoded_again(four: list[CutClip], tmp_path: Path) -> None:
    store = SegmentStore(ClipCache(tmp_path / "cache"))
    first = stitch(four, OUT, None, tmp_path / "first.mp4", segments=store)
    victim = store.cache.clip_path(AREA, first.segments[1])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x55  # same size: only the sha256 can tell
    victim.write_bytes(bytes(data))
    again = SegmentStore(ClipCache(tmp_path / "cache"))
    second = stitch(four, OUT, None, tmp_path / "second.mp4", segments=again)
    assert second.encoded_segments == 1
    assert [q.key for q in again.quarantined] == [first.segments[1]]
    moved = again.quarantined[0].moved_to
    assert moved.is_file() and moved.read_bytes() == bytes(data) and moved.parent.name == AREA
    assert sha256_file(second.path) == sha256_file(first.path)
    assert store.cache.verify(AREA, first.segments[1])


def test_a_failing_segment_stops_the_others_and_keeps_what_was_encoded(
    four: list[CutClip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ffmpeg.run
    encodes: list[str] = []

    def second_encode_fails(args: list[str], step: str, **kw: object) -> str:
        if "libx264" in args:
            encodes.append(step)
            if len(encodes) == 2:
                raise FFmpegError(step, "injected failure")
        return real(args, step, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ffmpeg, "run", second_encode_fails)
    store = SegmentStore(ClipCache(tmp_path / "cache"))
    dest = tmp_path / "out" / "cut.mp4"
    with pytest.raises(FFmpegError, match="injected failure") as err:
        stitch(four, OUT, None, dest, segments=store, workers=1)
    assert err.value.step == "stitching segment 2 of 4 (s2)"
    assert len(encodes) == 2  # the jobs after the failure never started
    assert not dest.exists() and not any(dest.parent.iterdir())
    assert list((store.cache.root / "tmp").iterdir()) == []  # no temp segment left behind
    # what finished is kept: one segment, and the audio pass (which runs first)
    assert len(list((store.cache.root / AREA).glob("*/*.mp4"))) == 2
    monkeypatch.setattr(ffmpeg, "run", real)
    again = stitch(four, OUT, None, dest, segments=store)
    assert again.encoded_segments == 3 and not again.audio_encoded


def test_an_interrupted_stitch_leaves_the_previous_cut_and_no_half_written_one(
    four: list[CutClip], tmp_path: Path
) -> None:
    store = SegmentStore(ClipCache(tmp_path / "cache"))
    dest = tmp_path / "out" / "cut.mp4"
    first = stitch(four, OUT, None, dest, segments=store)
    before = sha256_file(dest)
    edited = [*four[:2], replace(four[2], trim_end=1.25), four[3]]
    for step in ("encoding", "joining"):  # Ctrl-C while segments encode, then during the join

        def interrupt(at: str, fraction: float, step: str = step) -> None:
            if at == step and fraction > 0:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            stitch(edited, OUT, None, dest, segments=store, progress=interrupt)
        assert sha256_file(dest) == before == first.sha256
        assert sorted(p.name for p in dest.parent.iterdir()) == ["cut.mp4"]
        assert list((store.cache.root / "tmp").iterdir()) == []
    again = stitch(edited, OUT, None, dest, segments=store)
    assert again.encoded_segments <= 1 and sha256_file(dest) == again.sha256 != before


def test_a_killed_stitch_process_leaves_the_previous_cut(four: list[CutClip], tmp_path: Path) -> None:
    """kill -9 of the stitching process in the middle of the join (its ffmpeg orphaned, still
    writing): the cut is the previous one, and the next stitch removes the dead temp file."""
    import subprocess
    import sys

    store_root = tmp_path / "cache"
    dest = tmp_path / "out" / "cut.mp4"
    stitch(four, OUT, None, dest, segments=SegmentStore(ClipCache(store_root)))
    before = sha256_file(dest)
    script = """
import json, os, signal, sys
from pathlib import Path
from kling_render.store.cache import ClipCache
from kling_render.stitch import CutClip, OutputSettings, SegmentStore, probe, stitch
shots, dest, store = json.loads(sys.argv[1])
clips = [CutClip(sid, Path(p), probe(Path(p)), trim_start=a, trim_end=b, transition=t, transition_duration=d)
         for sid, p, a, b, t, d in shots]
def die(step, fraction):
    if step == "joining":
        os.kill(os.getpid(), signal.SIGKILL)
stitch(clips, OutputSettings(160, 90, 24), None, Path(dest), segments=SegmentStore(ClipCache(Path(store))),
       progress=die)
"""
    edited = [*four[:2], replace(four[2], trim_end=1.25), four[3]]
    shots = [(c.shot_id, str(c.path), c.trim_start, c.trim_end, c.transition, c.transition_duration) for c in edited]
    arg = json.dumps([shots, str(dest), str(store_root)])
    proc = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert sha256_file(dest) == before
    temps = [p for p in dest.parent.iterdir() if p.name != "cut.mp4"]
    assert all(p.name.startswith(".cut.mp4.") and p.name.endswith(".tmp") for p in temps)
    store = SegmentStore(ClipCache(store_root))
    again = stitch(edited, OUT, None, dest, segments=store)
    assert again.encoded_segments == 0  # the killed stitch had stored its segment whole
    assert sorted(p.name for p in dest.parent.iterdir()) == ["cut.mp4"]
    assert sha256_file(dest) == again.sha256 != before


# -- the timeline the segments rely on ----------------------------------------------------------------


def info(duration: float) -> MediaInfo:
    return MediaInfo(duration, 160, 90, Fraction(24), "h264", "yuv420p", "1:1", True, "aac", 48000, 2)


def test_a_frame_never_blends_three_clips() -> None:
    # "c" keeps 0.14 s (3 frames) and both its transitions are half of it. Rounded cumulatively on
    # their own they come to 2 + 2 frames: one frame of "c" would blend into "b" and "d" at once.
    # The second is a frame shorter, and the next transition gets the frame back (the rounding
    # stays cumulative: the cut's length does not drift).
    kept = [1.0, 1.0, 0.14, 1.0, 1.0]
    into = [0.0, 0.02, 0.07, 0.07, 0.5]
    clips = [
        CutClip(f"s{i}", Path(f"s{i}"), info(k), transition="fade" if d else "cut", transition_duration=d)
        for i, (k, d) in enumerate(zip(kept, into, strict=True))
    ]
    tl = plan_timeline(clips, 24)
    assert tl.frames == (24, 24, 3, 24, 24)
    assert tl.xfade == (0, 0, 2, 1, 13)
    assert sum(tl.xfade) == round(sum(into) * 24)
    assert tl.total_frames == sum(tl.frames) - sum(tl.xfade)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.05, 4.0),  # kept seconds
            st.floats(0.0, 0.5),  # transition, as a fraction of the shorter neighbour
            st.booleans(),  # a transition at all
        ),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([12, 24, 25, 30]),
)
def test_segments_tile_the_timeline(spec: list[tuple[float, float, bool]], fps: int) -> None:
    clips: list[CutClip] = []
    for i, (kept, share, on) in enumerate(spec):
        duration = 0.0
        if i and on:
            duration = share * min(kept, spec[i - 1][0])
        clips.append(CutClip(f"s{i}", Path(f"s{i}"), info(kept), transition="fade" if duration else "cut",
                             transition_duration=duration))  # fmt: skip
    tl, segments = plan_segments(clips, OutputSettings(160, 90, fps))
    at = 0
    for i, segment in enumerate(segments):
        assert segment.first_frame == at and segment.frames >= 0
        assert tl.xfade[i] + (tl.xfade[i + 1] if i + 1 < len(clips) else 0) <= tl.frames[i]
        at += segment.frames
    assert at == tl.total_frames
    assert [c[1] for c in tl.chapters([c.shot_id for c in clips])] == list(tl.starts)


def test_a_segment_key_names_no_path_or_position(four: list[CutClip], media: dict[str, Path], tmp_path: Path) -> None:
    # the same two clips at another place in another cut, from another folder: the same segment
    moved = tmp_path / "elsewhere.mp4"
    shutil.copyfile(media["a24"], moved)
    _, here = plan_segments(four, OUT)
    _, there = plan_segments([cut(media, "d24", "x"), replace(four[2], path=moved, shot_id="y"), four[3]], OUT)
    assert here[2].filter_complex == there[1].filter_complex
    identity = {"graph": here[2].filter_complex, "inputs": ["a", "b"]}
    assert segment_key(identity) == segment_key(dict(reversed(identity.items())))
    assert str(media["a24"]) not in here[2].filter_complex


# -- the sweep -----------------------------------------------------------------------------------------


@pytest.fixture
def swept(tmp_path: Path) -> Iterator[tuple[SegmentStore, list[str]]]:
    store = SegmentStore(ClipCache(tmp_path / "cache"))
    store.cache.prepare()
    keys = []
    for n in range(6):
        key = segment_key({"n": n})
        with store.temp_file() as tmp:
            tmp.write_bytes(bytes([n]) * 1000)
            store.put(key, tmp, 1.0)
        keys.append(key)
    yield store, keys


def age(store: SegmentStore, key: str, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(store.cache.meta_path(AREA, key), (when, when))


def test_sweep_removes_idle_segments_never_the_current_cuts(swept: tuple[SegmentStore, list[str]]) -> None:
    store, keys = swept
    for key in keys:
        age(store, key, 30 * 86400)
    age(store, keys[5], 60)  # used a minute ago (another stitch may be joining it)
    result = store.sweep(keep=keys[:2])
    assert result.removed == 3
    left = {k for k in keys if store.cache.clip_path(AREA, k).exists()}
    assert left == {keys[0], keys[1], keys[5]}
    assert all(store.use(k) is not None for k in left)
    assert not store.cache.meta_path(AREA, keys[2]).exists() and not store.cache.memo_path(AREA, keys[2]).exists()


def test_sweep_bounds_the_area_least_recently_used_first(
    swept: tuple[SegmentStore, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, keys = swept
    monkeypatch.setattr(segstore_module, "MIN_AREA_BYTES", 0)
    for n, key in enumerate(keys):
        age(store, key, 7200 + 600 * n)  # keys[0] used most recently (2 h ago), keys[5] least
    # the current cut is 1 segment (1000 bytes) and the area may hold twice that: the 4 least
    # recently used of the 5 others go, the most recent survives though it is idle
    result = store.sweep(keep=[keys[0]])
    assert result.removed == 4 and result.kept_bytes == 1000 and result.freed_bytes == 4000
    left = [k for k in keys if store.cache.clip_path(AREA, k).exists()]
    assert left == keys[:2]


@pytest.mark.usefixtures("small_local")  # four small animatics: the segments are the subject
def test_a_trim_edit_re_encodes_one_segment_through_the_cli(tmp_path: Path) -> None:
    """Through the CLI's render command (in this process): a trim edit re-encodes one segment of
    four, the replaced segment is kept (an undo is free) until the sweep's rules drop it, and an
    unchanged cut encodes nothing."""
    root = tmp_path / "p"
    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    # four different clips (the animatic shows the image for the duration): the shortest that differ
    looks = [("mug.png", 3), ("mug-side.png", 3), ("mug-full.png", 3), ("mug.png", 4)]
    shots = "".join(
        f"  - {{id: s{i}, prompt: take {i}, image: images/{image}, duration: {seconds}"
        + (", transition: {type: fade, duration: 0.25}" if i else "")
        + "}\n"
        for i, (image, seconds) in enumerate(looks)
    )
    (root / "project.yaml").write_text(
        "version: 1\nname: seg\nprovider: local\n"
        "defaults: {model: kling-video-o3-std/image-to-video, duration: 3}\n"
        f"shots:\n{shots}output: {{path: renders/final.mp4, width: 160, height: 90, fps: 24}}\n"
    )
    ws = Workspace(root, base_env(KLING_RENDER_CACHE=str(tmp_path / "cache")), in_process=True)

    def stitched(*args: str) -> dict[str, Any]:
        """The ``stitched`` event, its ``segments_encoded`` counting those the render encoded ahead
        (the pipelined stitch's ``segment`` events) too."""
        done = ws.render("--json", *args)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()[1:]]
        ahead = sum(1 for e in lines if e["event"] == "segment" and e["how"] == "encoded")
        event: dict[str, Any] = next(e for e in lines if e["event"] == "stitched")
        return {**event, "segments_encoded": event.get("segments_encoded", 0) + ahead}

    first = stitched()
    assert (first["segments"], first["segments_encoded"]) == (4, 4)
    shot = "{id: s2, prompt: take 2, image: images/mug-full.png, duration: 3"
    ws.edit(shot, shot + ", trim: {end: 2.5}")
    second = stitched()
    assert (second["segments"], second["segments_encoded"]) == (4, 1)
    assert stitched()["up_to_date"] is True  # unchanged: not even joined again
    area = ClipCache(tmp_path / "cache").root / AREA
    # the replaced segment and the first cut's audio pass are still there (young)
    assert len(list(area.glob("*/*.mp4"))) == 5 + 2
    forced = stitched("--force")  # every segment and the audio encoded anew: the same bytes
    assert forced["segments_encoded"] == 4 and forced["audio_encoded"] is True
    assert forced["sha256"] == second["sha256"]
