"""Just enough MP4 box reading to compare the H.264 headers (``avcC``: SPS and PPS) of two files."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

__all__ = ["avc_config"]

_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})
_VISUAL_ENTRY = 78  # bytes of a VisualSampleEntry before its child boxes (ISO/IEC 14496-12)


def _boxes(fh: BinaryIO, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes between ``start`` and ``end``."""
    found = []
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", fh.read(8))
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break  # damaged: stop rather than loop
        found.append((kind, pos + header, pos + size))
        pos += size
    return found


def _find(fh: BinaryIO, start: int, end: int) -> bytes | None:
    for kind, payload, box_end in _boxes(fh, start, end):
        if kind in _CONTAINERS:
            found = _find(fh, payload, box_end)
            if found is not None:
                return found
        elif kind == b"stsd":
            for entry, entry_payload, entry_end in _boxes(fh, payload + 8, box_end):  # version/flags, count
                if entry not in (b"avc1", b"avc3"):
                    continue
                for child, child_payload, child_end in _boxes(fh, entry_payload + _VISUAL_ENTRY, entry_end):
                    if child == b"avcC":
                        fh.seek(child_payload)
                        return fh.read(child_end - child_payload)
    return None


def avc_config(path: Path) -> bytes | None:
    """The first H.264 track's ``avcC`` box (its SPS and PPS), or None if there is none."""
    with path.open("rb") as fh:
        end = fh.seek(0, 2)
        return _find(fh, 0, end)
