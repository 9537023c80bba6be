"""Animated inputs: animated GIF, APNG and animated WebP (Pillow) and MP4, WebM and MOV clips (PyAV).

`images` turns a user's still into pixels; this module does the same for a moving picture, as defensively:

* the format is sniffed from the bytes (never a filename), and a video is handed to FFmpeg with its demuxer forced
  (never FFmpeg's own probing, which knows playlists and other formats that read further files);
* `probe_clip` reads only headers: the GIF, PNG and WebP block structure with `clip_headers` (Pillow gives frame
  timings only by decoding every frame), a video's header through PyAV (packets are demuxed to count frames when the
  header has no count). `check_clip` refuses a clip over its `ClipLimits` before a pixel is decoded;
* `decode_clip` checks again while decoding (headers can lie): more frames than the limit is an error, never a clip
  cut short, and so is a file that stops early (truncated).

Loop counts use one convention whatever the format, GIF's: `loop` 0 plays forever, N plays N + 1 times, None plays
once (a video, or an animation that does not loop). APNG's and WebP's play counts are converted to it.

Torch-free, like `images`: the bot probes an attachment and refuses one over its server's limits before queueing,
without loading the engine. PyAV is imported only by the functions that read a video.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from io import BytesIO
from typing import Any, Final

from PIL import Image, UnidentifiedImageError

from nst_core.clip_headers import AnimationHeader, read_apng, read_gif, read_webp
from nst_core.errors import ClipError, ClipLimitError, NSTError, ParameterError
from nst_core.images import ACCEPTED_FORMATS, _pixels, _unreadable_error, to_rgb

__all__ = ["CLIP_FORMATS", "CLIP_FORMAT_LABELS", "DEFAULT_CLIP_LIMITS", "Clip", "ClipInfo", "ClipLimits",
           "check_clip", "decode_clip", "decode_if_animated", "is_animated", "probe_clip"]  # fmt: skip

CLIP_FORMATS: Final = ("gif", "png", "webp", "mp4", "webm", "mov")
#: How people read each container's name ("png" here is always an animated PNG).
CLIP_FORMAT_LABELS: Final = {"gif": "GIF", "png": "APNG", "webp": "WebP", "mp4": "MP4", "webm": "WebM", "mov": "MOV"}
_VIDEO_DEMUXERS: Final = {"mp4": "mp4", "mov": "mov", "webm": "matroska"}  # Matroska (MKV) is read as "webm"
_PILLOW_FORMATS: Final = {"gif": "GIF", "png": "PNG", "webp": "WEBP"}
_SEND_CLIP: Final = "send an animated GIF, PNG or WebP, or an MP4, WebM or MOV clip"
# ftyp brands of still formats that share MP4's box structure: images.py names them in its error.
_STILL_BRANDS: Final = frozenset(b"heic heix hevc hevx heim heis hevm hevs heif mif1 msf1 avif avis".split())
_QUICKTIME_ATOMS: Final = frozenset({b"moov", b"mdat", b"wide", b"free"})  # old QuickTime files have no ftyp
_MIN_DELAY_MS: Final = 10  # browsers show a GIF/APNG/WebP frame of 10 ms or less for 100 ms; so do we
_SHORT_DELAY_MS: Final = 100
_ROTATION_PROBE_PIXELS: Final = 40_000_000  # above this, probe_clip does not decode a first frame for its rotation
# PyAV's frame.rotation is counterclockwise, like Pillow's ROTATE_90.
_ROTATIONS: Final = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, -180: Image.Transpose.ROTATE_180,
                     -90: Image.Transpose.ROTATE_270, 270: Image.Transpose.ROTATE_270}  # fmt: skip


@dataclass(frozen=True)
class ClipLimits:
    """How much animation one job may take. The defaults suit a 2-core CPU (about 10-20 s per 256 px frame) and
    are what a GPU server raises: `max_frames` and `max_seconds` first.
    """

    max_frames: int = 48
    max_seconds: float = 10.0
    max_frame_pixels: int = 4_000_000  # width x height of one decoded frame (a 1080p frame is 2.1 MP)
    max_total_pixels: int = 100_000_000  # frames x width x height: about 300 MB of decoded RGB

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_seconds", "max_frame_pixels", "max_total_pixels"):
            value = getattr(self, name)
            if not value > 0:
                raise ParameterError(name, value, "allowed range: more than 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipLimits:
        return cls(**data)


DEFAULT_CLIP_LIMITS = ClipLimits()


@dataclass(frozen=True)
class ClipInfo:
    """What a clip's headers say: enough to refuse it before decoding. Sizes are as displayed (rotation applied)."""

    format: str  # one of CLIP_FORMATS ("png" is APNG)
    frames: int
    width: int
    height: int
    seconds: float  # playing time
    loop: int | None  # GIF's convention (see the module docstring); None for a video

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Clip:
    """Decoded frames, ready for the engine: RGB, all the same size, with each frame's display time."""

    frames: list[Image.Image] = field(repr=False)
    durations_ms: list[int]
    loop: int | None
    format: str

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def height(self) -> int:
        return self.frames[0].height

    @property
    def seconds(self) -> float:
        return sum(self.durations_ms) / 1000

    @property
    def fps(self) -> float:
        return len(self.frames) / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------------------------------
# Limits and messages


def _clip(role: str) -> str:
    return "clip" if role in ("image", "clip") else f"{role} clip"


def _secs(value: float, allowed: float) -> str:
    """'14.2 s'; two decimals where one would read as the limit itself ('10.03 s' against '10 s')."""
    return f"{value:.2f} s" if round(value, 1) <= allowed else f"{value:.1f} s"


def _broken(role: str, frame: int, what: str = "cannot be decoded; the file may be truncated or damaged") -> ClipError:
    return ClipError(f"frame {frame} of the {_clip(role)} {what}", role=role)


def check_clip(info: ClipInfo, limits: ClipLimits, *, role: str = "content") -> None:
    """Raise ClipLimitError if `info` is over one of `limits` (frame size first, then frames, seconds, total)."""
    _check(limits, role, info.width, info.height, info.frames, info.seconds)


def _check(limits: ClipLimits, role: str, width: int, height: int, frames: int, seconds: float, more: bool = False
           ) -> None:  # fmt: skip
    """The checks behind `check_clip`; `more` while decoding, where the counts so far are lower bounds."""
    px, total = width * height, frames * width * height
    if px > limits.max_frame_pixels:
        allowed = _pixels(limits.max_frame_pixels, limit=True)
        text = f"is {width}x{height} px ({_pixels(px)}) a frame; the limit is {allowed} a frame"
        raise _over("frame_pixels", px, limits.max_frame_pixels, role, text)
    if frames > limits.max_frames:
        count = f"more than {limits.max_frames}" if more else frames
        raise _over("frames", frames, limits.max_frames, role, f"has {count} frames; the limit is {limits.max_frames}")
    if seconds > limits.max_seconds:
        lasts = f"more than {limits.max_seconds:g} s" if more else _secs(seconds, limits.max_seconds)
        text = f"lasts {lasts}; the limit is {limits.max_seconds:g} s"
        raise _over("seconds", seconds, limits.max_seconds, role, text)
    if total > limits.max_total_pixels:
        text = (
            f"has {'at least ' if more else ''}{frames} frames of {width}x{height} px ({_pixels(total)} in all); the "
            f"limit is {_pixels(limits.max_total_pixels, limit=True)} in all ({limits.max_total_pixels // px} frames "
            "at this size)"
        )
        raise _over("total_pixels", total, limits.max_total_pixels, role, text)


def _over(limit: str, value: float, allowed: float, role: str, text: str) -> ClipLimitError:
    return ClipLimitError(f"{_clip(role)} {text}", limit=limit, value=value, allowed=allowed, role=role)


# --------------------------------------------------------------------------------------------------------------------
# Probing: headers only


@dataclass(frozen=True)
class _Probe:
    info: ClipInfo
    durations_ms: tuple[int, ...] = ()  # per frame, for the image formats (read from the headers)
    counted: bool = False  # a video's frame count came from counting its packets, not from its index


def probe_clip(data: bytes, *, role: str = "content") -> ClipInfo | None:
    """What an animated input holds, from its headers; None for a still (a one-frame animation is a still).

    Raises NotAnImageError / UnsupportedFormatError for bytes that are neither (as `decode_image` would), and
    ClipError for a damaged clip, a video without pictures, or an animation cut off after its first frame.
    A video's first frame is decoded (only it) to read its display rotation, which PyAV exposes on frames only.
    """
    probe = _probe(bytes(data), role)
    return None if probe is None else probe.info


def is_animated(data: bytes) -> bool:
    """True for a clip `decode_clip` should read, including a broken or oversized one (`decode_clip` says why);
    False for a still and for bytes that are no image at all (`decode_image` says why). Never raises NSTError.
    """
    try:
        return probe_clip(data) is not None
    except ClipError:
        return True
    except NSTError:
        return False


def _sniff(data: bytes) -> str | None:
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if data[4:8] == b"ftyp" and data[8:12] not in _STILL_BRANDS:
        return "mov" if data[8:12] == b"qt  " else "mp4"
    return "mov" if data[4:8] in _QUICKTIME_ATOMS else None


def _probe(data: bytes, role: str) -> _Probe | None:
    fmt = _sniff(data)
    if fmt in _VIDEO_DEMUXERS:
        return _probe_video(data, fmt, role)
    header = {"gif": read_gif, "png": read_apng, "webp": read_webp}[fmt](data) if fmt else None
    if header is not None and header.cut_off:
        raise _broken(role, header.cut_off, "is cut off; the file may be truncated")
    parsed = _image_probe(fmt, header) if fmt and header else None
    if parsed is None:  # a still, or no image: raise images.py's own error for bytes no still decoder accepts
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                Image.open(BytesIO(data), formats=ACCEPTED_FORMATS).close()
        except UnidentifiedImageError:
            raise _unreadable_error(data, role) from None
        except Exception:  # a still with a bad or huge header: decode_image explains it
            pass
    return parsed


def _image_probe(fmt: str, header: AnimationHeader) -> _Probe | None:
    if len(header.delays_ms) < 2 or header.width < 1 or header.height < 1:
        return None
    durations = tuple(_SHORT_DELAY_MS if d <= _MIN_DELAY_MS else d for d in header.delays_ms)
    info = ClipInfo(fmt, len(durations), header.width, header.height, sum(durations) / 1000, header.loop)
    return _Probe(info, durations)


def _open_video(data: bytes, fmt: str, role: str) -> Any:
    """The container, demuxer forced; its first video stream is `container.streams.video[0]` (checked here)."""
    import av

    try:
        container = av.open(BytesIO(data), format=_VIDEO_DEMUXERS[fmt])
    except (av.FFmpegError, OSError, ValueError):
        raise ClipError(f"{_clip(role)} cannot be read as {fmt.upper()} (the file is damaged or truncated)", role=role
                        ) from None  # fmt: skip
    if not container.streams.video:
        sound = bool(container.streams.audio)
        container.close()  # (a closed container's streams must not be touched: PyAV crashes)
        if sound:
            raise ClipError(f"{_clip(role)} has sound but no pictures; {_SEND_CLIP}", role=role)
        raise ClipError(f"{_clip(role)} has no video in it (the file may be truncated)", role=role)
    return container


def _probe_video(data: bytes, fmt: str, role: str) -> _Probe:
    import av

    unreadable = ClipError(f"{_clip(role)} cannot be read (the file is damaged or truncated)", role=role)
    with _open_video(data, fmt, role) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        seconds = _header_seconds(container, stream)
        # MP4/MOV index every frame (offset, size, dropped by an edit list or not): a frame the file ends before is
        # found here. WebM indexes only some keyframes (if any): its packets are counted instead (no decoding).
        entries = list(stream.index_entries) if fmt != "webm" else []
        for number, entry in enumerate(entries, 1):
            if entry.pos + entry.size > len(data):
                raise _broken(role, number, "is cut off; the file may be truncated")
        frames, counted = sum(not entry.is_discard for entry in entries), not entries
        if counted:
            try:
                frames, seen = _count_packets(container, stream)
            except av.FFmpegError:
                raise unreadable from None
            # A header that promises more than the packets hold means a cut file (unless a sound track, longer
            # than the pictures, is what the container's duration measures).
            if seconds and seen < 0.9 * seconds and (stream.duration or len(container.streams) == 1):
                raise ClipError(f"{_clip(role)} stops at {seen:.1f} s of {seconds:.1f} s; the file may be truncated",
                                role=role)  # fmt: skip
            seconds = seen or seconds
        if frames < 1 or width < 1 or height < 1:
            raise unreadable
        seconds = seconds or frames / float(stream.guessed_rate or stream.average_rate or 25)
    if width * height <= _ROTATION_PROBE_PIXELS and _first_rotation(data, fmt) in (90, -90, 270):
        width, height = height, width
    return _Probe(ClipInfo(fmt, frames, width, height, seconds, None), (), counted)


def _header_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


def _count_packets(container: Any, stream: Any) -> tuple[int, float]:
    """Frames (non-empty packets) and seconds from the first timestamp to the end of the last packet."""
    count, starts, ends = 0, [], []
    for packet in container.demux(stream):
        if packet.size:
            count += 1
            if packet.pts is not None:
                starts.append(packet.pts)
                ends.append(packet.pts + (packet.duration or 0))
    return count, float((max(ends) - min(starts)) * stream.time_base) if starts else 0.0


def _first_rotation(data: bytes, fmt: str) -> int:
    """The display rotation PyAV reports on the first frame (0 if that frame cannot be decoded: decode_clip says)."""
    import av

    try:
        with av.open(BytesIO(data), format=_VIDEO_DEMUXERS[fmt]) as container:
            for frame in container.decode(container.streams.video[0]):
                return int(frame.rotation)
    except (av.FFmpegError, OSError, ValueError):
        pass
    return 0


# --------------------------------------------------------------------------------------------------------------------
# Decoding


def decode_clip(data: bytes, limits: ClipLimits = DEFAULT_CLIP_LIMITS, *, role: str = "content") -> Clip:
    """Decode every frame of an animated input into RGB images (alpha composited on white), checked against `limits`.

    Probes and checks first (`probe_clip`, `check_clip`); while decoding, more frames, seconds or pixels than the
    headers said is a ClipLimitError and a frame that cannot be decoded (or a file that stops early) a ClipError
    naming the frame. A still raises ClipError. Videos: the first video stream, display rotation applied (90, 180 and
    270 degrees; a mirrored display matrix is not), durations from the frames' timestamps.
    """
    clip = decode_if_animated(data, limits, role=role)
    if clip is None:
        raise ClipError(f"{role} image is a still image, not an animation; {_SEND_CLIP}", role=role)
    return clip


def decode_if_animated(data: bytes, limits: ClipLimits = DEFAULT_CLIP_LIMITS, *, role: str = "content") -> Clip | None:
    """`decode_clip` for bytes that may be a still: None for a still (which `images.decode_image` reads), probed
    once either way (a job takes either kind as its content)."""
    data = bytes(data)
    probe = _probe(data, role)
    if probe is None:
        return None
    check_clip(probe.info, limits, role=role)
    decode = _decode_video if probe.info.format in _VIDEO_DEMUXERS else _decode_animation
    clip = decode(data, probe, limits, role)
    missing = probe.info.frames - len(clip.frames)
    if missing > (max(2, probe.info.frames // 50) if probe.counted else 0):  # a counted packet may hide no frame
        raise ClipError(f"{_clip(role)} stops after frame {len(clip.frames)} of {probe.info.frames}; the file may be "
                        "truncated", role=role)  # fmt: skip
    return clip


def _decode_animation(data: bytes, probe: _Probe, limits: ClipLimits, role: str) -> Clip:
    info, frames = probe.info, []
    try:
        with Image.open(BytesIO(data), formats=(_PILLOW_FORMATS[info.format],)) as img:
            skip = 1 if getattr(img, "default_image", False) else 0  # an APNG's still fallback, not a frame
            while True:
                try:
                    img.seek(len(frames) + skip)
                except EOFError:
                    break
                _check(limits, role, info.width, info.height, len(frames) + 1, 0.0, more=True)
                frame = to_rgb(img)
                if frame.size != (info.width, info.height):  # a GIF whose canvas grows later: pad with white
                    canvas = Image.new("RGB", (info.width, info.height), (255, 255, 255))
                    canvas.paste(frame)
                    frame = canvas
                frames.append(frame)
    except ClipLimitError:
        raise
    except Exception:
        raise _broken(role, len(frames) + 1) from None
    durations = list(probe.durations_ms[: len(frames)]) + [_SHORT_DELAY_MS] * (len(frames) - len(probe.durations_ms))
    return Clip(frames, durations, info.loop, info.format)


def _decode_video(data: bytes, probe: _Probe, limits: ClipLimits, role: str) -> Clip:
    import av

    frames: list[Image.Image] = []
    starts: list[Fraction | None] = []
    last: Fraction | None = None
    with _open_video(data, probe.info.format, role) as container:
        stream = container.streams.video[0]
        nominal = 1 / Fraction(stream.guessed_rate or stream.average_rate or 25)  # read now: not after closing
        try:
            for frame in container.decode(stream):
                time_base = frame.time_base or stream.time_base
                starts.append(frame.pts * time_base if frame.pts is not None and time_base else None)
                last = frame.duration * time_base if frame.duration and time_base else None
                elapsed = float(starts[-1] - starts[0]) if starts[-1] is not None and starts[0] is not None else 0.0
                _check(limits, role, frame.width, frame.height, len(frames) + 1, elapsed, more=True)
                image = frame.to_image()
                if (turn := _ROTATIONS.get(int(frame.rotation))) is not None:
                    image = image.transpose(turn)
                if frames and image.size != frames[0].size:  # the size changed midway: keep the first
                    image = image.resize(frames[0].size, Image.Resampling.LANCZOS)
                frames.append(image)
        except av.FFmpegError:
            raise _broken(role, len(frames) + 1) from None
    if not frames:
        raise _broken(role, 1)
    return Clip(frames, _video_durations(starts, last, nominal), None, probe.info.format)


def _video_durations(starts: list[Fraction | None], last: Fraction | None, nominal: Fraction) -> list[int]:
    """Whole milliseconds per frame from the timestamps, rounded on the running total (so the sum stays true)."""
    ends, t, base = [], Fraction(0), starts[0]
    for i in range(len(starts)):
        following = starts[i + 1] if i + 1 < len(starts) else None
        if following is not None and base is not None and following - base > t:
            t = following - base
        else:
            t += last if following is None and last else nominal
        ends.append(round(t * 1000))
    return [max(1, b - a) for a, b in zip([0, *ends[:-1]], ends, strict=True)]
