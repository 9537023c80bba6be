"""Settings of the job system: named settings choose behaviour (Celery's style), not code paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["QueueConfig"]


@dataclass(frozen=True)
class QueueConfig:
    """Everything the queue and its backends need to know.

    data_dir holds `jobs.sqlite3` and one folder per job (`jobs/<id>/`: inputs, result).
    """

    data_dir: Path = Path("data")  # relative paths are relative to the working directory
    backend: str = "local"  # "local" (embedded executor) or "celery"
    broker_url: str | None = None  # celery: redis://host:6379/0 (also the result backend)
    executor: str = "process"  # local: "process" (spawned subprocess per device) or "thread"
    devices: tuple[str, ...] = ("auto",)  # local: one worker per entry
    per_user_cap: int = 3  # waiting + running jobs per user
    global_cap: int = 50  # waiting + running jobs in all
    max_attempts: int = 3  # a job whose worker died this many times fails
    lease_seconds: float = 60.0  # a running job's lease; renewed every heartbeat_seconds
    heartbeat_seconds: float = 10.0
    cancel_grace_seconds: float = 10.0  # cooperative cancel, then hard kill (process executor)
    retention_hours: float = 72.0  # inputs and results older than this are deleted
    preview_interval_seconds: float = 10.0  # a small preview image at most this often
    celery_inflight: int = 2  # celery: jobs handed to Celery at once (the rest wait in our fair queue)
    celery_time_limit_seconds: int = 1800  # must stay below the broker's visibility_timeout
    celery_visibility_timeout_seconds: int = 3600

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.backend not in ("local", "celery"):
            raise ValueError(f"backend={self.backend!r} is not allowed; allowed: local, celery")
        if self.backend == "celery" and not self.broker_url:
            raise ValueError("backend 'celery' needs broker_url (e.g. redis://localhost:6379/0)")
        if self.executor not in ("process", "thread"):
            raise ValueError(f"executor={self.executor!r} is not allowed; allowed: process, thread")
        if self.celery_time_limit_seconds >= self.celery_visibility_timeout_seconds:
            raise ValueError("celery_time_limit_seconds must be below celery_visibility_timeout_seconds, or a long "
                             "job is redelivered while it still runs")
        for name in ("per_user_cap", "global_cap", "max_attempts", "celery_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is not allowed; it must be at least 1")
