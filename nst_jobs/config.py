"""Settings of the job system: named settings choose behaviour (Celery's style), not code paths.

Also the one home of the Celery limits every part must agree on (the bot's backend, `nst-worker`, the worker app
and `nst stylize --broker`): their defaults, the rule that the time limit stays below the visibility timeout, and
how long a job may wait for a worker before nobody will take it. Celery-free, so front ends import it cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_CELERY_INFLIGHT",
    "DEFAULT_DRAIN_SECONDS",
    "DEFAULT_TIME_LIMIT",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "CeleryLimits",
    "QueueConfig",
    "check_time_limit",
]

#: Seconds a job may run on a Celery worker before it is killed (`task_time_limit`).
DEFAULT_TIME_LIMIT = 1800
#: Seconds after which the broker hands an unacknowledged job to a worker again (Redis `visibility_timeout`).
DEFAULT_VISIBILITY_TIMEOUT = 3600
#: Jobs a front end hands to Celery at once.
DEFAULT_CELERY_INFLIGHT = 2
#: Seconds a stopping front end lets its running jobs finish (and be delivered) before it stops them, and the most
#: it may be given (a container's stop grace period must stay above it).
DEFAULT_DRAIN_SECONDS = 60.0
MAX_DRAIN_SECONDS = 3600.0


def check_time_limit(time_limit: int, visibility_timeout: int, *, names: tuple[str, str] = (
        "time_limit", "visibility_timeout")) -> None:
    """ValueError unless the time limit is below the visibility timeout; `names` are how the caller's user calls
    the two settings (`--time-limit`, `celery_time_limit_seconds` ...)."""
    if time_limit >= visibility_timeout:
        raise ValueError(f"{names[0]} {time_limit} must be below {names[1]} {visibility_timeout}, or a long job is "
                         "handed to a second worker while it still runs")


@dataclass(frozen=True)
class CeleryLimits:
    """The time limit and visibility timeout of the workers, and how many jobs a front end hands Celery at once."""

    time_limit: int = DEFAULT_TIME_LIMIT
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    inflight: int = DEFAULT_CELERY_INFLIGHT

    def __post_init__(self) -> None:
        check_time_limit(self.time_limit, self.visibility_timeout)

    @property
    def unclaimed_after(self) -> int:
        """Seconds after which a job no worker has taken never will be: it waits at most for the jobs in flight
        ahead of it (each within the time limit) and a redelivery (the visibility timeout)."""
        return self.inflight * self.time_limit + self.visibility_timeout

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CeleryLimits:
        """NST_TIME_LIMIT and NST_VISIBILITY_TIMEOUT (the variables the worker app reads), else the defaults."""
        return cls(time_limit=_env_int(environ, "NST_TIME_LIMIT", DEFAULT_TIME_LIMIT),
                   visibility_timeout=_env_int(environ, "NST_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT))


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number of seconds") from None


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
    celery_inflight: int = DEFAULT_CELERY_INFLIGHT  # celery: jobs handed to Celery at once (the rest wait here)
    celery_time_limit_seconds: int = DEFAULT_TIME_LIMIT  # must stay below the broker's visibility_timeout
    celery_visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT
    drain_seconds: float = DEFAULT_DRAIN_SECONDS  # on SIGTERM: how long a running job may go on before it is stopped

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.backend not in ("local", "celery"):
            raise ValueError(f"backend={self.backend!r} is not allowed; allowed: local, celery")
        if self.backend == "celery" and not self.broker_url:
            raise ValueError("backend 'celery' needs broker_url (e.g. redis://localhost:6379/0)")
        if self.executor not in ("process", "thread"):
            raise ValueError(f"executor={self.executor!r} is not allowed; allowed: process, thread")
        check_time_limit(self.celery_time_limit_seconds, self.celery_visibility_timeout_seconds,
                         names=("celery_time_limit_seconds", "celery_visibility_timeout_seconds"))
        if not 0 <= self.drain_seconds <= MAX_DRAIN_SECONDS:
            raise ValueError(f"drain_seconds={self.drain_seconds} is not allowed; give 0 to {MAX_DRAIN_SECONDS:g}")
        for name in ("per_user_cap", "global_cap", "max_attempts", "celery_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is not allowed; it must be at least 1")

    @property
    def celery_limits(self) -> CeleryLimits:
        return CeleryLimits(time_limit=self.celery_time_limit_seconds,
                            visibility_timeout=self.celery_visibility_timeout_seconds, inflight=self.celery_inflight)
