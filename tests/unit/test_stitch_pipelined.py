"""The pipelined stitch (issue 20 item 4) in-process: segments made as the clips appear, under the
run's CPU slots, in the segment store under the keys the final stitch computes; a stitch afterwards
encodes only the rest and makes the same bytes as a forced stitch. Real ffmpeg on tiny clips."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_wavespeed import FakeWaveSpeed, _corrupt, clip_bytes
from mediagen import make_clip

import kling_render.stitch.pipelined as pipelined_module
from kling_render.errors import CorruptClipError
from kling_render.media.check import check_structure
from kling_render.stitch import CutClip, OutputSettings, PendingClip, SegmentStore, steps, stitch
from kling_render.stitch.pipelined import CutInputs, SegmentPipeline, may_stream_copy
from kling_render.store.cache import ClipCache, ClipMeta

OUT = OutputSettings(width=160, height=90, fps=24)


def cached(cache: ClipCache, key: str, path: Path, shot_id: str, *, fade: bool = False) -> CutClip:
    """The clip at ``path`` put in ``cache`` (as a download is: checked, memoized), as a CutClip."""
    cache.prepare()
    with cache.temp_file() as tmp:
        tmp.write_bytes(path.read_bytes())
        checked = check_structure(tmp)
        entry = cache.put("fake", key, tmp, ClipMeta(checked.duration, "m"), checked=checked)
    return CutClip(shot_id, entry.path, checked.info, transition="fade" if fade else "cut",
                   transition_duration=0.25 if fade else 0.0, sha256=entry.sha256)  # fmt: skip


def pending(clip: CutClip) -> PendingClip:
    return PendingClip(clip.shot_id, clip.info.duration, clip.trim_start, clip.trim_end, clip.transition,
                       clip.transition_duration)  # fmt: skip


@pytest.fixture
def four(tmp_path: Path) -> tuple[ClipCache, list[CutClip]]:
    """Four clips; the 2nd and the 4th fade in from the one before (so segments 1 and 3 wait for them)."""
    cache = ClipCache(tmp_path / "cache")
    clips = []
    for i in range(4):
        path = make_clip(tmp_path / f"c{i}.mp4", duration=1.0, tone=300 + 60 * i,
                         pattern="testsrc2" if i % 2 else "testsrc")  # fmt: skip
        clips.append(cached(cache, f"{i}{i}" * 32, path, f"s{i}", fade=i in (1, 3)))
    return cache, clips


class Arrivals:
    """The cut as the clips land: every shot pending until :meth:`land` puts its clip in."""

    def __init__(self, clips: list[CutClip], output: OutputSettings = OUT) -> None:
        self.clips = clips
        self.now: list[CutClip | PendingClip] = [pending(c) for c in clips]
        self.output = output

    def __call__(self) -> CutInputs:
        return CutInputs(tuple(self.now), self.output, None)

    def land(self, i: int, pipe: SegmentPipeline) -> None:
        self.now[i] = self.clips[i]
        pipe.clip_ended()


def made(pipe: SegmentPipeline, how: str = "encoded") -> list[str]:
    return [n.shot_id for n in pipe.notices if n.how == how]


def run_pipeline(body: Callable[[SegmentPipeline], object], inputs: Callable[[], CutInputs], store: SegmentStore,
                 *, slots: int = 2, decode: bool = True,
                 claim: Callable[[str], bool] | None = None) -> SegmentPipeline:  # fmt: skip
    async def main() -> SegmentPipeline:
        pipe = SegmentPipeline(inputs, store, asyncio.Semaphore(slots), workers=slots, decode=decode, claim=claim)
        step = body(pipe)
        if asyncio.iscoroutine(step):
            await step
        await pipe.finish()
        return pipe

    return asyncio.run(main())


def test_each_segment_is_made_once_its_clips_exist_and_the_stitch_encodes_only_the_rest(
    four: tuple[ClipCache, list[CutClip]], tmp_path: Path
) -> None:
    cache, clips = four
    store = SegmentStore(cache)
    arrivals = Arrivals(clips)
    seen: list[list[str]] = []

    async def body(pipe: SegmentPipeline) -> None:
        for i in range(3):  # the last clip never lands during the run
            arrivals.land(i, pipe)
            await pipe.settled()
            seen.append(sorted(made(pipe)))

    pipe = run_pipeline(body, arrivals, store)
    # s0 fades into s1: it waits for s1's clip; s1 cuts to s2: its own clip is enough; s2 fades into s3
    assert seen == [[], ["s0", "s1"], ["s0", "s1"]]
    final = steps.plan(clips, OUT, None)
    assert {n.key for n in pipe.notices} == {final.segments[0].key, final.segments[1].key}
    assert all(store.use(str(final.segments[i].key)) is not None for i in (0, 1))
    summary = pipe.summary()
    assert (summary.encoded, summary.failed, summary.left) == (2, 0, 0)

    cut = stitch(clips, OUT, None, tmp_path / "cut.mp4", segments=store, workers=1)
    assert cut.encoded_segments == 2 and len(cut.segments) == 4  # s2 and s3: the clips that came last
    forced = stitch(clips, OUT, None, tmp_path / "forced.mp4", segments=store, workers=1, force=True)
    assert forced.encoded_segments == 4
    assert cut.sha256 == forced.sha256  # pipelined or not: the same bytes


def test_a_shard_encodes_only_the_segments_it_claims(four: tuple[ClipCache, list[CutClip]]) -> None:
    """Shards running at once split the segments by claim: one another shard holds is neither
    encoded nor pulled here (the claim is asked right before the encode, once per segment)."""
    cache, clips = four
    store = SegmentStore(cache)
    final = steps.plan(clips, OUT, None)
    theirs = {str(final.segments[1].key)}
    asked: list[str] = []

    def claim(key: str) -> bool:
        asked.append(key)
        return key not in theirs

    arrivals = Arrivals(clips)

    async def body(pipe: SegmentPipeline) -> None:
        for i in range(4):
            arrivals.land(i, pipe)
            await pipe.settled()

    pipe = run_pipeline(body, arrivals, store, claim=claim)
    assert sorted(made(pipe)) == ["s0", "s2", "s3"] and made(pipe, "claimed") == ["s1"]
    assert store.use(str(final.segments[1].key)) is None
    assert sorted(asked) == sorted(str(s.key) for s in final.segments)  # each asked once


def test_a_failed_encode_is_left_to_the_stitch(
    four: tuple[ClipCache, list[CutClip]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, clips = four
    store = SegmentStore(cache)
    arrivals = Arrivals(clips)
    real = pipelined_module.encode_segment
    calls: list[str] = []

    def flaky(*args: object, **kw: object) -> steps.StepResult:
        calls.append("x")
        if len(calls) == 1:
            raise OSError("No space left on device")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pipelined_module, "encode_segment", flaky)

    async def body(pipe: SegmentPipeline) -> None:
        for i in range(4):
            arrivals.land(i, pipe)
            await pipe.settled()

    pipe = run_pipeline(body, arrivals, store, slots=1)
    failed = [n for n in pipe.notices if n.how == "failed"]
    assert len(failed) == 1 and failed[0].error == "No space left on device"
    assert pipe.summary().encoded == 3
    cut = stitch(clips, OUT, None, tmp_path / "cut.mp4", segments=store, workers=1)
    assert cut.encoded_segments == 1  # the one that failed, and only it
    assert cut.sha256 == stitch(clips, OUT, None, tmp_path / "f.mp4", segments=store, force=True).sha256


def test_a_clip_that_does_not_decode_is_left_for_the_stitch_to_judge(tmp_path: Path) -> None:
    """The pipelined encode neither blames nor quarantines: the stitch does, exactly as without it."""
    cache = ClipCache(tmp_path / "cache")
    good = tmp_path / "good.mp4"
    good.write_bytes(clip_bytes(2, "16:9", False, "tiny"))
    rotten = tmp_path / "rotten.mp4"
    rotten.write_bytes(_corrupt(clip_bytes(3, "16:9", False, "tiny"), 0))  # its head: both segments read it
    clips = [cached(cache, "aa" * 32, good, "a"), cached(cache, "bb" * 32, rotten, "b", fade=True)]
    out = OutputSettings(192, 108, 24)
    store = SegmentStore(cache)
    arrivals = Arrivals(clips, out)

    async def body(pipe: SegmentPipeline) -> None:
        arrivals.land(0, pipe)
        arrivals.land(1, pipe)
        await pipe.settled()

    pipe = run_pipeline(body, arrivals, store)
    assert sorted(n.how for n in pipe.notices) == ["failed", "failed"]  # both segments read b's clip
    assert cache.get("fake", "bb" * 32) is not None and cache.quarantined == []
    assert cache.probes.corrupt(str(clips[1].sha256)) is None
    with pytest.raises(CorruptClipError) as err:
        stitch(clips, out, None, tmp_path / "cut.mp4", segments=store, workers=1)
    assert err.value.shot_id == "b" and cache.get("fake", "bb" * 32) is None  # quarantined by the stitch


def test_a_cut_that_may_be_a_stream_copy_has_its_clips_decoded_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No segments to make: each clip's one decode is done as it lands; the stitch then only joins."""
    cache = ClipCache(tmp_path / "cache")
    paths = [tmp_path / f"{n}.mp4" for n in "ab"]
    for n, path in enumerate(paths):
        path.write_bytes(clip_bytes(2 + n, "16:9", False, "tiny"))
    clips = [cached(cache, f"{n}{n}" * 32, path, f"s{n}") for n, path in enumerate(paths)]
    out = OutputSettings(192, 108, 24)
    assert may_stream_copy(Arrivals(clips, out)())
    store = SegmentStore(cache)

    def landing(arrivals: Arrivals) -> Callable[[SegmentPipeline], object]:
        async def body(pipe: SegmentPipeline) -> None:
            for i in range(2):
                arrivals.land(i, pipe)
                await pipe.settled()

        return body

    shard_arrivals = Arrivals(clips, out)
    shard = run_pipeline(landing(shard_arrivals), shard_arrivals, store, decode=False)  # a shard makes no cut
    assert shard.notices == [] and not any(cache.probes.decodes(str(c.sha256)) for c in clips)
    arrivals = Arrivals(clips, out)
    pipe = run_pipeline(landing(arrivals), arrivals, store)
    assert made(pipe, "decoded") == ["s0", "s1"]
    assert all(cache.probes.decodes(str(c.sha256)) for c in clips)
    decoded: list[Path] = []
    monkeypatch.setattr(steps, "check_clip", lambda path, **kw: decoded.append(path))
    cut = stitch(clips, out, None, tmp_path / "cut.mp4", segments=store)
    assert cut.stream_copy and decoded == []


def test_a_pending_shot_with_a_transition_or_a_trim_means_segments(four: tuple[ClipCache, list[CutClip]]) -> None:
    _, clips = four
    plain = [CutClip(c.shot_id, c.path, c.info, sha256=c.sha256) for c in clips]
    waiting = [plain[0], PendingClip("s1", 1.0)]
    assert may_stream_copy(CutInputs(tuple(waiting), OUT, None))
    assert not may_stream_copy(CutInputs((plain[0], PendingClip("s1", 1.0, trim_end=0.5)), OUT, None))
    assert not may_stream_copy(CutInputs((plain[0], PendingClip("s1", 1.0, transition="fade",
                                                                   transition_duration=0.25)), OUT, None))  # fmt: skip
    assert not may_stream_copy(CutInputs((plain[0], plain[1]), OutputSettings(320, 180, 24), None))


def test_finish_leaves_what_is_queued_to_the_stitch_and_abort_starts_nothing(
    four: tuple[ClipCache, list[CutClip]],
) -> None:
    cache, clips = four
    store = SegmentStore(cache)
    arrivals = Arrivals(clips)

    async def main() -> tuple[SegmentPipeline, SegmentPipeline]:
        slots = asyncio.Semaphore(1)
        async with slots:  # every CPU slot taken (a frame extraction, say): nothing can start
            pipe = SegmentPipeline(arrivals, store, slots, workers=1)
            for i in range(4):
                arrivals.land(i, pipe)
            summary = await asyncio.wait_for(pipe.finish(), 30)
        aborted = SegmentPipeline(arrivals, store, asyncio.Semaphore(1), workers=1)
        aborted.clip_ended()
        await aborted.abort()
        assert summary.left == 4 and summary.encoded == 0
        return pipe, aborted

    pipe, aborted = asyncio.run(main())
    assert pipe.notices == [] and {n.how for n in aborted.notices} <= {"stopped"}
    assert all(store.entry(str(s.key)) is None for s in steps.plan(clips, OUT, None).parts)


@pytest.mark.stand_in(variants=4)  # a distinct clip per shot: four distinct segments
def test_a_render_whose_encodes_ahead_all_fail_pays_each_shot_once_and_makes_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_wavespeed: FakeWaveSpeed
) -> None:
    """The render in-process against the WaveSpeed stand-in: every segment encode run ahead fails
    (a full disk, say); the run pays one task per shot, its report spends exactly that, and the
    stitch after it encodes every segment itself."""
    import io
    import json
    import shutil

    from e2e_cli import EXAMPLE

    from kling_render.app import commands, pipeline

    def broken(*_args: object, **_kw: object) -> steps.StepResult:
        raise OSError("No space left on device")

    monkeypatch.setattr(pipelined_module, "encode_segment", broken)
    root = tmp_path / "p"
    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    shots = "".join(
        f'  - {{id: s{i}, prompt: "shot s{i}: a mug, take {i}"'
        + (", transition: {type: fade, duration: 0.25}" if i % 2 else "")
        + "}\n"
        for i in range(4)
    )
    (root / "project.yaml").write_text(
        "version: 1\nname: ahead\nprovider: wavespeed\n"
        "defaults: {model: kling-v3.0-std/image-to-video, image: images/mug.png, duration: 3, sound: false}\n"
        f"shots:\n{shots}output: {{path: renders/final.mp4, width: 192, height: 108, fps: 24}}\n"
    )
    server = fake_wavespeed
    monkeypatch.setenv("WAVESPEED_BASE_URL", server.base_url)
    monkeypatch.setenv("WAVESPEED_API_KEY", server.api_key)
    monkeypatch.setenv("KLING_RENDER_CACHE", str(tmp_path / "cache"))
    out = io.StringIO()
    project = commands.load(root / "project.yaml", ())
    options = pipeline.RenderOptions(concurrency=1, poll_interval=0.05, json_events=True)
    result = pipeline.render(project, options, stream=out)
    paid = sorted(str(r.body["prompt"]).split(":")[0] for r in server.submits())
    assert result.exit_code == 0 and result.final_cut is not None and result.final_cut.is_file()
    assert paid == [f"shot s{i}" for i in range(4)]  # one task per shot, none more
    assert result.report["spent_usd"] == pytest.approx(4 * 0.252)
    found = [json.loads(line) for line in out.getvalue().splitlines()[1:]]
    ahead = [e for e in found if e["event"] == "segment"]
    assert ahead and {e["how"] for e in ahead} == {"failed"}
    stitched = next(e for e in found if e["event"] == "stitched")
    assert (stitched["segments"], stitched["segments_encoded"]) == (4, 4)
