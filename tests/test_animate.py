"""Animations through the engine: the temporal term steadies the frames (Lai et al.'s warping error against frames
stylised one by one), progress speaks of frames over the whole clip, a cancel stops a clip, and `run_job` turns an
animated GIF or MP4 into an animation with the input's frame count and timing (and a still into a timelapse)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from nst_core.animate import planned_iterations, stylize_clip
from nst_core.clip_encoding import encode_animation
from nst_core.clips import ClipLimits, decode_clip
from nst_core.device import resolve_placement
from nst_core.errors import ClipLimitError, JobCancelled
from nst_core.flow import frame_pair, warping_error
from nst_core.job import run_job
from nst_core.losses import LevelImages, TemporalLoss
from nst_core.optimize import stylize
from nst_core.params import StyleParams
from nst_core.progress import EventKind

CPU = resolve_placement("cpu", "fp32")
SIZE = 64


def pan(image: Image.Image, frames: int = 4, size: int = SIZE) -> list[Image.Image]:
    """A slow pan with a slight zoom over `image`: what a phone clip of a still scene looks like."""
    side = min(image.size) * 3 // 4
    out = []
    for t in range(frames):
        crop = int(side / (1 + 0.02 * t))
        x0 = image.width // 8 + t * max(1, image.width // 60)
        y0 = (image.height - crop) // 2
        out.append(image.crop((x0, y0, x0 + crop, y0 + crop)).resize((size, size), Image.Resampling.LANCZOS))
    return out


def gif_bytes(frames: list[Image.Image], duration: int = 80, loop: int = 0) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration, loop=loop)
    return buf.getvalue()


def floats(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(image.convert("RGB")).astype(np.float32) / 255.0 for image in images]


PARAMS = StyleParams(size=SIZE, iterations=24, scales=1, seed=3, device="cpu", precision="fp32")


def test_the_temporal_term_pulls_the_pixels_towards_the_warped_previous_frame():
    # (neural-style-tf's temporal loss had no gradient, so it did nothing: this one must reach the pixels)
    reference = torch.full((1, 3, 8, 8), 0.5)
    mask = torch.ones((1, 1, 8, 8))
    mask[..., :4] = 0  # occluded: no pull there
    term = TemporalLoss()
    term.set_references([(reference, mask)])
    x = torch.rand((1, 3, 8, 8)).requires_grad_(True)
    term({}, x).backward()
    assert x.grad is not None
    assert float(x.grad[..., 4:].abs().sum()) > 0
    assert float(x.grad[..., :4].abs().sum()) == 0.0
    # at a coarser level the reference and the mask follow the level's size
    term.retarget(LevelImages(content=torch.zeros((1, 3, 4, 4)), styles=(), encode=None))  # type: ignore[arg-type]
    assert float(term({}, torch.full((1, 3, 4, 4), 0.5))) == pytest.approx(0.0)


def test_a_clip_is_steadier_than_its_frames_stylised_one_by_one(content_image, style_image):
    frames = pan(content_image)
    clip = stylize_clip(frames, [style_image], PARAMS, CPU, seed=3)
    alone = [stylize(frame, [style_image], PARAMS, CPU, seed=3).image for frame in frames]
    inputs = floats(frames)
    steady, flicker = warping_error(inputs, floats(clip.frames)), warping_error(inputs, floats(alone))
    assert steady < 0.5 * flicker, (steady, flicker)
    # steady must not mean unstylised: each frame moved as far from its photo as the frames done alone
    moved = np.mean([np.abs(a - b).mean() for a, b in zip(floats(clip.frames), inputs, strict=True)])
    moved_alone = np.mean([np.abs(a - b).mean() for a, b in zip(floats(alone), inputs, strict=True)])
    assert moved > 0.6 * moved_alone, (moved, moved_alone)


def test_clip_progress_counts_frames_and_iterations_over_the_whole_clip(content_image, style_image):
    frames = pan(content_image, 3)
    events = []
    params = PARAMS.replace(iterations=12, early_stop=0.0)
    outcome = stylize_clip(frames, [style_image], params, CPU, seed=1, progress=events.append)
    starts = [e for e in events if e.kind == EventKind.FRAME]
    assert [(e.frame, e.frames) for e in starts] == [(1, 3), (2, 3), (3, 3)]
    steps = [e for e in events if e.kind == EventKind.ITERATION]
    assert [e.iteration for e in steps] == list(range(1, outcome.iterations + 1))  # one count over all frames
    planned = planned_iterations(params, SIZE, SIZE, 3)
    assert outcome.iterations == planned and {e.total for e in steps} == {planned}
    assert all(e.eta is not None for e in steps if e.frame > 1)  # the whole clip's ETA, once a pace is known
    assert steps[-1].eta == pytest.approx(0.0, abs=1.0)
    assert any("temporal" in e.losses for e in steps if e.frame > 1)
    assert all("temporal" not in e.losses for e in steps if e.frame == 1)
    # the preview of a later frame is the latest finished frame, at the output size
    late = next(e for e in steps if e.frame == 3)
    assert late.preview is not None and late.preview(SIZE).size == (SIZE, SIZE)


def test_a_cancel_stops_a_clip_within_a_frame(content_image, style_image):
    frames = pan(content_image, 4)
    seen = []

    def cancel() -> bool:
        return any(e.frame == 2 and e.kind == EventKind.ITERATION for e in seen)

    with pytest.raises(JobCancelled):
        stylize_clip(
            frames, [style_image], PARAMS.replace(iterations=8), CPU, seed=1, progress=seen.append, should_cancel=cancel
        )
    assert max(e.frame for e in seen) == 2


def test_run_job_turns_a_gif_into_a_gif_with_its_frames_and_timing(content_image, style_bytes):
    frames = pan(content_image, 4)
    params = PARAMS.replace(iterations=12, frame_iterations=4)
    result = run_job(params, gif_bytes(frames, duration=80, loop=0), [style_bytes])
    assert result.format == "gif" and result.animated and result.frames == 4
    assert result.duration_ms == 320
    back = decode_clip(result.image)
    assert len(back.frames) == 4 and back.durations_ms == [80] * 4 and back.loop == 0
    assert back.frames[0].size == (SIZE, SIZE)
    # the frames were painted, not passed through
    assert np.abs(floats(back.frames)[0] - floats(frames)[0]).mean() > 0.03


def test_run_job_turns_an_mp4_into_an_mp4(content_image, style_bytes):
    frames = pan(content_image, 4)
    clip = encode_animation(frames, [100] * 4, None, "mp4")
    result = run_job(PARAMS.replace(iterations=8, frame_iterations=2), clip, [style_bytes])
    assert result.format == "mp4" and result.content_type == "video/mp4"
    back = decode_clip(result.image)
    assert len(back.frames) == 4 and sum(back.durations_ms) == pytest.approx(400, abs=2)


def test_run_job_fits_an_animation_to_a_byte_limit_and_says_how(content_image, style_bytes):
    frames = pan(content_image, 4)
    params = PARAMS.replace(iterations=8, frame_iterations=2)
    result = run_job(params, gif_bytes(frames), [style_bytes], max_output_bytes=6_000)
    assert len(result.image) <= 6_000
    assert result.notes, "the member is told what was done to fit"
    assert result.frames == len(decode_clip(result.image).frames) >= 2


def test_run_job_refuses_a_clip_over_its_limits_before_any_work(content_image, style_bytes):
    data = gif_bytes(pan(content_image, 4))
    events = []
    with pytest.raises(ClipLimitError, match="4 frames; the limit is 3"):
        run_job(PARAMS, data, [style_bytes], clip_limits=ClipLimits(max_frames=3), progress=events.append)
    assert events == []


def test_a_still_can_bring_a_timelapse_of_its_optimisation(content_bytes, style_bytes):
    result = run_job(PARAMS.replace(iterations=12), content_bytes, [style_bytes], timelapse_frames=6)
    assert result.frames == 1 and result.format == "png"
    assert result.timelapse is not None
    lapse = decode_clip(result.timelapse)
    assert len(lapse.frames) == 6
    assert lapse.durations_ms[-1] > lapse.durations_ms[0]  # the finished picture is held at the end
    # it starts near the photo and ends at the result
    first, last = floats(lapse.frames[:1])[0], floats(lapse.frames[-1:])[0]
    result_image = Image.open(io.BytesIO(result.image)).convert("RGB").resize(lapse.frames[0].size)
    assert np.abs(last - floats([result_image])[0]).mean() < np.abs(first - floats([result_image])[0]).mean()


def test_flow_warps_a_shifted_frame_back_onto_the_next(content_image):
    image = np.asarray(content_image.convert("RGB").resize((96, 64)))
    earlier, later = image[:, :64], image[:, 4:68]  # the camera moved 4 px right
    pair = frame_pair(later, earlier)
    assert float(np.median(pair.flow[..., 0])) == pytest.approx(4.0, abs=0.5)
    moved = pair.warp(earlier.astype(np.float32) / 255)
    assert np.abs(moved - later / 255.0).mean() < 0.25 * np.abs(earlier / 255.0 - later / 255.0).mean()
