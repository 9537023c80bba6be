"""Stylising an animation so it does not flicker: Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos".

Frame 1 runs the whole coarse-to-fine pyramid as a still does. Every later frame starts from the previous frame's
result warped onto it along the optical flow of the input frames (`nst_core.flow`), re-runs only the top level(s)
with a fraction of the iterations, and adds the temporal term (`losses.TemporalLoss`): it keeps the result close to
that warped previous frame wherever the flow is trusted. A looping animation's last frame is also tied to the first,
so the loop does not jump. The same network, targets and colour strategy serve every frame.

Progress counts iterations over the whole clip, says which frame runs (`frame` of `frames`), estimates the time
left for the whole clip, and previews the latest finished frame.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from nst_core.device import Placement
from nst_core.flow import frame_pair
from nst_core.losses import LossTerm, TemporalLoss
from nst_core.optimize import StylizeOutcome, stylize
from nst_core.params import StyleParams
from nst_core.progress import CancelCheck, EventKind, ProgressCallback, ProgressEvent
from nst_core.pyramid import Level, plan_levels, top_levels

__all__ = ["FRAME_ITERATION_SHARE", "FRAME_LEVELS", "ClipOutcome", "frame_iterations", "planned_iterations",
           "stylize_clip"]

#: Pyramid levels a later frame re-runs (the top ones): its warped start already has the coarse structure.
FRAME_LEVELS = 1
#: A later frame's iterations, as a share of `params.iterations`, unless `params.frame_iterations` says.
FRAME_ITERATION_SHARE = 0.25
#: A looping animation ties its last frame to its first only when it has at least this many frames.
LOOP_MIN_FRAMES = 3


@dataclass
class ClipOutcome:
    frames: list[Image.Image]  # the stylised frames, in order, all at the output size
    iterations: int
    losses: dict[str, float]  # the last frame's
    setup_seconds: float
    optimise_seconds: float


def frame_iterations(params: StyleParams) -> int:
    """Iterations for each frame after the first."""
    if params.frame_iterations is not None:
        return params.frame_iterations
    return max(1, round(params.iterations * FRAME_ITERATION_SHARE))


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) float32 -> (1, C, H, W)."""
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).unsqueeze(0).float()


def _to_array(tensor: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) -> (H, W, 3) float32."""
    return tensor.detach()[0].float().cpu().permute(1, 2, 0).contiguous().numpy()


class _ClipProgress:
    """Turns each frame's own progress into the clip's: iterations, total and ETA over all frames."""

    def __init__(self, progress: ProgressCallback | None, frames: int, first: list[Level], later: list[Level]) -> None:
        self.progress = progress
        self.frames = frames
        self.first_total = sum(level.iterations for level in first)
        self.later_total = sum(level.iterations for level in later)
        self.top_pixels = later[-1].pixels
        self.done = 0  # iterations of finished frames
        self.frame = 0  # 0-based frame now running
        self.frame_started = time.perf_counter()
        self.later_seconds: float | None = None  # how long the last finished later frame took
        self.top_pace: float | None = None  # seconds per iteration at the top level, measured in frame 1
        self.last: ProgressEvent | None = None
        self.latest: Image.Image | None = None  # the latest finished frame, for previews

    def begin(self, frame: int) -> None:
        self.frame = frame
        self.frame_started = time.perf_counter()
        self.last = None
        self._send(EventKind.FRAME, None, message=f"frame {frame + 1}/{self.frames}")

    def finish(self, outcome: StylizeOutcome) -> None:
        self.done += outcome.iterations
        if self.frame > 0:
            self.later_seconds = time.perf_counter() - self.frame_started
        self.latest = outcome.image

    def _frame_estimate(self) -> float | None:
        if self.later_seconds is not None:
            return self.later_seconds
        return None if self.top_pace is None else self.top_pace * self.later_total

    def _learn_pace(self, event: ProgressEvent) -> None:
        """In frame 1, the time per iteration scaled to the top level's pixels (as `RunClock.eta` scales)."""
        last = self.last
        if (self.frame == 0 and event.kind == EventKind.ITERATION and last is not None
                and last.kind == EventKind.ITERATION and last.scale == event.scale):
            steps = max(event.iteration - last.iteration, 1)
            pace = (event.elapsed - last.elapsed) / steps * self.top_pixels / max(event.width * event.height, 1)
            self.top_pace = pace

    def hook(self, event: ProgressEvent) -> None:
        self._learn_pace(event)
        self.last = event
        self._send(event.kind, event)

    def _send(self, kind: EventKind, event: ProgressEvent | None, *, message: str = "") -> None:
        if self.progress is None:
            return
        left = self.frames - self.frame - 1
        here_total = event.total if event is not None else (self.first_total if self.frame == 0 else self.later_total)
        estimate = self._frame_estimate()
        eta = None
        if event is not None and event.eta is not None and estimate is not None:
            eta = event.eta + left * estimate
        preview = event.preview if event is not None else None
        if self.latest is not None:
            latest = self.latest

            def preview(max_side: int = 256) -> Image.Image:
                image = latest.copy()
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                return image

        base = event or ProgressEvent(kind=kind, iteration=0, total=0, scale=1, scales=1, width=0, height=0,
                                      losses={}, elapsed=0.0, eta=None)
        self.progress(replace(
            base, kind=kind, iteration=self.done + (event.iteration if event is not None else 0),
            total=self.done + here_total + left * self.later_total, eta=eta, message=message or base.message,
            frame=self.frame + 1, frames=self.frames, preview=preview))


def stylize_clip(frames: Sequence[Image.Image], styles: Sequence[Image.Image], params: StyleParams,
                 placement: Placement, *, seed: int, looping: bool = False, progress: ProgressCallback | None = None,
                 should_cancel: CancelCheck | None = None) -> ClipOutcome:
    """Stylise the frames of an animation (RGB, all one size) as one steady clip; see the module's docstring.

    `looping`: the animation plays in a loop (a GIF's or WebP's loop count), so its last frame should lead back
    into the first. Raises `JobCancelled` when `should_cancel()` turns true.
    """
    if not frames:
        raise ValueError("an animation needs at least one frame")
    width, height = frames[0].size
    plan, later = _plans(params, width, height)
    out_size = plan[-1].size
    inputs = [np.asarray(f if f.size == out_size else f.resize(out_size, Image.Resampling.LANCZOS)) for f in frames]
    clock = _ClipProgress(progress, len(frames), plan, later)
    temporal = TemporalLoss()
    tie_loop = looping and len(frames) >= LOOP_MIN_FRAMES
    results: list[Image.Image] = []
    first_raw: np.ndarray | None = None
    previous_raw: np.ndarray | None = None
    setup = optimise = 0.0
    outcome: StylizeOutcome | None = None
    for t, frame in enumerate(frames):
        clock.begin(t)
        if previous_raw is None:
            outcome = stylize(frame, styles, params, placement, seed=seed, progress=clock.hook,
                              should_cancel=should_cancel)
        else:
            pair = frame_pair(inputs[t], inputs[t - 1])
            start = pair.warp(previous_raw)
            references = [(_to_tensor(start), _to_tensor(pair.mask))]
            if tie_loop and t == len(frames) - 1 and first_raw is not None:
                back = frame_pair(inputs[t], inputs[0])
                references.append((_to_tensor(back.warp(first_raw)), _to_tensor(back.mask)))
            temporal.set_references([(image.to(placement.device), mask.to(placement.device))
                                     for image, mask in references])
            extra: list[tuple[LossTerm, float]] = [(temporal, params.temporal_weight)] if params.temporal_weight else []
            outcome = stylize(frame, styles, params, placement, seed=seed + t, progress=clock.hook,
                              should_cancel=should_cancel, plan=later, start=_to_tensor(start), extra_terms=extra)
        clock.finish(outcome)
        results.append(outcome.image)
        previous_raw = _to_array(outcome.raw)
        if first_raw is None:
            first_raw = previous_raw
        setup += outcome.setup_seconds
        optimise += outcome.optimise_seconds
    assert outcome is not None
    return ClipOutcome(frames=results, iterations=clock.done, losses=outcome.losses, setup_seconds=setup,
                       optimise_seconds=optimise)


def _plans(params: StyleParams, width: int, height: int) -> tuple[list[Level], list[Level]]:
    """The first frame's plan (the whole pyramid) and every later frame's (its top level(s))."""
    plan = plan_levels(params, width, height)
    return plan, top_levels(plan, FRAME_LEVELS, frame_iterations(params))


def planned_iterations(params: StyleParams, width: int, height: int, frames: int) -> int:
    """The iterations a clip of `frames` frames is planned to take (before any early stop)."""
    plan, later = _plans(params, width, height)
    return sum(level.iterations for level in plan) + (frames - 1) * sum(level.iterations for level in later)

