"""Animated inputs: animated GIF, APNG and animated WebP (Pillow) and MP4, WebM and MOV clips (PyAV).

(The decoding half of this module is being written; so far it holds the limits every front end shares.)

Torch-free, like `images`: the bot probes an attachment and refuses one over its server's limits before queueing,
without loading the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nst_core.errors import ParameterError

__all__ = ["DEFAULT_CLIP_LIMITS", "ClipLimits"]


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
