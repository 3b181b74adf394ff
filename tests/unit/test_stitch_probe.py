"""probe / verify_clip on real tiny clips made by ffmpeg at test time."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
from mediagen import make_audio, make_clip

from kling_render.errors import FFmpegError
from kling_render.media.probe import MediaInfo, check_clip, parse_dump, probe, verify_clip


def test_probe_reads_video_and_audio(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "a.mp4", width=320, height=180, fps=25, duration=1.2, channels=1)
    info = probe(path)
    assert (info.width, info.height, info.fps) == (320, 180, Fraction(25))
    assert (info.video_codec, info.pix_fmt, info.sar) == ("h264", "yuv420p", "1:1")
    assert info.has_audio and info.audio_codec == "aac"
    assert (info.sample_rate, info.channels) == (44100, 1)
    assert info.duration == pytest.approx(1.2, abs=0.05)


def test_probe_ntsc_rate_and_no_audio(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "odd name 'x'.mp4", fps="30000/1001", duration=0.5, audio=False)
    info = probe(path)
    assert info.fps == Fraction(30000, 1001)
    assert not info.has_audio and info.audio_codec is None and info.sample_rate is None


def test_probe_audio_only(tmp_path: Path) -> None:
    info = probe(make_audio(tmp_path / "bed.m4a", duration=1.0))
    assert info.width is None and info.fps is None
    assert info.has_audio and info.duration == pytest.approx(1.0, abs=0.05)


def test_verify_measures_duration(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "a.mp4", fps=24, duration=1.5)
    assert verify_clip(path).duration == pytest.approx(1.5, abs=1 / 24)


def test_truncated_clip_fails_verification(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "a.mp4", fps=24, duration=2.0, width=320, height=180)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FFmpegError) as err:
        verify_clip(cut)
    assert "cut.mp4" in str(err.value)


def test_missing_and_garbage_files_raise(tmp_path: Path) -> None:
    with pytest.raises(FFmpegError, match="No such file"):
        probe(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(FFmpegError):
        probe(junk)


def test_parse_dump_anamorphic_and_surround() -> None:
    dump = (
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mov':\n"
        "  Duration: 00:01:02.50, start: 0.000000, bitrate: 5000 kb/s\n"
        "  Stream #0:0[0x1](eng): Video: h264 (Main) (avc1 / 0x31637661), "
        "yuv420p(tv, bt709, progressive), 1440x1080 [SAR 4:3 DAR 16:9], 4000 kb/s, "
        "23.98 fps, 23.98 tbr, 24k tbn (default)\n"
        "  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, 5.1, fltp, "
        "384 kb/s (default)\n"
    )
    info = parse_dump(dump)
    assert info.duration == 62.5
    assert (info.width, info.height, info.sar, info.pix_fmt) == (1440, 1080, "4:3", "yuv420p")
    assert info.fps == Fraction(24000, 1001)
    assert (info.sample_rate, info.channels) == (48000, 6)


def test_verify_reads_the_same_headers_as_probe(tmp_path: Path) -> None:
    # verify_clip parses the stream dump of its own decode run (one ffmpeg process, not two);
    # apart from the measured duration it must agree with probe field for field.
    for path in (
        make_clip(tmp_path / "a.mp4", width=320, height=180, fps=25, duration=1.2, channels=1),
        make_clip(tmp_path / "b.mp4", fps="30000/1001", duration=0.5, audio=False),
        make_audio(tmp_path / "c.m4a", duration=1.0),
    ):
        headers = probe(path)
        verified = verify_clip(path)
        assert verified == replace(headers, duration=verified.duration)
        assert verified.duration == pytest.approx(headers.duration, abs=0.05)


def test_verify_error_names_the_problem_not_the_stream_dump(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "a.mp4", fps=24, duration=2.0, width=320, height=180)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FFmpegError) as err:
        verify_clip(cut)
    assert "Stream #" not in str(err.value) and "Duration:" not in str(err.value)
    with pytest.raises(FFmpegError, match="No such file"):
        verify_clip(tmp_path / "nope.mp4")


def test_check_clip_headers_round_trip_through_json(tmp_path: Path) -> None:
    # The render keeps check_clip's headers in the cache sidecar; the stitch reads them back
    # instead of probing, so the round trip must give exactly what probe gives.
    for path in (
        make_clip(tmp_path / "a.mp4", fps="30000/1001", duration=0.5, channels=1),
        make_clip(tmp_path / "b.mp4", fps=25, duration=0.5, audio=False),
        make_audio(tmp_path / "c.m4a", duration=0.5),
    ):
        check = check_clip(path)
        doc = json.loads(json.dumps(check.headers.to_json()))
        assert MediaInfo.from_json(doc) == check.headers == probe(path)
    assert doc["fps"] is None and MediaInfo.from_json(doc).fps is None


@pytest.mark.parametrize(
    "change",
    [
        {"fps": "0/1"},
        {"fps": "fast"},
        {"width": "320"},
        {"width": True},
        {"has_audio": 1},
        {"duration": None},
        {"extra": 1},
        {"channels": 2.5},
    ],
)
def test_media_info_from_json_rejects_what_it_did_not_write(tmp_path: Path, change: dict[str, object]) -> None:
    good = probe(make_clip(tmp_path / "a.mp4", fps=24, duration=0.5)).to_json()
    assert MediaInfo.from_json({**good, "fps": "24"}).fps == Fraction(24)
    with pytest.raises(ValueError):
        MediaInfo.from_json({**good, **change})
    missing = dict(good)
    missing.pop("sar")
    with pytest.raises(ValueError):
        MediaInfo.from_json(missing)
