"""What a finished job hands back: the encoded image and the figures about how it was made.

Torch-free, so the bot process can receive it from a worker process or, as `to_dict()`, through Celery's result
backend.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any

from nst_core.encoding import content_type_for

__all__ = ["JobResult"]


@dataclass
class JobResult:
    """What a finished job hands back to its caller."""

    image: bytes  # the encoded still or animation
    format: str  # "png", "jpeg" or "webp" for a still; "gif", "webp" or "mp4" for an animation
    width: int
    height: int
    iterations: int
    losses: dict[str, float]
    timings: dict[str, float]  # decode, setup, optimise, encode, total (seconds)
    params: dict[str, Any]  # the parameters actually used (the seed filled in, the size after any downsizing)
    device: str
    precision: str
    notes: list[str] = field(default_factory=list)  # what a user should be told (downsized, re-encoded ...)
    frames: int = 1  # 1 for a still
    duration_ms: int = 0  # an animation's playing time (0 for a still)
    #: A still's optimisation as a small animated GIF (frames recorded during the job), when asked for.
    timelapse: bytes | None = field(default=None, repr=False)
    #: On CUDA, the most GPU memory the job's tensors took at once (bytes); None on the CPU and MPS.
    peak_memory_bytes: int | None = None

    @property
    def animated(self) -> bool:
        return self.frames > 1

    @property
    def content_type(self) -> str:
        return content_type_for(self.format)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the image as base64)."""
        data = asdict(self)
        data["image"] = base64.b64encode(self.image).decode("ascii")
        if self.timelapse is not None:
            data["timelapse"] = base64.b64encode(self.timelapse).decode("ascii")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResult:
        timelapse = data.get("timelapse")
        return cls(**{**data, "image": base64.b64decode(data["image"]),
                      "timelapse": base64.b64decode(timelapse) if timelapse else None})
