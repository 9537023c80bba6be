"""Tests for nst_core.clip_encoding: animated results as GIF, WebP and MP4, and fitting them to an upload limit.

Clips are made here (64 px, 4 frames) and read back with nst_core.clips, as the person who gets the result would see
them: the same frames, for the same time, looping the same way, in close to the same colours.
"""

from __future__ import annotations

import random
from io import BytesIO

import pytest
from clip_samples import DURATIONS, moving_frames
from PIL import Image, ImageChops, ImageFilter, ImageStat

from nst_core.clip_encoding import (
    ANIMATION_FORMATS,
    EncodedAnimation,
    encode_animation,
    encode_animation_to_fit,
    normalise_animation_format,
)
from nst_core.clips import decode_clip, probe_clip
from nst_core.encoding import content_type_for, extension_for, normalise_format
from nst_core.errors import ImageTooLargeError, ParameterError


def blocky_noise(n: int = 4, size: int = 64, seed: int = 1) -> list[Image.Image]:
    """Random 4 px blocks of 16 colours: fewer colours do not shrink them, so only fewer pixels or frames do."""
    rng = random.Random(seed)
    colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(16)]
    frames = []
    for _ in range(n):
        small = Image.new("RGB", (size // 4, size // 4))
        small.putdata([colours[rng.randrange(16)] for _ in range(small.width * small.height)])
        frames.append(small.resize((size, size), Image.Resampling.NEAREST))
    return frames


def rgb_noise(n: int = 4, size: int = 96, seed: int = 2) -> list[Image.Image]:
    """Incompressible frames: their GIF shrinks with their pixels (blocks would blur into more colours when resized)."""
    rng = random.Random(seed)
    return [Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)) for _ in range(n)]


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


@pytest.fixture(scope="module")
def frames() -> list[Image.Image]:
    return moving_frames()


# --------------------------------------------------------------------------------------------------------------------
# encode_animation


@pytest.mark.parametrize(("fmt", "loop"), [("gif", 0), ("gif", 2), ("gif", None), ("webp", 0), ("webp", 2),
                                           ("webp", None), ("mp4", None)])  # fmt: skip
def test_round_trip_keeps_frames_timing_loop_and_colours(frames: list[Image.Image], fmt: str, loop: int | None):
    data = encode_animation(frames, DURATIONS, loop, fmt)
    clip = decode_clip(data)
    assert (clip.format, len(clip.frames), clip.width, clip.height) == (fmt, 4, 64, 64)
    assert clip.durations_ms == DURATIONS  # GIF keeps these exactly too: they are whole 10 ms
    assert clip.loop == (loop if fmt != "mp4" else None)
    for got, sent in zip(clip.frames, frames, strict=True):
        assert mean_difference(got, sent) < 4  # a wrong palette or colour matrix is >10 off; neighbours 4.7+ apart


def test_gif_gradients_do_not_band(frames: list[Image.Image]):
    # The gradient has 4,096 colours; a GIF has 256. Dithered, the error is fine-grained noise that vanishes under a
    # slight blur (0.2 grey levels); banded (no dithering), the blurred frame is still off by ~2.
    clip = decode_clip(encode_animation(frames, DURATIONS, 0, "gif"))
    blur = ImageFilter.GaussianBlur(1.5)
    for got, sent in zip(clip.frames, frames, strict=True):
        assert mean_difference(got.filter(blur), sent.filter(blur)) < 0.8


def test_mp4_keeps_the_last_frame_time():
    # x264 would give these frames B-frames, whose decode-order packet durations cut the last frame short.
    clip = decode_clip(encode_animation(moving_frames(8)[:4], DURATIONS, None, "mp4"))
    assert clip.durations_ms == DURATIONS


def test_gif_times_are_rounded_to_10_ms_on_the_running_total(frames: list[Image.Image]):
    clip = decode_clip(encode_animation(frames, [33, 33, 34, 33], 0, "gif"))
    assert all(d % 10 == 0 for d in clip.durations_ms)
    assert abs(sum(clip.durations_ms) - 133) <= 5  # per-frame rounding would give 120


def test_identical_gif_frames_merge_but_keep_their_time(frames: list[Image.Image]):
    clip = decode_clip(encode_animation([frames[0], frames[0].copy(), frames[1], frames[2]], [100] * 4, 0, "gif"))
    assert clip.durations_ms == [200, 100, 100]
    assert clip.seconds == pytest.approx(0.4)


def test_mp4_has_even_sides_and_its_index_first(frames: list[Image.Image]):
    odd = [frame.crop((0, 0, 63, 47)) for frame in frames]
    data = encode_animation(odd, DURATIONS, None, "mp4")
    clip = decode_clip(data)
    assert (clip.width, clip.height) == (62, 46)  # the odd last column and row are cropped, not padded
    assert mean_difference(clip.frames[0], odd[0].crop((0, 0, 62, 46))) < 4
    assert clip.durations_ms == DURATIONS
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # +faststart: Discord can play it while it downloads


def test_nothing_from_the_input_frames_is_written(frames: list[Image.Image]):
    tagged = frames[0].copy()
    tagged.info = {"comment": b"secret-comment", "exif": b"Exif\x00\x00secret-exif", "icc_profile": b"secret-icc"}
    for fmt in ANIMATION_FORMATS:
        data = encode_animation([tagged, *frames[1:]], DURATIONS, 0, fmt)
        assert b"secret" not in data


def test_bad_arguments_are_parameter_errors(frames: list[Image.Image]):
    with pytest.raises(ParameterError, match="an animation is written as gif, webp or mp4"):
        encode_animation(frames, DURATIONS, 0, "png")
    with pytest.raises(ParameterError, match=r"one duration per frame \(4\)"):
        encode_animation(frames, DURATIONS[:3], 0, "gif")
    with pytest.raises(ParameterError, match="for MP4: 0 to 51"):
        encode_animation(frames, DURATIONS, None, "mp4", quality=60)
    with pytest.raises(ParameterError, match="all frames the same size"):
        encode_animation([frames[0], frames[1].resize((32, 32))], [100, 100], 0, "webp")


def test_format_tables_know_animations_but_stills_refuse_them():
    assert normalise_animation_format(" GIF ") == "gif"
    assert [content_type_for(f) for f in ANIMATION_FORMATS] == ["image/gif", "image/webp", "video/mp4"]
    assert [extension_for(f) for f in ANIMATION_FORMATS] == ["gif", "webp", "mp4"]
    for fmt in ("gif", "mp4"):
        with pytest.raises(ValueError, match="use png, jpeg or webp"):
            normalise_format(fmt)
    assert normalise_format("jpg") == "jpeg"


# --------------------------------------------------------------------------------------------------------------------
# encode_animation_to_fit


def test_fits_as_the_preferred_format_when_there_is_room(frames: list[Image.Image]):
    result = encode_animation_to_fit(frames, DURATIONS, 0, 8 * 1024 * 1024)
    assert isinstance(result, EncodedAnimation)
    assert (result.format, result.content_type, result.extension) == ("gif", "image/gif", "gif")
    assert (result.frames, result.duration_ms, result.width, result.height) == (4, 280, 64, 64)
    assert not result.reduced
    assert result.note.startswith("GIF (") and "fit" not in result.note
    assert result.data == encode_animation(frames, DURATIONS, 0, "gif")


def test_switches_to_mp4_when_the_gif_is_too_big(frames: list[Image.Image]):
    gif = len(encode_animation(frames, DURATIONS, 0, "gif"))
    mp4 = len(encode_animation(frames, DURATIONS, None, "mp4"))
    assert mp4 < gif // 2
    limit = (gif + mp4) // 2
    result = encode_animation_to_fit(frames, DURATIONS, 0, limit)
    assert (result.format, result.content_type, result.reduced) == ("mp4", "video/mp4", False)
    assert len(result.data) <= limit
    assert result.note.startswith("re-encoded as MP4 (") and result.note.endswith(" KB")
    assert decode_clip(result.data).durations_ms == DURATIONS


def test_a_small_limit_shrinks_the_frames_and_keeps_the_playing_time():
    frames = rgb_noise()  # 96 px: 64 colours take a quarter off, 72 px just over 40%; half the bytes needs 54 px
    full = len(encode_animation(frames, DURATIONS, 0, "gif"))
    result = encode_animation_to_fit(frames, DURATIONS, 0, full // 2, alternatives=(), min_long_side=32)
    assert len(result.data) <= full // 2
    assert result.reduced and result.format == "gif"
    assert result.width < 96 and f"at {result.width}x{result.height} px" in result.note and "to fit" in result.note
    clip = decode_clip(result.data)
    assert (len(clip.frames), clip.width, clip.seconds) == (4, result.width, pytest.approx(0.28))


def test_a_smaller_limit_drops_every_other_frame_and_keeps_the_playing_time():
    frames = blocky_noise()  # 64 px: no room to shrink with the default 64 px floor
    full = len(encode_animation(frames, DURATIONS, 0, "gif"))
    result = encode_animation_to_fit(frames, DURATIONS, 0, full * 6 // 10, alternatives=())
    assert len(result.data) <= full * 6 // 10
    assert "fps (every other frame)" in result.note and result.reduced
    clip = decode_clip(result.data)
    assert clip.durations_ms == [100, 180]  # 40 + 60, 80 + 100
    assert mean_difference(clip.frames[1], frames[2]) < 4  # the kept frames are the right ones


def test_a_one_frame_animation_can_still_shrink():
    frame = rgb_noise(n=1)
    full = len(encode_animation(frame, [500], 0, "gif"))
    result = encode_animation_to_fit(frame, [500], 0, full // 2, alternatives=(), min_long_side=32)
    assert len(result.data) <= full // 2 and result.width < 96 and result.duration_ms == 500


def test_an_impossible_limit_says_so(frames: list[Image.Image]):
    with pytest.raises(ImageTooLargeError) as caught:
        encode_animation_to_fit(frames, DURATIONS, 0, 200)
    message = str(caught.value)
    assert message.startswith("animated result cannot be encoded under 200 bytes (the smallest encoding tried, MP4")
    assert caught.value.role == "result"


def test_the_preferred_format_and_alternatives_are_followed(frames: list[Image.Image]):
    result = encode_animation_to_fit(frames, DURATIONS, 1, 8 * 1024 * 1024, prefer="webp", alternatives=("gif",))
    assert (result.format, result.extension) == ("webp", "webp")
    assert probe_clip(result.data).loop == 1
    with pytest.raises(ParameterError):
        encode_animation_to_fit(frames, DURATIONS, 0, 1000, alternatives=("avi",))


def test_webp_to_fit_reads_back(frames: list[Image.Image]):
    result = encode_animation_to_fit(frames, DURATIONS, 0, 10**6, prefer="webp")
    clip = decode_clip(BytesIO(result.data).getvalue())
    assert clip.durations_ms == DURATIONS and clip.loop == 0
