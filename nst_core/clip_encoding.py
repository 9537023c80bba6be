"""Encoding animated results: GIF and animated WebP (Pillow), MP4 (PyAV's FFmpeg, H.264), fitted to an upload limit.

`encode_animation` writes frames and their display times in one format, with nothing from the user's upload in it;
`encode_animation_to_fit` walks a ladder of formats, qualities, frame sizes and frame rates until the result fits a
byte limit such as Discord's upload limit, and says in a note what it gave up.

GIF colours: one palette for the whole clip (FASTOCTREE on a mosaic of sampled frames), applied to every frame with
Floyd-Steinberg dithering. Compared by eye (frames zoomed 3x) and by numbers on 12-frame 256 px pans over The
Scream, Starry Night and the astronaut photo: per-frame median-cut palettes look a little smoother frame by frame but
take 0.15-0.4 s a frame and change every frame's colours, so still parts shimmer (0.9 grey levels of change a frame
where a global palette has 0) and Pillow cannot crop the delta frames (a clip with a still background came out 4-5x
larger); median-cut and max-coverage global palettes dither visibly grainier than octree; no dithering bands and
blotches the sky (blurred error 1.9-2.3 grey levels against 0.7 dithered).

Torch-free, like `encoding`: the bot process may import it. PyAV is imported only when an MP4 is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from io import BytesIO
from typing import Any, Final

from PIL import Image

from nst_core.clips import probe_clip
from nst_core.encoding import Encoded, _clean_rgb, format_label
from nst_core.errors import ImageTooLargeError, ParameterError
from nst_core.images import human_bytes, limit_text

__all__ = [
    "ANIMATION_FORMATS",
    "EncodedAnimation",
    "encode_animation",
    "encode_animation_to_fit",
    "normalise_animation_format",
]

ANIMATION_FORMATS: Final = ("gif", "webp", "mp4")
# `quality` is each format's own knob: GIF colours (2-256), WebP quality (1-100), MP4 x264 CRF (0-51, lower is
# better). The first is the default; encode_animation_to_fit steps down through the rest.
_QUALITIES: Final = {"gif": (256, 128, 64), "webp": (85, 70, 50), "mp4": (20, 26, 32)}
_QUALITY_RANGES: Final = {"gif": (2, 256), "webp": (1, 100), "mp4": (0, 51)}
# How sizes usually change (measured on 12-frame 256 px pans over a painting and a photo), used only to skip encodes
# that cannot fit: each lower quality step (GIF colours save little, each +6 CRF about halves an MP4); bytes grow as
# pixels ** 0.85; a GIF or WebP is as many times larger as it has frames, an MP4 hardly (half the frames: 0.88).
_QUALITY_GAIN: Final = {"gif": (0.87, 0.72), "webp": (0.6, 0.47), "mp4": (0.56, 0.33)}
_PIXEL_EXPONENT: Final = 0.85
_FRAME_EXPONENT: Final = {"gif": 1.0, "webp": 1.0, "mp4": 0.2}
_SCALE_STEP: Final = 0.75
_MAX_FRAME_STEP: Final = 4  # drop at most 3 frames in 4
_MAX_ENCODES: Final = 16
_SKIP_SLACK: Final = 1.5  # try an encode predicted to be up to this much over the limit (predictions are rough)
_PALETTE_SAMPLES: Final = 8
_PALETTE_PIXELS: Final = 4_000_000
_GIF_MIN_DELAY_MS: Final = 20  # browsers show 10 ms or less as 100 ms


@dataclass(frozen=True)
class EncodedAnimation(Encoded):
    """An encoded animation ("gif", "webp" or "mp4"; quality is GIF colours, WebP quality or MP4 CRF)."""

    frames: int  # frames in the file (a GIF merges identical neighbours, adding their times)
    duration_ms: int  # playing time
    reduced: bool  # True if quality, pixels or frames were reduced to fit (not for a change of format alone)


def normalise_animation_format(fmt: str) -> str:
    """'gif', 'webp' or 'mp4' for a format name in any case; ParameterError for anything else."""
    name = str(fmt).strip().lower()
    if name not in ANIMATION_FORMATS:
        raise ParameterError("format", fmt, "an animation is written as gif, webp or mp4")
    return name


def encode_animation(
    frames: Sequence[Image.Image],
    durations_ms: Sequence[int],
    loop: int | None,
    fmt: str,
    *,
    quality: int | None = None,
) -> bytes:
    """Encode `frames` (shown for `durations_ms` each) as GIF, WebP or MP4, with no metadata from any input.

    `loop` uses GIF's convention (0 forever, N plays N + 1 times, None once); an MP4 does not loop. `quality` is
    the format's own knob (see EncodedAnimation.quality; None for the default: 256 colours, WebP 85, CRF 20).
    GIF times are whole 10 ms, rounded on the running total (so the playing time stays within 5 ms), at least 20 ms.
    An MP4 has an even width and height: an odd one loses its last column or row (cropped, not padded).
    """
    name = normalise_animation_format(fmt)
    clean = _validated(frames, durations_ms, loop)
    return _encode(clean, list(durations_ms), loop, name, _quality(name, quality))


def _validated(frames: Sequence[Image.Image], durations_ms: Sequence[int], loop: int | None) -> list[Image.Image]:
    if not frames:
        raise ParameterError("frames", 0, "an animation needs at least one frame")
    if len(durations_ms) != len(frames):
        raise ParameterError("durations_ms", len(durations_ms), f"one duration per frame ({len(frames)})")
    if any(not isinstance(d, int) or d < 1 for d in durations_ms):
        raise ParameterError("durations_ms", list(durations_ms), "whole milliseconds, at least 1")
    if loop is not None and not 0 <= loop <= 65534:
        raise ParameterError("loop", loop, "0 (forever), 1 to 65534, or None (play once)")
    if len({frame.size for frame in frames}) != 1:
        raise ParameterError("frames", sorted({frame.size for frame in frames}), "all frames the same size")
    return [_clean_rgb(frame) for frame in frames]


def _quality(fmt: str, quality: int | None) -> int:
    if quality is None:
        return _QUALITIES[fmt][0]
    low, high = _QUALITY_RANGES[fmt]
    if not low <= quality <= high:
        raise ParameterError("quality", quality, f"for {format_label(fmt)}: {low} to {high}")
    return quality


def _encode(frames: list[Image.Image], durations: list[int], loop: int | None, fmt: str, quality: int) -> bytes:
    if fmt == "gif":
        return _encode_gif(frames, durations, loop, quality)
    if fmt == "webp":
        buf = BytesIO()
        plays = 1 if loop is None else (0 if loop == 0 else loop + 1)  # WebP counts plays, like APNG
        frames[0].save(
            buf, "WEBP", save_all=True, append_images=frames[1:], duration=durations, loop=plays,
            quality=quality, method=4,
        )  # fmt: skip
        return buf.getvalue()
    return _encode_mp4(frames, durations, quality)


def _encode_gif(frames: list[Image.Image], durations: list[int], loop: int | None, colours: int) -> bytes:
    palette = _global_palette(frames, colours)
    indexed: list[Image.Image] = []
    times: list[int] = []
    for frame, duration in zip(frames, durations, strict=True):
        image = frame.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        if indexed and image.tobytes() == indexed[-1].tobytes():
            times[-1] += duration  # Pillow would merge them anyway; merged here, the frame count and times are ours
            continue
        indexed.append(image)
        times.append(duration)
    buf = BytesIO()
    extra = {} if loop is None else {"loop": loop}
    indexed[0].save(buf, "GIF", save_all=True, append_images=indexed[1:], duration=_gif_delays(times), **extra)
    return buf.getvalue()


def _global_palette(frames: list[Image.Image], colours: int) -> Image.Image:
    """One palette for every frame: octree-quantised from up to 8 evenly spaced frames, pasted into one mosaic."""
    width, height = frames[0].size
    count = max(1, min(len(frames), _PALETTE_SAMPLES, _PALETTE_PIXELS // (width * height)))
    picks = [frames[round(i * (len(frames) - 1) / max(1, count - 1))] for i in range(count)]
    mosaic = Image.new("RGB", (width, height * count))
    for i, frame in enumerate(picks):
        mosaic.paste(frame, (0, i * height))
    return mosaic.quantize(colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)


def _gif_delays(durations: list[int]) -> list[int]:
    delays: list[int] = []
    target = written = 0
    for duration in durations:
        target += duration
        delay = max(_GIF_MIN_DELAY_MS, round((target - written) / 10) * 10)
        delays.append(delay)
        written += delay
    return delays


def _encode_mp4(frames: list[Image.Image], durations: list[int], crf: int) -> bytes:
    import av

    width, height = frames[0].width // 2 * 2, frames[0].height // 2 * 2
    if width < 2 or height < 2:
        raise ParameterError("frames", frames[0].size, "an MP4 needs frames of at least 2x2 px")
    total = sum(durations)
    rate = Fraction(1000, durations[0]) if len(set(durations)) == 1 else Fraction(1000 * len(frames), total)
    with tempfile.TemporaryDirectory(prefix="nst-mp4-") as tmp:
        path = os.path.join(tmp, "clip.mp4")  # +faststart rewrites the file to put the index first: a real file
        with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=rate.limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = Fraction(1, 1000)
            context = stream.codec_context
            context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709, tagged: as browsers assume
            context.color_range = 1  # limited ("MPEG") range
            # No B-frames: then each packet's duration is its own frame's, and the MP4 keeps the last frame's time
            # (with B-frames the muxer's decode-order durations cut it short).
            stream.options = {"crf": str(crf), "preset": "medium", "bf": "0"}
            pts, by_pts = 0, {}
            for image, duration in zip(frames, durations, strict=True):
                if image.size != (width, height):
                    image = image.crop((0, 0, width, height))
                frame = av.VideoFrame.from_image(image).reformat(
                    format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
                )
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                frame.colorspace, frame.color_range = 1, 1
                by_pts[pts] = duration
                _mux(out, stream.encode(frame), by_pts)
                pts += duration
            _mux(out, stream.encode(None), by_pts)
        with open(path, "rb") as fh:
            return fh.read()


def _mux(out: Any, packets: list[Any], by_pts: dict[int, int]) -> None:
    """Mux encoded packets, each with its frame's duration (x264 hands them back a few frames late)."""
    for packet in packets:
        if packet.pts in by_pts:
            packet.duration = by_pts[packet.pts]
        out.mux(packet)


def encode_animation_to_fit(
    frames: Sequence[Image.Image],
    durations_ms: Sequence[int],
    loop: int | None,
    max_bytes: int,
    *,
    prefer: str = "gif",
    alternatives: Sequence[str] = ("mp4",),
    min_long_side: int = 64,
) -> EncodedAnimation:
    """Encode an animation in at most `max_bytes`, giving up as little as possible; the first step that fits wins.

    The ladder, with formats always in the order `prefer`, then `alternatives`:

    1. each format at its default quality (GIF 256 colours, WebP 85, MP4 CRF 20), full size, every frame;
    2. lower quality, a level at a time across the formats: GIF 128 then 64 colours, WebP 70 then 50, CRF 26 then 32;
    3. smaller frames: 0.75, 0.5625, ... of the size (LANCZOS), down to `min_long_side` px on the long side;
    4. fewer frames: every other frame, then every 4th (each kept frame shown for the dropped ones' time too, so the
       playing time stays the same), with the sizes of step 3 again from full size.

    Steps 3 and 4 use the default quality. Each encode costs time (a 48-frame 512 px GIF takes seconds), so an
    encode that the sizes already measured predict to be more than 1.5x over the limit is skipped, and at most 16 are
    made. Nothing fits: ImageTooLargeError (role 'result') naming the smallest try. ParameterError for bad input.
    """
    if max_bytes < 1:
        raise ParameterError("max_bytes", max_bytes, "a positive number of bytes")
    order = list(dict.fromkeys(normalise_animation_format(f) for f in (prefer, *alternatives)))
    fitter = _Fitter(_validated(frames, durations_ms, loop), list(durations_ms), loop, max_bytes, order)
    return fitter.run(max(1, min_long_side))


@dataclass
class _Fitter:
    frames: list[Image.Image]
    durations: list[int]
    loop: int | None
    max_bytes: int
    order: list[str]
    encodes: int = 0
    # format -> (bytes, pixels a frame, frames) of its latest default-quality encode: what predictions start from
    measured: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    smallest: tuple[int, str] = (0, "")
    _cache: dict[tuple[float, int], tuple[list[Image.Image], list[int]]] = field(default_factory=dict)

    def run(self, min_long_side: int) -> EncodedAnimation:
        for fmt in self.order:
            if found := self._attempt(fmt, 0, 1.0, 1):
                return found
        for level in (1, 2):
            for fmt in self.order:
                guess = self._predict(fmt, 1.0, 1) * _QUALITY_GAIN[fmt][level - 1]
                if guess <= _SKIP_SLACK * self.max_bytes and (found := self._attempt(fmt, level, 1.0, 1)):
                    return found
        long_side = max(self.frames[0].size)
        scales = [_SCALE_STEP**k for k in range(40) if round(long_side * _SCALE_STEP**k) >= min_long_side]
        step = 1
        while step == 1 or (step <= _MAX_FRAME_STEP and -(-len(self.frames) // step) >= 2):
            for scale in scales if step > 1 else scales[1:]:
                for fmt in self.order:
                    if self._predict(fmt, scale, step) <= _SKIP_SLACK * self.max_bytes and (
                        found := self._attempt(fmt, 0, scale, step)
                    ):
                        return found
            step *= 2
        limit = limit_text(self.max_bytes)
        tried = f" (the smallest encoding tried, {self.smallest[1]}, was {human_bytes(self.smallest[0])})"
        raise ImageTooLargeError(f"animated result cannot be encoded under {limit}{tried}", role="result")

    def _reduced(self, scale: float, step: int) -> tuple[list[Image.Image], list[int]]:
        """The frames at `scale`, keeping every `step`-th (each shown for its dropped neighbours' time too)."""
        if (scale, step) not in self._cache:
            frames = self.frames[::step]
            durations = [sum(self.durations[i : i + step]) for i in range(0, len(self.durations), step)]
            if scale != 1.0:
                width, height = self.frames[0].size
                size = (max(2, round(width * scale)), max(2, round(height * scale)))
                frames = [frame.resize(size, Image.Resampling.LANCZOS) for frame in frames]
            self._cache[(scale, step)] = (frames, durations)
        return self._cache[(scale, step)]

    def _predict(self, fmt: str, scale: float, step: int) -> float:
        if fmt not in self.measured:
            return 0.0  # nothing measured yet: try it
        size, pixels, count = self.measured[fmt]
        width, height = self.frames[0].size
        new_pixels, new_count = width * height * scale * scale, -(-len(self.frames) // step)
        return size * (new_pixels / pixels) ** _PIXEL_EXPONENT * (new_count / count) ** _FRAME_EXPONENT[fmt]

    def _attempt(self, fmt: str, level: int, scale: float, step: int) -> EncodedAnimation | None:
        if self.encodes >= _MAX_ENCODES:
            return None
        self.encodes += 1
        frames, durations = self._reduced(scale, step)
        quality = _QUALITIES[fmt][level]
        data = _encode(frames, durations, self.loop, fmt, quality)
        width, height = (frames[0].width // 2 * 2, frames[0].height // 2 * 2) if fmt == "mp4" else frames[0].size
        fps = len(frames) * 1000 / sum(durations)
        what = format_label(fmt) + _quality_text(fmt, level, quality)
        reductions = [f"{width}x{height} px"] if scale != 1.0 else []
        if step > 1:
            dropped = "every other frame" if step == 2 else f"every {step}th frame"
            reductions.append(f"{fps:.1f}".rstrip("0").rstrip(".") + f" fps ({dropped})")
        if reductions:
            what += " at " + " and ".join(reductions)
        if level == 0:
            self.measured[fmt] = (len(data), frames[0].width * frames[0].height, len(frames))
        if not self.smallest[1] or len(data) < self.smallest[0]:
            self.smallest = (len(data), what)
        if len(data) > self.max_bytes:
            return None
        reduced = bool(level or reductions)
        note = f"{what} ({human_bytes(len(data))})"
        if fmt != self.order[0]:
            note = "re-encoded as " + note
        if fmt != self.order[0] or reduced:
            note += f" to fit {limit_text(self.max_bytes)}"
        info = probe_clip(data, role="result")
        count, duration = (info.frames, round(info.seconds * 1000)) if info else (1, sum(durations))
        return EncodedAnimation(data=data, format=fmt, width=width, height=height, quality=quality, note=note,
                                frames=count, duration_ms=duration, reduced=reduced)


def _quality_text(fmt: str, level: int, quality: int) -> str:
    if level == 0:
        return ""
    if fmt == "gif":
        return f" with {quality} colours"
    return f" quality {quality}" if fmt == "webp" else " at lower quality"  # CRF means nothing to most people
