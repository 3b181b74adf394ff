"""The structural clip check (issue 20 item 5): every packet read, none decoded, on real clips
made by ffmpeg; damage it can see fails here, bit rot inside a picture fails the stitch's one
decode, which names the clip, quarantines it and marks its digest."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
from fake_wavespeed import _corrupt, _cut_short, clip_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mediagen import make_audio, make_clip

from kling_render.errors import CorruptClipError, InvalidClipError
from kling_render.fsutil import sha256_file
from kling_render.media import ffmpeg
from kling_render.media.check import Expected, check_structure
from kling_render.media.mp4 import parse_movie
from kling_render.media.probe import check_clip, probe
from kling_render.stitch import CutClip, OutputSettings, SegmentStore, stitch
from kling_render.store.cache import ClipCache, ClipMeta


def lavfi(path: Path, vf: str, *codec: str, audio: str | None = None, exe: str | None = None) -> Path:
    args = [exe or ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    args += ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=24:duration=1.3"]
    if audio:
        args += ["-f", "lavfi", "-i", audio]
    subprocess.run([*args, "-vf", vf, *codec, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clips of the kinds providers and ffmpeg make, and some they rarely do."""
    d = tmp_path_factory.mktemp("kinds")
    x264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    found = {
        "tiny-mono": make_clip(d / "a.mp4", width=320, height=180, fps=25, duration=1.2, channels=1),
        "ntsc-silent": make_clip(d / "b.mp4", fps="30000/1001", duration=0.5, audio=False),
        "stereo-48k": make_clip(d / "c.mp4", duration=2.3, channels=2, sample_rate=48000),
        "23.976-22k": make_clip(d / "f.mp4", fps="24000/1001", duration=1.7, channels=2, sample_rate=22050),
        "anamorphic": lavfi(d / "sar.mp4", "setsar=4/3", *x264),
        "odd-size-faststart": lavfi(d / "odd.mp4", "scale=854:480", *x264, "-movflags", "+faststart"),
        "cropped": lavfi(d / "crop.mp4", "scale=638:358", *x264),
        "b-frames": lavfi(d / "bf.mp4", "null", *x264, "-bf", "3", audio="sine=duration=2"),
        "full-range": lavfi(d / "full.mp4", "scale=out_range=full", "-c:v", "libx264", "-pix_fmt", "yuvj420p"),
        "yuv444": lavfi(d / "444.mp4", "null", "-c:v", "libx264", "-pix_fmt", "yuv444p"),
        "mpeg4": lavfi(d / "mp4v.mp4", "null", "-c:v", "mpeg4"),
        "mov-pcm": lavfi(d / "pcm.mov", "null", *x264, "-c:a", "pcm_s16le", audio="sine=duration=1.3"),
        "mkv": lavfi(d / "m.mkv", "null", *x264),
    }
    for name, args in {"720p": (3, "16:9", True, "720p"), "fake-9x16": (4, "9:16", True, "tiny")}.items():
        found[name] = d / f"{name}.mp4"
        found[name].write_bytes(clip_bytes(*args))
    if Path("/usr/bin/ffmpeg").is_file():  # another muxer's output (Debian's 5.1), when there is one
        found["ffmpeg-5"] = lavfi(d / "deb.mp4", "setsar=40/33", *x264, "-c:a", "aac", "-ac", "2",
                                  audio="sine=duration=1.3:sample_rate=48000", exe="/usr/bin/ffmpeg")  # fmt: skip
    return found


def test_the_headers_are_exactly_what_ffmpeg_reports(clips: dict[str, Path]) -> None:
    """The stitch takes a clip's headers from the check, not a probe: they must be probe's, field for
    field (the container's duration as ffmpeg prints it included: the timeline uses it)."""
    for name, path in clips.items():
        checked = check_structure(path)
        assert checked.info == probe(path), name
        assert checked.sha256 == sha256_file(path) and checked.size == path.stat().st_size


def test_frames_and_real_duration(clips: dict[str, Path]) -> None:
    checked = check_structure(clips["720p"])
    assert (checked.frames, checked.duration) == (72, 3.0)
    assert (checked.info.width, checked.info.height, checked.info.fps) == (1280, 720, Fraction(24))
    ntsc = check_structure(clips["ntsc-silent"])
    assert ntsc.frames == 15 and ntsc.duration == pytest.approx(15 * 1001 / 30000)


def test_what_differs_from_the_expectation_is_reported_not_refused(clips: dict[str, Path]) -> None:
    checked = check_structure(clips["720p"], Expected(duration=5, width=1920, height=1080, fps=24))
    assert checked.mismatches == ("the clip lasts 3.00s, the shot 5s", "the clip is 1280x720, not 1920x1080")
    assert check_structure(clips["720p"], Expected(duration=3, width=1280, height=720)).mismatches == ()
    assert "the clip is mpeg4, not h264" in check_structure(clips["mpeg4"], Expected()).mismatches
    assert "the clip has 25 fps, not 24" in check_structure(clips["tiny-mono"], Expected()).mismatches


def damaged(tmp_path: Path, data: bytes, name: str = "bad.mp4") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_clip_fails_and_says_where(clips: dict[str, Path], tmp_path: Path, cut: float) -> None:
    data = clips["720p"].read_bytes()
    with pytest.raises(InvalidClipError, match=r"bad\.mp4 is not a valid clip: .*truncated") as err:
        check_structure(damaged(tmp_path, data[: int(len(data) * cut)]))
    assert "box" in str(err.value) or "sample" in str(err.value)


def test_a_clip_cut_short_with_its_index_at_the_end_fails(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips["tiny-mono"].read_bytes()  # moov after the mdat: half of it has no index at all
    with pytest.raises(InvalidClipError):
        check_structure(damaged(tmp_path, data[: len(data) // 2]))


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>" * 20,
        b"",
        b"\x00" * 4096,
        bytes(range(256)) * 64,
        b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16,  # an MP4 header, then noise
    ],
)
def test_garbage_fails(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidClipError, match=r"bad\.mp4"):
        check_structure(damaged(tmp_path, data))


def test_damaged_framing_fails_without_decoding(clips: dict[str, Path], tmp_path: Path) -> None:
    """A byte flipped in a NAL unit's length prefix, or in its header: the framing walk sees both."""
    data = bytearray(clips["720p"].read_bytes())
    video = parse_movie(bytes(data)).first("vide")
    assert video is not None
    length_at = video.offsets[40]  # the first NAL length of sample 41
    bad = bytearray(data)
    bad[length_at] ^= 0x40
    with pytest.raises(InvalidClipError, match="video sample 41: a NAL unit of"):
        check_structure(damaged(tmp_path, bytes(bad)))
    header_at = length_at + 4
    bad = bytearray(data)
    bad[header_at] |= 0x80  # the forbidden bit
    with pytest.raises(InvalidClipError, match="video sample 41: an invalid NAL unit header"):
        check_structure(damaged(tmp_path, bytes(bad)))


def test_an_edited_sample_table_fails(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips["720p"].read_bytes()
    at = data.index(b"stsz") + 8  # stsz: version/flags, then sample_size
    count_at = at + 4
    more = int.from_bytes(data[count_at : count_at + 4], "big") + 1
    bad = data[:count_at] + more.to_bytes(4, "big") + data[count_at + 4 :]
    with pytest.raises(InvalidClipError, match=r"sizes announced|samples"):
        check_structure(damaged(tmp_path, bad))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_damage_is_a_located_invalid_clip_or_a_clip(tmp_path: Path, data: st.DataObject) -> None:
    """Bytes flipped, cut, inserted or removed anywhere: the check returns or raises InvalidClipError
    (never another exception, never a hang), and what it returns has frames."""
    clip = bytearray(clip_bytes(2, "16:9", True, "tiny"))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(clip) - 1))
        how = data.draw(st.sampled_from(["flip", "cut", "insert", "remove", "word"]))
        if how == "flip":
            clip[at] ^= data.draw(st.integers(1, 255))
        elif how == "cut":
            del clip[at:]
        elif how == "insert":
            clip[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif how == "remove":
            del clip[at : at + data.draw(st.integers(1, 64))]
        else:  # a 32-bit size or count replaced (boxes and tables are full of them)
            clip[at : at + 4] = data.draw(st.sampled_from([0, 1, 7, 0xFFFFFFFF, 0x7FFFFFFF])).to_bytes(4, "big")
        if not clip:
            break
    path = tmp_path / "fuzz.mp4"
    path.write_bytes(bytes(clip))
    try:
        checked = check_structure(path)
    except InvalidClipError as exc:
        assert "fuzz.mp4" in str(exc)
    else:
        assert checked.frames > 0 and checked.info.width


def test_an_audio_file_is_not_a_clip(tmp_path: Path) -> None:
    with pytest.raises(InvalidClipError, match="no video frames"):
        check_structure(make_audio(tmp_path / "bed.m4a", duration=0.5))


def test_the_stand_ins_faults(tmp_path: Path) -> None:
    """cut_short fails the check; corrupt (bit rot inside a picture) passes it and fails a decode."""
    data = clip_bytes(3, "16:9", False, "tiny")
    with pytest.raises(InvalidClipError, match="truncated"):
        check_structure(damaged(tmp_path, _cut_short(data)))
    rotten = damaged(tmp_path, _corrupt(data), "rot.mp4")
    assert check_structure(rotten).frames == 72
    with pytest.raises(Exception, match="error while decoding"):
        check_clip(rotten)


# -- the one decode: the segment encode ----------------------------------------------------------


def cached(cache: ClipCache, key: str, data: bytes) -> CutClip:
    """``data`` put in ``cache`` as a clip of provider "local"; its CutClip (headers from the check)."""
    cache.prepare()
    with cache.temp_file() as tmp:
        tmp.write_bytes(data)
        checked = check_structure(tmp)
        entry = cache.put("local", key, tmp, ClipMeta(checked.duration, "m"), checked=checked)
    return CutClip(f"shot-{key[:2]}", entry.path, checked.info, sha256=entry.sha256)


def test_bit_rot_fails_the_stitch_naming_the_clip_which_is_quarantined(tmp_path: Path) -> None:
    """Two clips a stream copy can join: nothing would decode them, so the stitch decodes each once."""
    cache = ClipCache(tmp_path / "cache")
    good = cached(cache, "aa" * 32, clip_bytes(2, "16:9", False, "tiny"))
    rotten = cached(cache, "bb" * 32, _corrupt(clip_bytes(3, "16:9", False, "tiny")))
    store = SegmentStore(cache)
    dest = tmp_path / "out" / "cut.mp4"
    with pytest.raises(CorruptClipError) as err:
        stitch([good, rotten], OutputSettings(192, 108, 24), None, dest, segments=store, workers=1)
    assert err.value.shot_id == "shot-bb" and err.value.key == "bb" * 32 and err.value.sha256 == rotten.sha256
    message = str(err.value)
    assert "shot-bb: its clip is damaged" in message and "error while decoding" in message
    assert "it will be fetched again from its task's output" in message
    assert cache.get("local", "bb" * 32) is None  # quarantined ...
    assert [q.key for q in cache.quarantined] == ["bb" * 32]
    assert Path(str(err.value.moved_to)).is_file()  # ... not deleted
    assert cache.get("local", "aa" * 32) is not None  # the good clip stays
    assert cache.probes.corrupt(str(rotten.sha256)) is not None  # the same bytes again are refused
    assert cache.probes.corrupt(str(good.sha256)) is None
    assert not dest.exists()


def test_a_stream_copy_decodes_each_clip_once_ever(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kling_render.stitch.steps as steps_module

    cache = ClipCache(tmp_path / "cache")
    clips = [cached(cache, k * 32, clip_bytes(n, "16:9", False, "tiny")) for k, n in (("aa", 2), ("bb", 3))]
    decoded: list[Path] = []
    real = steps_module.check_clip

    def counting(path: Path, **kw: bool) -> object:
        decoded.append(path)
        return real(path, **kw)

    monkeypatch.setattr(steps_module, "check_clip", counting)
    store = SegmentStore(cache)
    first = stitch(clips, OutputSettings(192, 108, 24), None, tmp_path / "a.mp4", segments=store)
    assert first.stream_copy and sorted(decoded) == sorted(c.path for c in clips)
    again = stitch(clips, OutputSettings(192, 108, 24), None, tmp_path / "b.mp4", segments=store)
    assert again.sha256 == first.sha256 and len(decoded) == 2  # memoized by digest


def test_a_transition_into_a_rotten_clip_blames_that_clip(tmp_path: Path) -> None:
    """The segment of a clip reads the next clip's head for its outgoing transition: the decode
    that fails is of the next clip, and that clip is the one named."""
    cache = ClipCache(tmp_path / "cache")
    first = cached(cache, "aa" * 32, clip_bytes(3, "16:9", False, "tiny"))
    second = replace(cached(cache, "bb" * 32, _corrupt(clip_bytes(2, "16:9", False, "tiny"), 0)),
                     transition="fade", transition_duration=0.5)  # fmt: skip
    with pytest.raises(CorruptClipError) as err:
        stitch([first, second], OutputSettings(192, 108, 24), None, tmp_path / "cut.mp4",
               segments=SegmentStore(cache), workers=1)  # fmt: skip
    assert err.value.shot_id == "shot-bb"
    assert cache.get("local", "aa" * 32) is not None and cache.get("local", "bb" * 32) is None
