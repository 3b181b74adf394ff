"""Tiny real test clips made with ffmpeg's lavfi sources (generated at test time, never committed)."""

from __future__ import annotations

from pathlib import Path

from kling_render.media import ffmpeg


def make_clip(
    path: Path,
    *,
    width: int = 160,
    height: int = 90,
    fps: int | str = 24,
    duration: float = 1.0,
    audio: bool = True,
    tone: float = 440.0,
    sample_rate: int = 44100,
    channels: int = 1,
    volume_db: float = -12.0,
    pattern: str = "testsrc",
) -> Path:
    """An H.264 (+ AAC when ``audio``) MP4 of ``duration`` seconds: a test pattern and a sine tone."""
    args = ["-y", "-f", "lavfi", "-i", f"{pattern}=size={width}x{height}:rate={fps}:duration={duration}"]
    if audio:
        layout = "mono" if channels == 1 else "stereo"
        args += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone}:sample_rate={sample_rate}:duration={duration},"
            f"volume={volume_db}dB,aformat=channel_layouts={layout}",
        ]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "12"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k"]
    args += ["-t", str(duration), str(path)]
    ffmpeg.run(args, f"generating {path.name}")
    return path


def make_audio(path: Path, *, duration: float = 2.0, tone: float = 220.0, volume_db: float = -30.0) -> Path:
    """A mono sine tone as an audio-only file (a music bed)."""
    args = [
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={tone}:sample_rate=44100:duration={duration},volume={volume_db}dB",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        str(path),
    ]
    ffmpeg.run(args, f"generating {path.name}")
    return path
