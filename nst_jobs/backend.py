"""The contract between the queue and whatever runs jobs (embedded executor or Celery).

The queue owns the job table and the fairness; a backend only runs what it is handed and reports back through the
`BackendSink` (implemented by `JobQueue`). All methods are called on the queue's event loop; a backend that reports
from another thread hands its calls to the loop (`loop.call_soon_threadsafe` / `run_coroutine_threadsafe`).
"""

from __future__ import annotations

from typing import Any, Protocol

from nst_core.result import JobResult
from nst_jobs.config import QueueConfig
from nst_jobs.work import WorkFunction, WorkPayload, perform

__all__ = ["Backend", "BackendSink", "make_backend"]


class BackendSink(Protocol):
    async def on_started(self, job_id: str) -> None:
        """The job began running on a worker (renews its lease)."""

    async def on_progress(self, job_id: str, event: dict[str, Any], preview: bytes | None) -> None:
        """A (throttled) ProgressEvent.to_dict() and maybe a small JPEG preview."""

    async def on_done(self, job_id: str, result: JobResult) -> None:
        """The job finished; the queue stores the result."""

    async def on_failed(self, job_id: str, reason: str, *, retry: bool) -> None:
        """The job failed. retry=True: the worker died (crash, kill, lost) and the job may run again
        (counts as an attempt); retry=False: the job itself is bad (bad image ...), `reason` is for the user."""

    async def on_cancelled(self, job_id: str) -> None:
        """The job stopped because it was cancelled."""


class Backend(Protocol):
    #: True when jobs handed over go on running after `close` (Celery workers): the queue leaves them running in
    #: the table and `adopt`s them on its next start. False (the embedded executor): `close` stops them, and the
    #: queue puts them back in line.
    keeps_running_jobs: bool

    async def start(self, sink: BackendSink) -> None:
        """Start workers / connect; report through `sink` from now on."""

    def free_slots(self) -> int:
        """How many more jobs the backend can take right now."""

    async def dispatch(self, payload: WorkPayload) -> None:
        """Start running the job (returns once handed over, not when finished)."""

    async def cancel(self, job_id: str) -> None:
        """Stop a running job: cooperatively, then by force after the grace period. Reports on_cancelled."""

    async def adopt(self, job_ids: list[str]) -> list[str]:
        """After a restart: the jobs the table says were running. Returns those still running somewhere (Celery
        keeps them; the queue will hear about them through the sink); the rest are requeued by the queue."""

    def health(self) -> tuple[bool, str]:
        """(healthy, a short description) for a health check: can this backend run jobs now?"""

    def workers_up(self) -> dict[str, int]:
        """For the metrics: device -> how many of this backend's own workers can take a job there now. Empty when
        the workers are other processes (Celery's `nst-worker`s report themselves: `--metrics-port`)."""

    async def close(self) -> None:
        """Stop (or, with `keeps_running_jobs`, leave) the running jobs and disconnect; report nothing more."""


def make_backend(config: QueueConfig, *, work: WorkFunction = perform) -> Backend:
    """The backend named by `config.backend` (imported lazily: Celery only when asked for).

    `work` is the job function the embedded executor's workers run (see `LocalExecutor`); Celery workers run the
    task of `nst_jobs.celery_app`, so another function with the celery backend is refused rather than ignored.
    """
    if config.backend == "celery":
        if work is not perform:
            raise ValueError("a work function other than nst_jobs.work.perform needs backend 'local' (Celery workers "
                             "run their own task)")
        try:
            from nst_jobs.celery_backend import CeleryBackend
        except ImportError as exc:
            raise RuntimeError(f"the celery backend needs Celery and redis-py ({exc.name} is missing): install the "
                               "project's 'scale' extra (pip install '.[scale]', or scripts/setup scale)") from exc

        return CeleryBackend(config)
    from nst_jobs.local import LocalExecutor

    return LocalExecutor(config, work=work)
