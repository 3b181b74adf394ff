"""MP4 (ISO BMFF / QuickTime) reading in pure Python: the box tree, each track's sample tables, and
where every sample lies in the file, without decoding anything.

:func:`parse_movie` is strict: a box that overruns its parent or the file, sample tables that
disagree with one another, or a sample outside the file's ``mdat`` boxes is an :class:`Mp4Error`
naming the place, so a truncated download, an error page or random bytes fail here in
milliseconds. Fragmented files (``mvex``/``moof``) raise :class:`Unsupported`: a caller falls
back to ffmpeg for them. :func:`avc_config` reads just the H.264 headers of a big file (the stitch
compares those of its segments) without loading it.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["Movie", "Mp4Error", "SampleEntry", "Track", "Unsupported", "avc_config", "parse_movie"]

_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})
_VISUAL_ENTRY = 78  # bytes of a VisualSampleEntry before its child boxes (ISO/IEC 14496-12)
_AUDIO_ENTRY = 28  # bytes of an AudioSampleEntry (version 0) before its child boxes
# What an MP4 or QuickTime file may start with; anything else (an HTML page, random bytes) is not one.
_FIRST_BOXES = frozenset({b"ftyp", b"styp", b"free", b"skip", b"wide", b"moov", b"mdat", b"pnot", b"uuid"})
MAX_SAMPLES = 10_000_000  # far beyond any clip; bounds the work a hostile file can ask for


class Mp4Error(ValueError):
    """The bytes are not a sound MP4: the message says what and where."""


class Unsupported(Mp4Error):
    """Not an MP4 this reader checks (another container, or a fragmented MP4): use ffmpeg instead."""


@dataclass(frozen=True)
class SampleEntry:
    """A track's first sample description: its codec's four-character code, the entry's own
    fields and its child boxes (``avcC``, ``esds``, ``pasp``...), first of each type."""

    codec: str
    payload: bytes
    children: dict[str, bytes]


@dataclass(frozen=True)
class Track:
    track_id: int
    handler: str  # "vide", "soun", ...
    timescale: int
    duration: int  # the media header's, in timescale units
    entry: SampleEntry
    deltas: tuple[tuple[int, int], ...]  # stts runs: (sample count, duration of each)
    offsets: tuple[int, ...]  # where each sample starts in the file
    sizes: tuple[int, ...]  # each sample's size in bytes

    @property
    def samples(self) -> int:
        return len(self.sizes)

    @property
    def total_delta(self) -> int:
        """The summed duration of every sample, in timescale units."""
        return sum(count * delta for count, delta in self.deltas)


@dataclass(frozen=True)
class Movie:
    size: int  # of the file
    timescale: int  # the movie header's
    duration: int  # the movie header's, in its timescale
    tracks: tuple[Track, ...]  # in file order

    def first(self, handler: str) -> Track | None:
        return next((t for t in self.tracks if t.handler == handler), None)


def _u32(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "big")


def _children(data: bytes, start: int, end: int, where: str, *, strict_end: bool) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes tiling ``start``..``end``. A box that overruns
    ``end`` is an error; fewer than 8 stray bytes at the end are too when ``strict_end``."""
    found: list[tuple[bytes, int, int]] = []
    pos = start
    while end - pos >= 8:
        size = _u32(data, pos)
        kind = bytes(data[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            if end - pos < 16:
                raise Mp4Error(f"{where}: the {_name(kind)} box at byte {pos} is cut short")
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise Mp4Error(f"{where}: the {_name(kind)} box at byte {pos} has an impossible size {size}")
        if pos + size > end:
            raise Mp4Error(
                f"{where}: the {_name(kind)} box at byte {pos} needs {size} bytes, {end - pos} are left "
                "(the file is truncated or damaged)"
            )
        found.append((kind, pos + header, pos + size))
        pos += size
    if strict_end and pos != end:
        raise Mp4Error(f"{where}: {end - pos} stray bytes at byte {pos}")
    return found


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1")) if all(32 <= b < 127 for b in kind) else kind.hex()


def _find(boxes: list[tuple[bytes, int, int]], kind: bytes) -> tuple[int, int] | None:
    return next(((start, end) for k, start, end in boxes if k == kind), None)


def _need(boxes: list[tuple[bytes, int, int]], kind: bytes, where: str) -> tuple[int, int]:
    found = _find(boxes, kind)
    if found is None:
        raise Mp4Error(f"{where}: no {kind.decode()} box")
    return found


def parse_movie(data: bytes) -> Movie:
    """Every track of the MP4 ``data`` with its sample tables, checked (see the module docstring)."""
    if len(data) < 8:
        raise Unsupported("not an MP4 file: it has fewer than 8 bytes")
    if bytes(data[4:8]) not in _FIRST_BOXES:
        raise Unsupported(f"not an MP4 file: it starts with {bytes(data[:16])!r}")
    top = _children(data, 0, len(data), "file", strict_end=True)
    for kind, _, _ in top:
        if not all(32 <= b < 127 for b in kind):
            raise Mp4Error(f"file: a box of type {kind.hex()} (damaged bytes)")
    if [k for k, _, _ in top].count(b"moov") != 1:
        raise Mp4Error("file: it needs exactly one moov box (the movie's index)")
    if _find(top, b"moof") is not None:
        raise Unsupported("a fragmented MP4")
    mdats = sorted((start, end) for kind, start, end in top if kind == b"mdat")
    moov_start, moov_end = _need(top, b"moov", "file")
    moov = _children(data, moov_start, moov_end, "moov", strict_end=False)
    if _find(moov, b"mvex") is not None:
        raise Unsupported("a fragmented MP4")
    timescale, duration = _header(data, *_need(moov, b"mvhd", "moov"), "mvhd")
    tracks = tuple(_track(data, start, end, n, mdats) for n, (start, end) in enumerate(
        (s, e) for k, s, e in moov if k == b"trak"))  # fmt: skip
    if sum(t.samples for t in tracks) > MAX_SAMPLES:
        raise Mp4Error(f"moov: more than {MAX_SAMPLES} samples")
    return Movie(len(data), timescale, duration, tracks)


def _header(data: bytes, start: int, end: int, where: str) -> tuple[int, int]:
    """(timescale, duration) of an mvhd or mdhd box."""
    version = data[start] if end > start else 0
    need = 32 if version == 1 else 20
    if end - start < need:
        raise Mp4Error(f"{where}: cut short")
    if version == 1:
        timescale, duration = struct.unpack_from(">IQ", data, start + 20)
    else:
        timescale, duration = struct.unpack_from(">II", data, start + 12)
    if timescale == 0:
        raise Mp4Error(f"{where}: a timescale of 0")
    return timescale, duration


def _track(data: bytes, start: int, end: int, n: int, mdats: list[tuple[int, int]]) -> Track:
    where = f"track {n + 1}"
    trak = _children(data, start, end, where, strict_end=False)
    tkhd_start, tkhd_end = _need(trak, b"tkhd", where)
    version = data[tkhd_start] if tkhd_end > tkhd_start else 0
    id_at = tkhd_start + (20 if version == 1 else 12)
    if tkhd_end - id_at < 4:
        raise Mp4Error(f"{where}: tkhd cut short")
    track_id = _u32(data, id_at)
    mdia = _children(data, *_need(trak, b"mdia", where), where, strict_end=False)
    timescale, duration = _header(data, *_need(mdia, b"mdhd", where), f"{where} mdhd")
    hdlr_start, hdlr_end = _need(mdia, b"hdlr", where)
    if hdlr_end - hdlr_start < 12:
        raise Mp4Error(f"{where}: hdlr cut short")
    handler = bytes(data[hdlr_start + 8 : hdlr_start + 12]).decode("latin-1")
    minf = _children(data, *_need(mdia, b"minf", where), where, strict_end=False)
    stbl = _children(data, *_need(minf, b"stbl", where), where, strict_end=False)
    entry = _sample_entry(data, *_need(stbl, b"stsd", where), handler, where)
    deltas = _stts(data, *_need(stbl, b"stts", where), where)
    sizes = _stsz(data, stbl, where)
    chunks = _chunk_offsets(data, stbl, where)
    runs = _stsc(data, *_need(stbl, b"stsc", where), where)
    counted = sum(count for count, _ in deltas)
    if counted != len(sizes):
        raise Mp4Error(f"{where}: the time table counts {counted} samples, the size table {len(sizes)}")
    offsets = _sample_offsets(runs, chunks, sizes, where)
    _inside(offsets, sizes, mdats, where)
    return Track(track_id, handler, timescale, duration, entry, deltas, offsets, sizes)


def _counted(data: bytes, start: int, end: int, width: int, where: str, skip: int = 0) -> tuple[int, int]:
    """(entry count, first entry's position) of a full box holding ``count`` entries of ``width`` bytes."""
    if end - start < 8 + skip:
        raise Mp4Error(f"{where}: cut short")
    count = _u32(data, start + 4 + skip)
    first = start + 8 + skip
    if count * width > end - first:
        raise Mp4Error(f"{where}: {count} entries announced, room for {(end - first) // width}")
    return count, first


def _stts(data: bytes, start: int, end: int, where: str) -> tuple[tuple[int, int], ...]:
    count, first = _counted(data, start, end, 8, f"{where} stts")
    flat = struct.unpack_from(f">{2 * count}I", data, first)
    return tuple(zip(flat[0::2], flat[1::2], strict=True))


def _stsz(data: bytes, stbl: list[tuple[bytes, int, int]], where: str) -> tuple[int, ...]:
    found = _find(stbl, b"stsz")
    if found is not None:
        start, end = found
        if end - start < 12:
            raise Mp4Error(f"{where} stsz: cut short")
        size, count = (int(v) for v in struct.unpack_from(">II", data, start + 4))
        if count > MAX_SAMPLES:
            raise Mp4Error(f"{where} stsz: {count} samples")
        if size:
            if size * count > len(data):
                raise Mp4Error(f"{where} stsz: {count} samples of {size} bytes do not fit in the file")
            return (size,) * count
        if count * 4 > end - start - 12:
            raise Mp4Error(f"{where} stsz: {count} sizes announced, room for {(end - start - 12) // 4}")
        return struct.unpack_from(f">{count}I", data, start + 12)
    start, end = _need(stbl, b"stz2", where)
    if end - start < 12:
        raise Mp4Error(f"{where} stz2: cut short")
    bits, count = data[start + 7], _u32(data, start + 8)
    if bits not in (4, 8, 16) or count * bits > (end - start - 12) * 8:
        raise Mp4Error(f"{where} stz2: {count} sizes of {bits} bits do not fit")
    if bits == 16:
        return struct.unpack_from(f">{count}H", data, start + 12)
    raw = data[start + 12 : end]
    if bits == 8:
        return tuple(raw[:count])
    return tuple((raw[i // 2] >> (4 if i % 2 == 0 else 0)) & 0xF for i in range(count))


def _chunk_offsets(data: bytes, stbl: list[tuple[bytes, int, int]], where: str) -> tuple[int, ...]:
    found = _find(stbl, b"stco")
    if found is not None:
        count, first = _counted(data, *found, 4, f"{where} stco")
        return struct.unpack_from(f">{count}I", data, first)
    count, first = _counted(data, *_need(stbl, b"co64", where), 8, f"{where} co64")
    return struct.unpack_from(f">{count}Q", data, first)


def _stsc(data: bytes, start: int, end: int, where: str) -> list[tuple[int, int]]:
    """(first chunk, samples per chunk) runs, checked to start at chunk 1 and increase."""
    count, first = _counted(data, start, end, 12, f"{where} stsc")
    flat = struct.unpack_from(f">{3 * count}I", data, first)
    runs = list(zip(flat[0::3], flat[1::3], strict=True))
    previous = 0
    for chunk, _per in runs:
        if chunk <= previous or (previous == 0 and chunk != 1):
            raise Mp4Error(f"{where} stsc: chunk runs out of order")
        previous = chunk
    return runs


def _sample_offsets(
    runs: list[tuple[int, int]], chunks: tuple[int, ...], sizes: tuple[int, ...], where: str
) -> tuple[int, ...]:
    offsets: list[int] = []
    total = len(sizes)
    for r, (first, per) in enumerate(runs):
        last = runs[r + 1][0] - 1 if r + 1 < len(runs) else len(chunks)
        if first > len(chunks) or last > len(chunks):
            raise Mp4Error(f"{where} stsc: names chunk {max(first, last)} of {len(chunks)}")
        if per == 0 and last >= first:
            raise Mp4Error(f"{where} stsc: a chunk of 0 samples")
        for chunk in range(first - 1, last):
            if len(offsets) + per > total:
                raise Mp4Error(f"{where}: the chunk table holds more samples than the size table's {total}")
            at = chunks[chunk]
            for s in range(len(offsets), len(offsets) + per):
                offsets.append(at)
                at += sizes[s]
    if len(offsets) != total:
        raise Mp4Error(f"{where}: the chunk table holds {len(offsets)} samples, the size table {total}")
    return tuple(offsets)


def _inside(offsets: tuple[int, ...], sizes: tuple[int, ...], mdats: list[tuple[int, int]], where: str) -> None:
    """Every sample lies wholly inside one mdat payload."""
    starts = [s for s, _ in mdats]
    for n, (at, size) in enumerate(zip(offsets, sizes, strict=True)):
        i = bisect.bisect_right(starts, at) - 1
        if i < 0 or at + size > mdats[i][1]:
            raise Mp4Error(
                f"{where}: sample {n + 1} ({size} bytes at byte {at}) lies outside the media data "
                "(the file is truncated or damaged)"
            )


def _sample_entry(data: bytes, start: int, end: int, handler: str, where: str) -> SampleEntry:
    count, _ = _counted(data, start, end, 8, f"{where} stsd")
    if count < 1:
        raise Mp4Error(f"{where} stsd: no sample description")
    entries = _children(data, start + 8, end, f"{where} stsd", strict_end=False)
    if not entries:
        raise Mp4Error(f"{where} stsd: no sample description")
    kind, payload_start, entry_end = entries[0]
    payload = bytes(data[payload_start:entry_end])
    skip = 0
    if handler == "vide":
        skip = _VISUAL_ENTRY
    elif handler == "soun" and len(payload) >= 10:
        skip = _AUDIO_ENTRY + {0: 0, 1: 16, 2: 36}.get(int.from_bytes(payload[8:10], "big"), 0)
    children: dict[str, bytes] = {}
    if skip and payload_start + skip <= entry_end:
        for child, child_start, child_end in _children(data, payload_start + skip, entry_end, where, strict_end=False):
            children.setdefault(child.decode("latin-1"), bytes(data[child_start:child_end]))
    return SampleEntry(kind.decode("latin-1"), payload, children)


# -- the H.264 headers of a big file, read without loading it ----------------------------------


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


def _find_avcc(fh: BinaryIO, start: int, end: int) -> bytes | None:
    for kind, payload, box_end in _boxes(fh, start, end):
        if kind in _CONTAINERS:
            found = _find_avcc(fh, payload, box_end)
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
        return _find_avcc(fh, 0, end)
