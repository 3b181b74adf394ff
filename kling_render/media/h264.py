"""Just enough H.264 to check a stream without decoding it: the ``avcC`` record, the sequence
parameter set (picture size, chroma format, bit depth, sample aspect ratio), and the framing of
every sample (its NAL units' lengths must tile it exactly, each with a valid header).

The framing check reads every packet of the stream; what it cannot see is damage *inside* a
NAL unit's payload (flipped bits in the slice data): only a decode finds that, and the stitch's
segment encode is the one decode every clip gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kling_render.media.mp4 import Mp4Error

__all__ = ["AvcConfig", "Sps", "check_samples", "parse_avcc", "parse_sps"]

# H.264 Table E-1: sample aspect ratios by aspect_ratio_idc.
_SAR = {
    1: (1, 1), 2: (12, 11), 3: (10, 11), 4: (16, 11), 5: (40, 33), 6: (24, 11), 7: (20, 11), 8: (32, 11),
    9: (80, 33), 10: (18, 11), 11: (15, 11), 12: (64, 33), 13: (160, 99), 14: (4, 3), 15: (3, 2), 16: (2, 1),
}  # fmt: skip
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_VCL = frozenset({1, 2, 3, 4, 5, 20, 21})  # coded slices (and their SVC/MVC extensions)


@dataclass(frozen=True)
class AvcConfig:
    length_size: int  # bytes of each NAL unit's length prefix in a sample
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


@dataclass(frozen=True)
class Sps:
    width: int  # after cropping: what a decoder outputs
    height: int
    chroma_format_idc: int  # 1: 4:2:0
    bit_depth: int
    frame_mbs_only: bool  # progressive
    sar: tuple[int, int] | None  # None: not signalled
    full_range: bool  # luma 0-255 (ffmpeg names such pictures yuvj420p)


def parse_avcc(data: bytes) -> AvcConfig:
    """The ``avcC`` box payload; Mp4Error when it is malformed."""
    if len(data) < 7 or data[0] != 1:
        raise Mp4Error("avcC: not an AVC decoder configuration")
    length_size = (data[4] & 3) + 1
    if length_size == 3:
        raise Mp4Error("avcC: a NAL length size of 3 bytes")
    pos = 6
    sets: list[list[bytes]] = [[], []]
    for which, count in ((0, data[5] & 0x1F), (1, -1)):
        if count < 0:
            if pos >= len(data):
                raise Mp4Error("avcC: cut short")
            count = data[pos]
            pos += 1
        for _ in range(count):
            if pos + 2 > len(data):
                raise Mp4Error("avcC: cut short")
            size = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(data):
                raise Mp4Error("avcC: a parameter set overruns the record")
            sets[which].append(bytes(data[pos : pos + size]))
            pos += size
    if not sets[0] or not sets[1]:
        raise Mp4Error("avcC: no sequence or picture parameter set")
    return AvcConfig(length_size, tuple(sets[0]), tuple(sets[1]))


class _Bits:
    """An RBSP read bit by bit (emulation prevention bytes removed first)."""

    def __init__(self, nal: bytes) -> None:
        rbsp = bytearray()
        zeros = 0
        for byte in nal:
            if zeros >= 2 and byte == 3:
                zeros = 0
                continue
            rbsp.append(byte)
            zeros = zeros + 1 if byte == 0 else 0
        self.value = int.from_bytes(rbsp, "big")
        self.bits = len(rbsp) * 8
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > self.bits:
            raise Mp4Error("SPS: cut short")
        self.pos += n
        return (self.value >> (self.bits - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise Mp4Error("SPS: a malformed number")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def parse_sps(nal: bytes) -> Sps:
    """The fields of a sequence parameter set NAL unit (header byte included) that size a picture."""
    if not nal or nal[0] & 0x1F != 7:
        raise Mp4Error("SPS: not a sequence parameter set")
    r = _Bits(nal[1:])
    profile = r.u(8)
    r.u(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma, depth, separate = 1, 8, False
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        if chroma > 3:
            raise Mp4Error(f"SPS: chroma_format_idc {chroma}")
        if chroma == 3:
            separate = bool(r.u(1))
        depth = r.ue() + 8
        r.ue()  # chroma bit depth
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.u(1):
                    _scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        cycle = r.ue()
        if cycle > 255:
            raise Mp4Error("SPS: a malformed picture order count cycle")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise Mp4Error(f"SPS: pic_order_cnt_type {poc_type}")
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = bool(r.u(1))
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop = (r.ue(), r.ue(), r.ue(), r.ue()) if r.u(1) else (0, 0, 0, 0)
    sar, full_range = None, False
    if r.u(1):  # vui_parameters_present_flag
        if r.u(1):  # aspect_ratio_info_present_flag
            idc = r.u(8)
            sar = (r.u(16), r.u(16)) if idc == 255 else _SAR.get(idc)
        if r.u(1):  # overscan_info_present_flag
            r.u(1)
        if r.u(1):  # video_signal_type_present_flag: video_format, then video_full_range_flag
            r.u(3)
            full_range = bool(r.u(1))
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[0 if separate else chroma]
    unit_x = 1 if chroma == 0 or separate else sub_w
    unit_y = (2 - frame_mbs_only) * (1 if chroma == 0 or separate else sub_h)
    width = 16 * width_mbs - unit_x * (crop[0] + crop[1])
    height = 16 * height_units * (2 - frame_mbs_only) - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise Mp4Error("SPS: the cropping leaves no picture")
    return Sps(width, height, chroma, depth, frame_mbs_only, sar, full_range)


def _scaling_list(r: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + r.se() + 256) % 256
        last = nxt or last


def check_samples(data: bytes, offsets: Sequence[int], sizes: Sequence[int], length_size: int) -> None:
    """Every sample is a whole number of length-prefixed NAL units, each with a valid header, and
    holds at least one coded slice; Mp4Error naming the first sample that is not."""
    for n, (start, size) in enumerate(zip(offsets, sizes, strict=True)):
        pos, end, slices = start, start + size, 0
        while pos < end:
            if end - pos <= length_size:
                raise Mp4Error(f"video sample {n + 1}: {end - pos} stray bytes after its last NAL unit")
            length = int.from_bytes(data[pos : pos + length_size], "big")
            pos += length_size
            if length == 0 or pos + length > end:
                raise Mp4Error(
                    f"video sample {n + 1}: a NAL unit of {length} bytes at byte {pos} overruns the sample "
                    "(damaged data)"
                )
            header = data[pos]
            kind = header & 0x1F
            if header & 0x80 or kind == 0 or kind >= 24:
                raise Mp4Error(f"video sample {n + 1}: an invalid NAL unit header {header:#04x} at byte {pos}")
            slices += kind in _VCL
            pos += length
        if not slices:
            raise Mp4Error(f"video sample {n + 1}: no coded picture")
