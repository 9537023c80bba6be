"""The job record and the updates a subscriber receives. Torch-free (the bot imports it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nst_core.clips import DEFAULT_CLIP_LIMITS, ClipLimits
from nst_core.params import StyleParams
from nst_core.progress import ProgressEvent

__all__ = ["TERMINAL_STATES", "Job", "JobRequest", "JobState", "JobUpdate"]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class JobRequest:
    """What a front end submits. Images are the raw bytes the user sent (already size-checked by the front end)."""

    params: StyleParams
    content: bytes
    styles: tuple[bytes, ...]
    requester: str
    guild_id: str | None = None
    channel_id: str | None = None
    output_format: str = "png"
    max_output_bytes: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # front-end data kept with the job (JSON-able)
    clip_limits: ClipLimits = DEFAULT_CLIP_LIMITS  # for animated content: frames, seconds, pixels
    animation_format: str = "auto"  # an animation's output: "auto" (GIF, else MP4 to fit), "gif", "webp", "mp4"
    timelapse_frames: int = 0  # a still records this many small frames of its optimisation (0: none)
    continue_from: bytes | None = None  # a still starts from this picture (an earlier result, e.g. an upscale)

    def options(self) -> dict[str, Any]:
        """The animation and timelapse options, as the job table keeps them (JSON-able)."""
        return {"clip_limits": self.clip_limits.to_dict(), "animation_format": self.animation_format,
                "timelapse_frames": self.timelapse_frames}


@dataclass
class Job:
    """One row of the job table."""

    id: str
    seq: int  # submission order
    requester: str
    guild_id: str | None
    channel_id: str | None
    params: dict[str, Any]
    style_count: int
    output_format: str
    max_output_bytes: int | None
    state: JobState
    attempts: int
    created_at: float
    meta: dict[str, Any] = field(default_factory=dict)
    dispatch_seq: int | None = None  # order in which jobs were started (fairness)
    lease_owner: str | None = None
    lease_expires: float | None = None
    progress: dict[str, Any] | None = None  # last ProgressEvent.to_dict()
    result: dict[str, Any] | None = None  # JobResult.to_dict() without the image
    result_path: str | None = None
    failure: str | None = None
    cancel_requested_by: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    delivered_at: float | None = None
    options: dict[str, Any] = field(default_factory=dict)  # `JobRequest.options()`: WorkPayload's option fields

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def run_seconds(self) -> float | None:
        """How long its last start ran until it ended; None unless it started and ended."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    @property
    def wait_seconds(self) -> float | None:
        """How long it waited in line before its (last) start; None before it started."""
        return None if self.started_at is None else max(0.0, self.started_at - self.created_at)


@dataclass(frozen=True)
class JobUpdate:
    """Something changed about a job: its state, its progress, or its place in line.

    kind: "state" (job.state changed), "progress" (event set; preview maybe), "position" (position changed).
    """

    kind: str
    job: Job
    position: int | None = None  # 1-based place among waiting jobs, None when not waiting
    event: ProgressEvent | None = None
    preview: bytes | None = None  # small JPEG of the current result, now and then
