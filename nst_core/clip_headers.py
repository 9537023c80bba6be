"""The frame count, frame delays and loop count of an animated GIF, APNG or WebP, read from its block structure alone.

`clips.probe_clip` must refuse a clip over its limits before decoding it, but Pillow reports each frame's delay only
once it has decoded that frame (GIF and WebP seek by decoding; an APNG's fcTL chunks are read as frames load). These
walkers step over the pixel data by its declared lengths, so a 48-frame GIF costs microseconds and a decompression
bomb nothing. They read; `clips` decides (a one-frame animation is a still, a cut-off frame is an error).

Pure bytes: no Pillow, no PyAV, no torch.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["AnimationHeader", "read_apng", "read_gif", "read_webp"]


@dataclass(frozen=True)
class AnimationHeader:
    """What the blocks say. `delays_ms` is as stored (0 stays 0); `loop` uses GIF's convention: 0 forever, N plays
    N + 1 times, None once (APNG's and WebP's play counts are converted); `cut_off` is the 1-based frame the data
    ends inside, 0 when every frame is whole (or when the file ends inside its first frame: a broken still).
    """

    width: int
    height: int
    delays_ms: tuple[int, ...]
    loop: int | None
    cut_off: int = 0


def _plays_to_loop(plays: int) -> int | None:
    """APNG's and WebP's play count (0 = forever) in GIF's convention."""
    return 0 if plays == 0 else (None if plays == 1 else plays - 1)


def read_gif(data: bytes) -> AnimationHeader | None:
    """A GIF's frames and delays (GCE delays, 10 ms units), NETSCAPE loop, and the canvas Pillow will use (grown to
    hold a frame that sticks out of the logical screen). None for data too short to be a GIF.
    """
    if len(data) < 13:
        return None
    width, height = struct.unpack_from("<HH", data, 6)
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    delays: list[int] = []
    delay, loop = 0, None
    while pos < len(data) and data[pos] != 0x3B:  # a missing trailer is common and harmless
        kind, pos = data[pos], pos + 1
        if kind == 0x21 and pos < len(data):
            label, blocks = data[pos], []
            pos = _sub_blocks(data, pos + 1, blocks)
            if label == 0xF9 and blocks and len(blocks[0]) >= 4:
                delay = struct.unpack_from("<H", blocks[0], 1)[0] * 10
            elif label == 0xFF and len(blocks) > 1 and blocks[0][:11] == b"NETSCAPE2.0" and len(blocks[1]) >= 3:
                loop = struct.unpack_from("<H", blocks[1], 1)[0] if blocks[1][0] == 1 else loop
        elif kind == 0x2C and pos + 9 <= len(data):
            x, y, w, h, flags = struct.unpack_from("<HHHHB", data, pos)
            width, height = max(width, x + w), max(height, y + h)
            pos = _sub_blocks(data, pos + 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), None)
            if pos >= 0:
                delays.append(delay)
                delay = 0
        elif kind not in (0x21, 0x2C):
            break  # not a block: browsers stop here
        else:
            pos = -1
        if pos < 0:  # the data ends inside a block
            return AnimationHeader(width, height, tuple(delays), loop, len(delays) + 1 if delays else 0)
    return AnimationHeader(width, height, tuple(delays), loop)


def _sub_blocks(data: bytes, pos: int, out: list[bytes] | None) -> int:
    """Skip (or collect into `out`) the sub-blocks at `pos`; the position after them, or -1 if the data ends first."""
    while pos < len(data):
        size = data[pos]
        if size == 0:
            return pos + 1
        if pos + 1 + size > len(data):
            return -1
        if out is not None:
            out.append(data[pos + 1 : pos + 1 + size])
        pos += 1 + size
    return -1


def _chunks(data: bytes, pos: int, *, riff: bool) -> Iterator[tuple[bytes, bytes | None]]:
    """(type, body) of each PNG or RIFF (WebP) chunk from `pos`; body None for a chunk the data ends inside."""
    while pos + 8 <= len(data):
        if riff:
            kind, length = struct.unpack_from("<4sI", data, pos)
        else:
            length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        yield kind, data[pos + 8 : end] if end <= len(data) else None
        pos = end + (length & 1 if riff else 4)  # RIFF pads to even; PNG has a CRC


def read_apng(data: bytes) -> AnimationHeader | None:
    """An APNG's frames (one fcTL chunk each, with its delay fraction) and plays (acTL); None for a PNG without an
    acTL chunk declaring more than one frame (a still). The default image, if not a frame, has no fcTL: not counted.
    """
    width = height = declared = 0
    plays, delays = 1, []
    for kind, body in _chunks(data, 8, riff=False):
        if body is None:
            cut = len(delays) + (kind == b"fcTL")
            return AnimationHeader(width, height, tuple(delays), _plays_to_loop(plays), cut) if declared > 1 else None
        if kind == b"IHDR" and len(body) >= 8:
            width, height = struct.unpack_from(">II", body)
        elif kind == b"acTL" and len(body) >= 8:
            declared, plays = struct.unpack_from(">II", body)
        elif kind == b"fcTL" and len(body) >= 26:
            numerator, denominator = struct.unpack_from(">HH", body, 20)
            delays.append(round(numerator * 1000 / (denominator or 100)))
        elif kind == b"IEND":
            break
    return AnimationHeader(width, height, tuple(delays), _plays_to_loop(plays)) if declared > 1 else None


def read_webp(data: bytes) -> AnimationHeader | None:
    """An animated WebP's canvas (VP8X), plays (ANIM) and frames (one ANMF chunk each, with its duration); None for a
    WebP without the animation flag (a still).
    """
    width = height = plays = 0
    animated, delays = False, []
    for kind, body in _chunks(data, 12, riff=True):
        if body is None:
            cut = len(delays) + (kind == b"ANMF")
            return AnimationHeader(width, height, tuple(delays), _plays_to_loop(plays), cut) if animated else None
        if kind == b"VP8X" and len(body) >= 10:
            animated = bool(body[0] & 0x02)
            width, height = 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
        elif kind == b"ANIM" and len(body) >= 6:
            plays = struct.unpack_from("<H", body, 4)[0]
        elif kind == b"ANMF" and len(body) >= 16:
            delays.append(int.from_bytes(body[12:15], "little"))
    return AnimationHeader(width, height, tuple(delays), _plays_to_loop(plays)) if animated else None
