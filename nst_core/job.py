"""The one job function: bytes in, stylised image bytes out. The CLI, the embedded executor, the Celery worker
and (through them) the bot all call `run_job`, so a job behaves the same wherever it runs.

It decodes the inputs safely, picks the device, runs the optimisation, and on GPU out-of-memory frees the memory
and retries at 0.75x the size down to `params.min_size`, telling the progress hook (kind "downsized"). The result is
encoded without metadata, optionally fitted to a byte limit (an upload limit).
"""

from __future__ import annotations

import gc
import secrets
import time
from collections.abc import Sequence

import torch

from nst_core.device import is_out_of_memory, resolve_placement
from nst_core.encoding import EncodedImage, encode_image, encode_to_fit, normalise_format
from nst_core.errors import NSTError, ParameterError
from nst_core.images import DEFAULT_MAX_PIXELS, decode_image, style_role
from nst_core.optimize import stylize
from nst_core.params import StyleParams, check_content_shape
from nst_core.progress import CancelCheck, EventKind, ProgressCallback, ProgressEvent
from nst_core.result import JobResult

__all__ = ["JobResult", "run_job"]

#: Each out-of-memory retry multiplies the size by this.
OOM_SHRINK = 0.75


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
) -> JobResult:
    """Stylise `content` with `styles` (encoded image bytes) and return the encoded result.

    Raises an `NSTError` subclass for anything the user can fix (bad image, bad parameter, unknown device) and
    `JobCancelled` when `should_cancel()` returns true.
    """
    started = time.perf_counter()
    output_format = normalise_format(output_format)  # a bad format fails now, not after the optimisation
    params.check_styles(len(styles))
    if max_output_bytes is not None and max_output_bytes < 1024:
        raise ParameterError("max_output_bytes", max_output_bytes, "allowed range: 1024 bytes or more")
    seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
    params = params.replace(seed=seed)
    content_img = decode_image(content, role="content", max_pixels=max_input_pixels)
    check_content_shape(content_img.width, content_img.height, params.size)
    style_imgs = [decode_image(data, role=style_role(i, len(styles)), max_pixels=max_input_pixels)
                  for i, data in enumerate(styles)]
    decoded = time.perf_counter()

    placement = resolve_placement(params.device, params.precision)
    notes: list[str] = []
    while True:
        try:
            outcome = stylize(content_img, style_imgs, params, placement, seed=seed, progress=progress,
                              should_cancel=should_cancel)
            break
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            del exc
            _free_device_memory(placement.device)
            smaller = int(params.size * OOM_SHRINK)
            if smaller < params.min_size:
                raise NSTError(f"not enough GPU memory to stylise even at {params.size} px; try a smaller size "
                               "or run on the CPU") from None
            note = f"out of GPU memory at {params.size} px; retrying at {smaller} px"
            notes.append(note)
            if progress is not None:
                progress(ProgressEvent(kind=EventKind.DOWNSIZED, iteration=0, total=params.iterations, scale=1,
                                       scales=params.scales, width=smaller, height=smaller, losses={},
                                       elapsed=time.perf_counter() - started, eta=None, message=note))
            params = params.replace(size=smaller)
    optimised = time.perf_counter()

    encoded: EncodedImage | None = None
    if max_output_bytes is not None:
        encoded = encode_to_fit(outcome.image, max_output_bytes, prefer=output_format)
        data, fmt, width, height = encoded.data, encoded.format, encoded.width, encoded.height
        if encoded.format != output_format or encoded.downscaled:
            notes.append(encoded.note)
    else:
        fmt = output_format
        data = encode_image(outcome.image, fmt)
        width, height = outcome.image.size
    finished = time.perf_counter()
    return JobResult(
        image=data, format=fmt, width=width, height=height, iterations=outcome.iterations,
        losses=outcome.losses,
        timings={"decode": decoded - started, "setup": outcome.setup_seconds, "optimise": outcome.optimise_seconds,
                 "encode": finished - optimised, "total": finished - started},
        params=params.to_dict(), device=str(placement.device), precision=placement.precision, notes=notes,
    )


def _free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
