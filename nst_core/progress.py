"""What the engine tells its caller while it works: one `ProgressEvent` per iteration, plus a few notices.

Torch-free on purpose: the bot process receives these (pickled across a process or through Celery's result
backend as `to_dict()`) without loading the engine. `preview` is only set inside the process running the job; it
renders a small image of the current result on demand, so nobody pays for previews they do not show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from PIL import Image

__all__ = ["CancelCheck", "EventKind", "ProgressCallback", "ProgressEvent"]


class EventKind(StrEnum):
    """What a `ProgressEvent` reports (a str, so it crosses processes and JSON as its value)."""

    ITERATION = "iteration"  # one optimiser step done
    SCALE = "scale"  # a new coarse-to-fine level starts
    EARLY_STOP = "early_stop"  # a level stopped on a loss plateau
    DOWNSIZED = "downsized"  # out of GPU memory: restarting tile by tile, or smaller (see `message`)
    FRAME = "frame"  # an animation's frame starts (`frame` of `frames`)


@dataclass(frozen=True)
class ProgressEvent:
    """One report from a running job.

    kind: see `EventKind`. iteration is 1-based and counts over all levels (for an animation: over all frames);
    total is the planned number (it shrinks when a level stops early). losses holds the weighted terms "content",
    "style", "tv" (and "temporal" for an animation's later frames) and their sum "total". For an animation, `frame`
    is the 1-based frame being optimised of `frames`, `eta` covers the whole clip and `preview` shows the latest
    finished frame; for a still both are 0.

    `preview(max_side)` renders the image as it is *now*: call it inside the callback (it reads the live
    optimisation tensor, so calling it later shows a later state).
    """

    kind: EventKind
    iteration: int
    total: int
    scale: int
    scales: int
    width: int
    height: int
    losses: dict[str, float]
    elapsed: float
    eta: float | None
    message: str = ""
    frame: int = 0
    frames: int = 0
    preview: Callable[[int], Image.Image] | None = field(default=None, compare=False, repr=False)

    @property
    def fraction(self) -> float:
        """Done fraction in 0..1."""
        return min(1.0, self.iteration / self.total) if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form without the preview function (for queues and result backends)."""
        data = asdict(self)
        data.pop("preview")
        data["kind"] = str(data["kind"])  # the plain value: JSON and the bot's process need no enum
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressEvent:
        fields = {k: v for k, v in data.items() if k != "preview"}
        return cls(**{**fields, "kind": EventKind(fields["kind"])})


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]
