"""The one job function: bytes in, stylised image bytes out. The CLI, the embedded executor, the Celery worker
and (through them) the bot all call `run_job`, so a job behaves the same wherever it runs.

It decodes the inputs safely (an animated content image or clip as an animation, `nst_core.clips`), picks the
device, runs the optimisation (`optimize.stylize` for a still, `animate.stylize_clip` for an animation), and on GPU
out-of-memory frees the memory and retries: first tile by tile at the same size (`tiles="auto"` and an output
bigger than one tile: `nst_core.tiles`), then at 0.75x the size down to `params.min_size`, telling the progress
hook (kind "downsized"). The result is encoded without metadata, optionally fitted to a byte limit (an upload limit); a
still can also bring its timelapse (`nst_core.timelapse`).
"""

from __future__ import annotations

import gc
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from PIL import Image

from nst_core.animate import stylize_clip
from nst_core.clip_encoding import (
    EncodedAnimation,
    encode_animation,
    encode_animation_to_fit,
    normalise_animation_format,
)
from nst_core.clips import DEFAULT_CLIP_LIMITS, Clip, ClipLimits, decode_if_animated
from nst_core.color import colour_strategy
from nst_core.device import is_out_of_memory, peak_memory_bytes, reset_peak_memory, resolve_placement
from nst_core.encoding import encode_image, encode_to_fit, normalise_format
from nst_core.errors import NSTError, ParameterError
from nst_core.images import DEFAULT_MAX_PIXELS, decode_image, style_role
from nst_core.optimize import image_to_tensor, stylize
from nst_core.params import StyleParams, check_content_shape
from nst_core.progress import CancelCheck, EventKind, ProgressCallback, ProgressEvent
from nst_core.pyramid import plan_levels, top_levels
from nst_core.result import JobResult
from nst_core.timelapse import TimelapseRecorder

__all__ = ["JobResult", "run_job"]

#: Each out-of-memory retry multiplies the size by this.
OOM_SHRINK = 0.75
#: A timelapse has 0 or this many frames (the bot asks for 24).
MIN_TIMELAPSE_FRAMES, MAX_TIMELAPSE_FRAMES = 2, 120
#: An animation's output format, for "auto", from the format it came in.
FOLLOW_INPUT = {"gif": "gif", "png": "gif", "webp": "webp", "mp4": "mp4", "webm": "mp4", "mov": "mp4"}

T = TypeVar("T")


def run_job(
    params: StyleParams,
    content: bytes,
    styles: Sequence[bytes],
    *,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    output_format: str = "png",
    max_output_bytes: int | None = None,
    max_input_pixels: int = DEFAULT_MAX_PIXELS,
    clip_limits: ClipLimits = DEFAULT_CLIP_LIMITS,
    animation_format: str = "auto",
    timelapse_frames: int = 0,
    continue_from: bytes | None = None,
) -> JobResult:
    """Stylise `content` with `styles` (encoded image bytes) and return the encoded result.

    An animated `content` (GIF, APNG, WebP, MP4, WebM, MOV) within `clip_limits` gives an animation, encoded as
    `animation_format` ("auto": as the input came, GIF for APNG and MP4 for other videos; with `max_output_bytes`,
    MP4 when the GIF would not fit). A still gives `output_format`, and with `timelapse_frames` also a small GIF of
    its optimisation. `continue_from` (a still's earlier result, such as the image a member wants at twice the size)
    is where a still starts instead: only the top level runs, with `params.iterations`, at `params.size`, so the
    result keeps that picture's strokes and adds detail. Raises an `NSTError` subclass for anything the user can
    fix (bad image, bad parameter, unknown device) and `JobCancelled` when `should_cancel()` returns true.
    """
    started = time.perf_counter()
    output_format = normalise_format(output_format)  # a bad format fails now, not after the optimisation
    if animation_format != "auto":
        animation_format = normalise_animation_format(animation_format)
    params.check_styles(len(styles))
    if max_output_bytes is not None and max_output_bytes < 1024:
        raise ParameterError("max_output_bytes", max_output_bytes, "allowed range: 1024 bytes or more")
    if timelapse_frames and not MIN_TIMELAPSE_FRAMES <= timelapse_frames <= MAX_TIMELAPSE_FRAMES:
        raise ParameterError("timelapse_frames", timelapse_frames,
                             f"allowed range: 0 or {MIN_TIMELAPSE_FRAMES} to {MAX_TIMELAPSE_FRAMES}")
    seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
    params = params.replace(seed=seed)
    clip = decode_if_animated(content, clip_limits, role="content")
    content_img = clip.frames[0] if clip is not None else decode_image(content, role="content",
                                                                       max_pixels=max_input_pixels)
    check_content_shape(content_img.width, content_img.height, params.size)
    style_imgs = [decode_image(data, role=style_role(i, len(styles)), max_pixels=max_input_pixels)
                  for i, data in enumerate(styles)]
    if continue_from is not None and clip is not None:
        raise ParameterError("continue_from", "an image", "allowed for a still only, not for an animation")
    start_img = (decode_image(continue_from, role="previous result", max_pixels=max_input_pixels)
                 if continue_from is not None else None)
    decoded = time.perf_counter()

    placement = resolve_placement(params.device, params.precision)
    reset_peak_memory(placement.device)
    notes: list[str] = []
    if clip is not None:
        frames = clip.frames
        outcome, params = _retrying_smaller(params, placement.device, progress, started, notes, lambda p: stylize_clip(
            frames, style_imgs, p, placement, seed=seed, looping=clip.loop is not None, progress=progress,
            should_cancel=should_cancel))
        optimised = time.perf_counter()
        encoded = _encode_animation(outcome.frames, clip, animation_format, max_output_bytes, notes)
        data, fmt, width, height = encoded.data, encoded.format, encoded.width, encoded.height
        frame_count, duration_ms, timelapse = encoded.frames, encoded.duration_ms, None
    else:
        recorder = TimelapseRecorder(timelapse_frames) if timelapse_frames else None
        hook = recorder.hook(progress) if recorder is not None else progress
        still, params = _retrying_smaller(params, placement.device, progress, started, notes, lambda p: stylize(
            content_img, style_imgs, p, placement, seed=seed, progress=hook, should_cancel=should_cancel,
            **_continuing(p, content_img, start_img)))
        optimised = time.perf_counter()
        data, fmt, width, height = _encode_still(still.image, output_format, max_output_bytes, notes)
        frame_count, duration_ms = 1, 0
        timelapse = recorder.gif(still.image) if recorder is not None else None
        outcome = still
    finished = time.perf_counter()
    return JobResult(
        image=data, format=fmt, width=width, height=height, iterations=outcome.iterations,
        losses=outcome.losses,
        timings={"decode": decoded - started, "setup": outcome.setup_seconds, "optimise": outcome.optimise_seconds,
                 "encode": finished - optimised, "total": finished - started},
        params=params.to_dict(), device=str(placement.device), precision=placement.precision, notes=notes,
        frames=frame_count, duration_ms=duration_ms, timelapse=timelapse,
        peak_memory_bytes=peak_memory_bytes(placement.device),
    )


def _retrying_smaller(params: StyleParams, device: torch.device, progress: ProgressCallback | None, started: float,
                      notes: list[str], attempt: Callable[[StyleParams], T]) -> tuple[T, StyleParams]:
    """`attempt(params)`; on GPU out-of-memory, free the memory and try again tile by tile (when `tiles` is auto and
    the output is bigger than one tile), then at 0.75x the size (down to `params.min_size`), telling the progress
    hook and `notes`. Returns the outcome and the parameters used."""
    while True:
        try:
            return attempt(params), params
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            del exc
        _free_device_memory(device)
        if params.tiles == "auto" and params.size > params.tile_size:
            retry = params.replace(tiles="on")
            note = (f"out of GPU memory at {params.size} px; retrying tile by tile ({params.tile_size} px tiles) "
                    "at the same size")
        else:
            smaller = int(params.size * OOM_SHRINK)
            if smaller < params.min_size:
                raise NSTError(f"not enough GPU memory to stylise even at {params.size} px; try a smaller size "
                               "or run on the CPU") from None
            retry = params.replace(size=smaller)
            note = f"out of GPU memory at {params.size} px; retrying at {smaller} px"
        notes.append(note)
        if progress is not None:
            progress(ProgressEvent(kind=EventKind.DOWNSIZED, iteration=0, total=params.iterations, scale=1,
                                   scales=params.scales, width=retry.size, height=retry.size, losses={},
                                   elapsed=time.perf_counter() - started, eta=None, message=note))
        params = retry


def _continuing(params: StyleParams, content: Image.Image, start: Image.Image | None) -> dict[str, Any]:
    """`stylize`'s arguments to continue from `start`: the top level alone, from `start` as the colour strategy
    prepares a content (luminance for luminance transfer), resized to the level."""
    if start is None:
        return {}
    top = top_levels(plan_levels(params, content.width, content.height), 1, params.iterations)
    prepared = colour_strategy(params.preserve_colors).prepare_content(image_to_tensor(start.convert("RGB")))
    return {"plan": top, "start": prepared}


def _encode_still(image: Image.Image, output_format: str, max_output_bytes: int | None,
                  notes: list[str]) -> tuple[bytes, str, int, int]:
    if max_output_bytes is None:
        return encode_image(image, output_format), output_format, image.width, image.height
    encoded = encode_to_fit(image, max_output_bytes, prefer=output_format)
    if encoded.format != output_format or encoded.downscaled:
        notes.append(encoded.note)
    return encoded.data, encoded.format, encoded.width, encoded.height


def _encode_animation(frames: list[Image.Image], clip: Clip, animation_format: str, max_output_bytes: int | None,
                      notes: list[str]) -> EncodedAnimation:
    """The stylised frames with the input's timing, as `animation_format` says (see `run_job`)."""
    explicit = animation_format != "auto"
    fmt = animation_format if explicit else FOLLOW_INPUT.get(clip.format, "gif")
    loop = clip.loop if clip.loop is not None else 0  # a GIF or WebP made from a video loops, as GIFs do
    if max_output_bytes is None:
        data = encode_animation(frames, clip.durations_ms, loop, fmt)
        return EncodedAnimation(data=data, format=fmt, width=frames[0].width, height=frames[0].height,
                                frames=len(frames), duration_ms=sum(clip.durations_ms), quality=None,
                                reduced=False, note="")
    alternatives: tuple[str, ...] = () if explicit or fmt == "mp4" else ("mp4",)
    encoded = encode_animation_to_fit(frames, clip.durations_ms, loop, max_output_bytes, prefer=fmt,
                                      alternatives=alternatives)
    if encoded.format != fmt or encoded.reduced:
        notes.append(encoded.note)
    return encoded


def _free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
