"""The work a worker does for one job, shared by the embedded executor and the Celery task.

`perform` wraps `nst_core.run_job`: it rebuilds the parameters, throttles progress reports (every report crosses a
process boundary or goes to Redis) and attaches a small JPEG preview now and then. `WorkPayload` is what travels
to the worker: everything it needs, so a Celery worker on another machine needs no access to the bot's disk.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nst_core.clips import DEFAULT_CLIP_LIMITS, ClipLimits
from nst_core.params import StyleParams
from nst_core.progress import CancelCheck, ProgressEvent
from nst_core.result import JobResult

__all__ = ["PREVIEW_MAX_SIDE", "REPORT_INTERVAL", "Report", "WorkFunction", "WorkPayload", "perform", "warm_up"]

#: Minimum seconds between two iteration reports (scale changes and the last iteration always go through).
REPORT_INTERVAL = 0.25
PREVIEW_MAX_SIDE = 256

#: report(event_dict, preview_jpeg_or_None)
Report = Callable[[dict[str, Any], bytes | None], None]


@dataclass(frozen=True)
class WorkPayload:
    job_id: str
    params: dict[str, Any]
    content: bytes
    styles: tuple[bytes, ...]
    output_format: str = "png"
    max_output_bytes: int | None = None
    preview_interval: float = 10.0
    # The job's options (`JobRequest.options()`, kept as they are in the job table; a row from before them has none)
    clip_limits: dict[str, Any] = field(default_factory=DEFAULT_CLIP_LIMITS.to_dict)  # `ClipLimits.to_dict()`
    animation_format: str = "auto"
    timelapse_frames: int = 0
    continue_from: bytes | None = None  # `run_job(continue_from=...)`: the earlier result a still starts from

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (images base64) for Celery's JSON serializer."""
        return {
            "job_id": self.job_id, "params": self.params,
            "content": _b64(self.content), "styles": [_b64(s) for s in self.styles],
            "output_format": self.output_format, "max_output_bytes": self.max_output_bytes,
            "preview_interval": self.preview_interval, "clip_limits": self.clip_limits,
            "animation_format": self.animation_format, "timelapse_frames": self.timelapse_frames,
            "continue_from": _b64(self.continue_from) if self.continue_from is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkPayload:
        return cls(
            job_id=data["job_id"], params=data["params"], content=base64.b64decode(data["content"]),
            styles=tuple(base64.b64decode(s) for s in data["styles"]), output_format=data["output_format"],
            max_output_bytes=data["max_output_bytes"], preview_interval=data["preview_interval"],
            clip_limits=data.get("clip_limits") or DEFAULT_CLIP_LIMITS.to_dict(),
            animation_format=data.get("animation_format", "auto"), timelapse_frames=data.get("timelapse_frames", 0),
            continue_from=base64.b64decode(start) if (start := data.get("continue_from")) is not None else None,
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class WorkFunction(Protocol):
    """The shape of `perform`: what a worker calls to run one job.

    The embedded executor takes one (`LocalExecutor(config, work=...)`, default `perform`), e.g. to instrument
    jobs; a spawned worker receives it pickled, so it must be a module-level function or a picklable object.
    """

    def __call__(self, payload: WorkPayload, *, report: Report, should_cancel: CancelCheck | None = None,
                 device: str = "auto") -> JobResult: ...


def _jpeg(event: ProgressEvent) -> bytes | None:
    if event.preview is None:
        return None
    buf = io.BytesIO()
    event.preview(PREVIEW_MAX_SIDE).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def perform(payload: WorkPayload, *, report: Report, should_cancel: CancelCheck | None = None,
            device: str = "auto") -> JobResult:
    """Run one job on the worker's `device`. Raises what `run_job` raises (NSTError subclasses, JobCancelled).

    A worker bound to a device ('cuda:1') runs every job there: which GPU is a deployment choice, so it wins over the
    job's own `device` parameter; a worker on 'auto' leaves the job's choice alone.
    """
    from nst_core.job import run_job  # torch lives in the worker only

    params = StyleParams.from_dict(payload.params)
    if device != "auto":
        params = params.replace(device=device)
    last_report = 0.0
    last_preview = time.monotonic()  # the first preview comes after one interval, not at iteration 1

    def progress(event: ProgressEvent) -> None:
        nonlocal last_report, last_preview
        now = time.monotonic()
        final = event.kind == "iteration" and event.iteration >= event.total
        if event.kind == "iteration" and not final and now - last_report < REPORT_INTERVAL:
            return
        preview = None
        if event.kind == "iteration" and now - last_preview >= payload.preview_interval:
            preview = _jpeg(event)
            last_preview = now
        last_report = now
        report(event.to_dict(), preview)

    return run_job(params, payload.content, list(payload.styles), progress=progress, should_cancel=should_cancel,
                   output_format=payload.output_format, max_output_bytes=payload.max_output_bytes,
                   clip_limits=ClipLimits.from_dict(payload.clip_limits), animation_format=payload.animation_format,
                   timelapse_frames=payload.timelapse_frames, continue_from=payload.continue_from)


def warm_up(device: str = "auto") -> None:
    """Load torch, the weights and the optimiser code once, so a worker's first job starts as fast as the rest.

    One tiny step of each optimiser runs too: the first `step()` imports ~900 modules (about a second).
    """
    import torch

    from nst_core.device import resolve_placement
    from nst_core.vgg import extractor_for

    params = StyleParams(device=device)
    extractor_for(params, resolve_placement(params.device, params.precision))
    x = torch.zeros(4, requires_grad=True)
    for optimizer in (torch.optim.LBFGS([x], max_iter=1), torch.optim.Adam([x])):
        def closure(optimizer: torch.optim.Optimizer = optimizer) -> torch.Tensor:
            optimizer.zero_grad()
            loss = (x - 1).pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
