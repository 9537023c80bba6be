"""nst_jobs: what stands between a front end (the Discord bot, the `nst` CLI) and the GPU.

A durable SQLite job table with fair per-user scheduling (`queue.JobQueue`), and two interchangeable backends that
run the one job function `nst_core.run_job` (through `work.perform`): the embedded executor (`local`, one
long-lived worker per device) and Celery workers on Redis (`celery`, scale-out). No Discord code here, and the
modules a front end imports (queue, store, models) do not import torch.
"""

from __future__ import annotations

from nst_jobs.config import QueueConfig
from nst_jobs.errors import (
    JobFinishedError,
    JobNotFoundError,
    NotAllowedError,
    QueueError,
    QueueFullError,
    UserCapError,
)
from nst_jobs.models import Job, JobRequest, JobState, JobUpdate

__all__ = [
    "Job",
    "JobFinishedError",
    "JobNotFoundError",
    "JobRequest",
    "JobState",
    "JobUpdate",
    "NotAllowedError",
    "QueueConfig",
    "QueueError",
    "QueueFullError",
    "UserCapError",
]
