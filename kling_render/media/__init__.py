"""ffmpeg: the one runner, what the binary can do, probes and MP4 boxes."""
