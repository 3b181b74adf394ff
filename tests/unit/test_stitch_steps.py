"""The stitch as steps (issue 20 items 4 and 6): pure planning with clips still to come, each step run
on its own giving the cut stitch() gives, and an incremental stitch whose work does not grow with
the cut. Real ffmpeg on tiny clips made at test time; the last test drives the app layer."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_cli import EXAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st
from mediagen import make_clip

from kling_render.fsutil import sha256_file
from kling_render.media import ffmpeg
from kling_render.media.probe import MediaInfo
from kling_render.stitch import CutClip, OutputSettings, PendingClip, SegmentStore, probe, steps, stitch
from kling_render.stitch.plan import plan_cut
from kling_render.store.cache import ClipCache

OUT = OutputSettings(width=160, height=90, fps=24)


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> list[CutClip]:
    d = tmp_path_factory.mktemp("five")
    clips = []
    for i in range(5):
        pattern = "testsrc2" if i % 2 else "testsrc"
        path = make_clip(d / f"c{i}.mp4", duration=1.0 + 0.25 * i, tone=300 + 50 * i, pattern=pattern)
        fade = i in (2, 4)
        clips.append(CutClip(f"s{i}", path, probe(path), transition="fade" if fade else "cut",
                             transition_duration=0.25 if fade else 0.0, sha256=sha256_file(path)))  # fmt: skip
    return clips


def pending(clip: CutClip, duration: float | None = None) -> PendingClip:
    return PendingClip(clip.shot_id, clip.info.duration if duration is None else duration, clip.trim_start,
                       clip.trim_end, clip.transition, clip.transition_duration)  # fmt: skip


def test_a_segment_is_keyed_as_soon_as_the_clips_it_reads_exist(five: list[CutClip]) -> None:
    final = steps.plan(five, OUT, None)
    assert final.complete and all(s.ready for s in final.segments)
    early = steps.plan([*five[:2], pending(five[2]), *five[3:]], OUT, None)
    # s1 ends in the fade into s2, s2 is s2's own: both wait for s2's clip; the others are ready
    assert [s.ready for s in early.segments] == [True, False, False, True, True]
    assert not early.complete and early.audio.key is None and early.join.key is None
    # the right guess of s2's length: the ready segments are exactly the final plan's
    assert [s.key for s in early.segments if s.ready] == [final.segments[i].key for i in (0, 3, 4)]
    with pytest.raises(ValueError, match="not ready"):
        steps.encode_segment(early, early.segments[1], SegmentStore(ClipCache(Path(tempfile.mkdtemp()))), Path("."))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(3, 60), st.booleans(), st.integers(0, 3)), min_size=2, max_size=8),
    st.integers(0, 7),
    st.integers(-20, 20),
)
def test_a_wrong_guess_never_keys_a_segment_the_final_plan_reads_differently(
    spec: list[tuple[int, bool, int]], which: int, error: int
) -> None:
    """Durations in odd hundredths (the timeline rounds them cumulatively): a clip still pending is
    planned on a guess that is off by ``error`` hundredths. Whatever the guess, a key both plans
    share names the same segment (graph, inputs, frames): a wrong guess can only waste an encode."""
    infos, clips = [], []
    for i, (hundredths, fade, _) in enumerate(spec):
        info = MediaInfo(hundredths / 100 + 1, 160, 90, None, "h264", "yuv420p", "1:1", False, None, None, None)
        infos.append(info)
        clips.append(CutClip(f"s{i}", Path(f"s{i}.mp4"), info, transition="fade" if fade and i else "cut",
                             transition_duration=0.2 if fade and i else 0.0, sha256=f"{i:064x}"))  # fmt: skip
    which %= len(clips)
    guess = max(0.5, clips[which].info.duration + error / 100)
    kw = {"encoder": ["x"], "audio_codec": ["y"], "ffmpeg_identity": "z"}
    final = plan_cut(clips, OUT, None, **kw)  # type: ignore[arg-type]
    early = plan_cut([*clips[:which], pending(clips[which], guess), *clips[which + 1 :]], OUT, None, **kw)  # type: ignore[arg-type]
    by_key = {s.key: s for s in final.segments if s.key}
    for step in early.segments:
        if step.key in by_key:  # the same bytes: graph, frames, the clips read (its place in the cut may differ)
            same = by_key[step.key]
            assert step.segment is not None and same.segment is not None
            assert (step.segment.filter_complex, step.frames) == (same.segment.filter_complex, same.frames)
            assert [clips[i].sha256 for i in step.reads] == [clips[i].sha256 for i in same.reads]


def test_the_steps_one_by_one_make_the_cut_stitch_makes(five: list[CutClip], tmp_path: Path) -> None:
    reference = stitch(five, OUT, None, tmp_path / "ref.mp4", segments=SegmentStore(ClipCache(tmp_path / "a")))
    store = SegmentStore(ClipCache(tmp_path / "b"))
    work = tmp_path / "work"
    work.mkdir()
    # a scheduler's order: the segments whose clips exist first, the rest when the last clip lands
    early = steps.plan([*five[:4], pending(five[4])], OUT, None)
    made = {s.key: steps.encode_segment(early, s, store, work).path for s in early.parts if s.ready}
    assert len(made) == 3  # s3 ends in the fade into s4: it waits
    cut = steps.plan(five, OUT, None)
    results = [steps.encode_segment(cut, s, store, work) for s in cut.parts]
    assert [r.how for r in results] == ["stored", "stored", "stored", "encoded", "encoded"]
    audio = steps.mix_audio(cut, store, work)
    steps.join(cut, [r.path for r in results], audio.path, tmp_path / "steps.mp4", work)
    assert sha256_file(tmp_path / "steps.mp4") == reference.sha256
    assert [str(s.key) for s in cut.parts] == list(reference.segments) and cut.audio.key == reference.audio


# -- an incremental stitch costs what changed --------------------------------------------------------


def project_text(n: int, trim_end: float | None = None) -> str:
    shots = []
    for i in range(n):
        extra = ", transition: {type: fade, duration: 0.25}" if i else ""
        if i == 1 and trim_end is not None:
            extra += f", trim: {{end: {trim_end}}}"
        shots.append(f"  - {{id: s{i}, prompt: take {i}, image: images/mug.png{extra}}}\n")
    return (
        "version: 1\nname: count\nprovider: local\n"
        "defaults: {model: kling-video-o3-std/image-to-video, duration: 3}\n"
        f"shots:\n{''.join(shots)}output: {{path: renders/final.mp4, width: 160, height: 90, fps: 24}}\n"
    )


def trim_edit_work(root: Path, n: int) -> Counter[str]:
    """Stitch an ``n``-shot project whose clips are cached, edit one trim, stitch again: what the
    second stitch ran (ffmpeg runs by step, x264 encodes, structural checks, clip hashes)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _trim_edit_work(root, n, monkeypatch)


def _trim_edit_work(root: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    import shutil

    from kling_render.app import commands
    from kling_render.app import cut as app_cut
    from kling_render.plan.plan import shot_key
    from kling_render.store import probes as probes_module
    from kling_render.store.cache import ClipMeta

    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(project_text(n))
    monkeypatch.setenv("KLING_RENDER_CACHE", str(root / "cache"))
    project = commands.load(root / "project.yaml", ())
    cache = ClipCache(root / "cache")
    cache.prepare()
    for i, shot in enumerate(project.shots):  # distinct clips, as if a render had made them
        with cache.temp_file() as tmp:
            make_clip(tmp, duration=3.0, tone=200 + 40 * i, width=160, height=90, pattern="testsrc2")
            cache.put("local", shot_key("local", shot), tmp, ClipMeta(3.0, "m"))
    first = app_cut.stitch(project, "local")
    assert first.steps["segments_encoded"] == n
    seen: Counter[str] = Counter()
    real_run, real_check, real_hash = ffmpeg.run, probes_module.check_structure, pipeline_hash()

    def run(args: list[str], step: str, **kw: object) -> str:
        seen["ffmpeg"] += 1
        seen["x264"] += "libx264" in args
        seen[step.split(" ")[0]] += 1
        return real_run(args, step, **kw)  # type: ignore[arg-type]

    def check(path: Path) -> object:
        seen["structural check"] += 1
        return real_check(path)

    monkeypatch.setattr(ffmpeg, "run", run)
    monkeypatch.setattr(probes_module, "check_structure", check)
    def hashed(path: Path) -> str:
        seen["clip hash"] += path.parent.parent.name == "local"  # <cache>/local/<xx>/<key>.mp4
        return real_hash(path)

    monkeypatch.setattr("kling_render.store.cache.sha256_file", hashed)
    (root / "project.yaml").write_text(project_text(n, trim_end=2.5))
    edited = app_cut.stitch(commands.load(root / "project.yaml", ()), "local")
    assert edited.steps["segments_encoded"] == 1 and not edited.up_to_date
    return seen


def pipeline_hash() -> Callable[[Path], str]:
    from kling_render.store import cache as cache_module

    return cache_module.sha256_file


def test_a_trim_edit_runs_the_same_few_steps_whatever_the_cut_length(tmp_path: Path) -> None:
    """Issue 20 item 6: one trim edit of a cut of 3 and of 9 clips runs the same ffmpeg processes:
    one segment encode, the audio pass, the join. No probe, no check, no hash of any clip."""
    small = trim_edit_work(tmp_path / "three", 3)
    large = trim_edit_work(tmp_path / "nine", 9)
    assert small == large, (small, large)
    assert small["x264"] == 1 and small["ffmpeg"] == 3  # the segment, the audio, the join
    assert small["stitching"] == 2 and small["joining"] == 1
    assert small["structural check"] == 0 and small["clip hash"] == 0
