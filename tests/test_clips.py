"""Tests for nst_core.clips: probing and decoding animated GIF, APNG, WebP and MP4/WebM/MOV inputs.

Every clip is made here (64 px, 4 frames, a square moving over a gradient) with Pillow or PyAV, so the tests need no
data files. What is checked is what the person who sent the clip would notice: frames, timing, loop, size, colours,
and an error that says what is wrong for a clip over a limit, a damaged clip, a still or junk.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from io import BytesIO

import av
import pytest
from clip_samples import DURATIONS, moving_frames
from PIL import Image, ImageChops, ImageStat

from nst_core.clips import ClipInfo, ClipLimits, check_clip, decode_clip, is_animated, probe_clip
from nst_core.errors import ClipError, ClipLimitError, NotAnImageError, UnsupportedFormatError


def pillow_animation(fmt: str, frames: list[Image.Image], durations: list[int] = DURATIONS, **kwargs: object) -> bytes:
    buf = BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=durations, **kwargs)
    return buf.getvalue()


def video(
    frames: list[Image.Image],
    fmt: str = "mp4",
    *,
    fps: int = 25,
    rotation: int | None = None,
    faststart: bool = True,
    audio_only: bool = False,
) -> bytes:
    """A clip written with PyAV directly (not with the module under test): H.264 in MP4/MOV, VP9 in WebM."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"clip.{fmt}")
        options = {"movflags": "+faststart"} if faststart and fmt != "webm" else {}
        with av.open(path, "w", format=fmt, options=options) as out:
            if audio_only:
                stream = out.add_stream("aac", rate=8000)
                frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
                frame.planes[0].update(bytes(4096))
                frame.sample_rate, frame.pts = 8000, 0
                for packet in [*stream.encode(frame), *stream.encode(None)]:
                    out.mux(packet)
            else:
                codec = "libvpx-vp9" if fmt == "webm" else "libx264"
                stream = out.add_stream(codec, rate=fps)
                stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
                if fmt == "webm":
                    stream.options = {"deadline": "realtime", "cpu-used": "8"}
                if rotation is not None:
                    stream.set_display_rotation(rotation)
                for image in frames:
                    for packet in stream.encode(av.VideoFrame.from_image(image)):
                        out.mux(packet)
                for packet in stream.encode(None):
                    out.mux(packet)
        with open(path, "rb") as fh:
            return fh.read()


def still(fmt: str) -> bytes:
    buf = BytesIO()
    moving_frames(1)[0].save(buf, fmt)
    return buf.getvalue()


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


@pytest.fixture(scope="module")
def frames() -> list[Image.Image]:
    return moving_frames()


@pytest.fixture(scope="module")
def clips(frames: list[Image.Image]) -> dict[str, bytes]:
    """One clip of each format, written by Pillow or PyAV directly."""
    return {
        "gif": pillow_animation("GIF", frames, loop=0),
        "png": pillow_animation("PNG", frames, loop=3),  # APNG: 3 plays
        "webp": pillow_animation("WEBP", frames, loop=0, quality=90),
        "mp4": video(frames),
        "mov": video(frames, "mov"),
        "webm": video(frames, "webm"),
    }


# --------------------------------------------------------------------------------------------------------------------
# Probing


@pytest.mark.parametrize(
    ("fmt", "seconds", "loop"),
    [("gif", 0.28, 0), ("png", 0.28, 2), ("webp", 0.28, 0), ("mp4", 0.16, None), ("mov", 0.16, None),
     ("webm", 0.16, None)],
)  # fmt: skip
def test_probe_reads_each_format_from_its_headers(clips: dict[str, bytes], fmt: str, seconds: float, loop: int | None):
    info = probe_clip(clips[fmt])
    assert info == ClipInfo(fmt, 4, 64, 64, pytest.approx(seconds, abs=0.002), loop)
    assert info.fps == pytest.approx(4 / seconds, rel=0.01)
    assert is_animated(clips[fmt])


@pytest.mark.parametrize("kind", ["png", "jpeg", "gif one frame", "webp one frame", "apng one frame"])
def test_a_still_is_not_a_clip(frames: list[Image.Image], kind: str):
    data = {
        "png": still("PNG"),
        "jpeg": still("JPEG"),
        "gif one frame": pillow_animation("GIF", frames[:1], [100], loop=0),
        "webp one frame": pillow_animation("WEBP", frames[:1], [100], loop=0),
        "apng one frame": pillow_animation("PNG", frames[:1], [100], loop=0),
    }[kind]
    assert probe_clip(data) is None
    assert not is_animated(data)
    with pytest.raises(ClipError, match="content image is a still image, not an animation; send an animated GIF"):
        decode_clip(data)


def test_junk_gets_the_same_errors_as_a_still_would():
    with pytest.raises(NotAnImageError, match="content image is not an image"):
        probe_clip(b"this is not a picture at all" * 4)
    with pytest.raises(UnsupportedFormatError, match="style image is a PDF file"):
        decode_clip(b"%PDF-1.4\n" + bytes(64), role="style")
    assert not is_animated(b"junk" * 10)


def test_a_video_without_pictures_is_refused():
    data = video([], audio_only=True)
    with pytest.raises(ClipError, match="content clip has sound but no pictures"):
        probe_clip(data)
    assert is_animated(data)  # it is a clip; decode_clip says what is wrong with it


# --------------------------------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize(("fmt", "bound"), [("gif", 4), ("png", 0.01), ("webp", 4), ("mp4", 4), ("webm", 4)])
def test_decode_keeps_frames_timing_and_colours(clips: dict[str, bytes], frames: list[Image.Image], fmt: str,
                                                bound: float):  # fmt: skip
    clip = decode_clip(clips[fmt])
    assert (len(clip.frames), clip.width, clip.height, clip.format) == (4, 64, 64, fmt)
    assert all(frame.mode == "RGB" and frame.size == (64, 64) for frame in clip.frames)
    assert clip.durations_ms == (DURATIONS if fmt in ("gif", "png", "webp") else [40] * 4)
    assert clip.loop == {"gif": 0, "png": 2, "webp": 0}.get(fmt)
    for got, sent in zip(clip.frames, frames, strict=True):
        assert mean_difference(got, sent) < bound  # a broken palette, compositing or colour conversion is far off


def test_gif_frames_are_composited_and_transparency_is_white():
    base = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # frame 1: transparent but for a red square
    base.paste((255, 0, 0, 255), (0, 0, 16, 16))
    second = base.copy()
    second.paste((0, 0, 255, 255), (40, 40, 56, 56))  # frame 2 adds a blue square; Pillow stores only the change
    clip = decode_clip(pillow_animation("GIF", [base, second], [100, 100], loop=0, disposal=1))
    first, last = clip.frames
    assert first.getpixel((32, 32)) == (255, 255, 255)
    assert last.getpixel((8, 8)) == (255, 0, 0)  # kept from frame 1
    assert last.getpixel((48, 48)) == (0, 0, 255)


def test_zero_delays_play_at_browser_speed(frames: list[Image.Image]):
    data = pillow_animation("GIF", frames, [0, 0, 0, 0], loop=0)
    assert probe_clip(data).seconds == pytest.approx(0.4)  # browsers show a 0-10 ms frame for 100 ms
    assert decode_clip(data).durations_ms == [100] * 4


def test_apng_default_image_is_not_a_frame(frames: list[Image.Image]):
    data = pillow_animation("PNG", frames, DURATIONS, default_image=True)  # frame 0 is only the still fallback
    clip = decode_clip(data)
    assert probe_clip(data).frames == len(clip.frames) == 3
    assert clip.durations_ms == DURATIONS[:3]
    assert mean_difference(clip.frames[0], frames[1]) < 0.01


def test_video_rotation_is_applied(frames: list[Image.Image]):
    marked = [frame.resize((64, 32)) for frame in frames]
    for frame in marked:
        frame.paste((255, 0, 0), (0, 0, 12, 12))  # red in the stored top-left corner
    data = video(marked, rotation=90)  # shown turned 90 degrees counterclockwise, like a phone clip
    info = probe_clip(data)
    clip = decode_clip(data)
    assert (info.width, info.height) == (clip.width, clip.height) == (32, 64)
    red, green, blue = clip.frames[0].getpixel((4, 59))  # top-left turned counterclockwise lands bottom-left
    assert red > 200 and green < 60 and blue < 60


# --------------------------------------------------------------------------------------------------------------------
# Limits


LIMITS = [
    ("frames", ClipLimits(max_frames=3), "content clip has 4 frames; the limit is 3"),
    ("seconds", ClipLimits(max_seconds=0.1), "content clip lasts 0.2 s; the limit is 0.1 s"),
    ("frame_pixels", ClipLimits(max_frame_pixels=4000), "content clip is 64x64 px (4,096 pixels) a frame; the limit "
     "is 4,000 pixels a frame"),
    ("total_pixels", ClipLimits(max_total_pixels=10_000), "content clip has 4 frames of 64x64 px (16,384 pixels in "
     "all); the limit is 10,000 pixels in all (2 frames at this size)"),
]  # fmt: skip


@pytest.mark.parametrize(("limit", "limits", "message"), LIMITS)
@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_each_limit_has_its_own_error(clips: dict[str, bytes], fmt: str, limit: str, limits: ClipLimits,
                                      message: str):  # fmt: skip
    info = probe_clip(clips[fmt])
    if limit == "seconds":
        message = message.replace("0.2 s", f"{info.seconds:.1f} s")
    for refuse in (lambda: check_clip(info, limits), lambda: decode_clip(clips[fmt], limits)):
        with pytest.raises(ClipLimitError) as caught:
            refuse()
        assert str(caught.value) == message
        assert caught.value.limit == limit
        assert caught.value.value > caught.value.allowed == getattr(limits, "max_" + limit)


def test_limits_pass_a_clip_within_them(clips: dict[str, bytes]):
    exact = ClipLimits(max_frames=4, max_seconds=0.28, max_frame_pixels=64 * 64, max_total_pixels=4 * 64 * 64)
    assert len(decode_clip(clips["gif"], exact).frames) == 4


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_more_frames_than_the_headers_said_is_refused_not_cut(clips: dict[str, bytes], fmt: str,
                                                              monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    import nst_core.clips as module

    real = module._probe

    def lying_probe(data: bytes, role: str) -> object:
        probe = real(data, role)
        return type(probe)(**{**probe.__dict__, "info": ClipInfo(**{**probe.info.__dict__, "frames": 2})})

    monkeypatch.setattr(module, "_probe", lying_probe)
    with pytest.raises(ClipLimitError, match="content clip has more than 3 frames; the limit is 3"):
        decode_clip(clips[fmt], ClipLimits(max_frames=3))


# --------------------------------------------------------------------------------------------------------------------
# Damaged files


def test_truncated_gif_names_the_frame(clips: dict[str, bytes]):
    data = clips["gif"]
    with pytest.raises(ClipError, match=r"frame [234] of the content clip is cut off; the file may be truncated"):
        decode_clip(data[: len(data) * 3 // 4])
    assert is_animated(data[: len(data) * 3 // 4])


@pytest.mark.parametrize("where", ["inside the last frame", "before the last frame"])
def test_truncated_mp4_names_the_frame(clips: dict[str, bytes], where: str):
    data = clips["mp4"]  # index first (faststart): the index still lists 4 frames; the file ends before one of them
    with av.open(BytesIO(data)) as container:
        last = max(container.streams.video[0].index_entries, key=lambda entry: entry.pos)
    cut = last.pos + last.size // 2 if where == "inside the last frame" else last.pos
    with pytest.raises(ClipError, match=r"frame [234] of the content clip is cut off; the file may be truncated"):
        probe_clip(data[:cut])
    with pytest.raises(ClipError, match=r"frame [234] of the content clip is cut off"):
        decode_clip(data[:cut])


def test_a_video_decoding_short_of_its_index_is_refused(clips: dict[str, bytes],
                                                        monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    import nst_core.clips as module

    real = module._decode_video

    def losing_one(*args: object) -> object:
        clip = real(*args)
        return type(clip)(clip.frames[:-1], clip.durations_ms[:-1], clip.loop, clip.format)

    monkeypatch.setattr(module, "_decode_video", losing_one)
    with pytest.raises(ClipError, match="content clip stops after frame 3 of 4; the file may be truncated"):
        decode_clip(clips["mp4"])


def test_truncated_mp4_with_its_index_at_the_end_cannot_be_read(frames: list[Image.Image]):
    data = video(frames, faststart=False)
    with pytest.raises(ClipError, match=r"content clip cannot be read as MP4 \(the file is damaged or truncated\)"):
        probe_clip(data[: len(data) // 2])


def test_truncated_webm_is_refused_not_shortened(clips: dict[str, bytes]):
    # WebM has no frame index: a cut file simply has fewer frames, but its header still says how long it lasts.
    data = clips["webm"]
    with pytest.raises(ClipError, match=r"content clip stops at 0\.\d s of 0\.2 s; the file may be truncated"):
        decode_clip(data[: len(data) // 2])


def test_video_frames_are_timed_by_their_timestamps():
    with tempfile.TemporaryDirectory() as tmp:  # a variable frame rate clip: 40, 40, 80 and 100 ms
        path = os.path.join(tmp, "vfr.mp4")
        with av.open(path, "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.options = {"bf": "0"}
            starts = dict(zip([0, 40, 80, 160], [40, 40, 80, 100], strict=True))
            for pts, image in zip(starts, moving_frames(), strict=True):
                frame = av.VideoFrame.from_image(image)
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                for packet in stream.encode(frame):
                    packet.duration = starts[packet.pts]
                    out.mux(packet)
            for packet in stream.encode(None):
                packet.duration = starts[packet.pts]
                out.mux(packet)
        with open(path, "rb") as fh:
            data = fh.read()
    assert decode_clip(data).durations_ms == [40, 40, 80, 100]
    assert probe_clip(data).seconds == pytest.approx(0.26)
