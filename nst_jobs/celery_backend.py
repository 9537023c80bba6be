"""`CeleryBackend`: the queue's `Backend` for Celery workers on Redis (scale-out).

The queue keeps its fair order and hands Celery at most `celery_inflight` jobs at once (`free_slots`). Each job is
sent as task `nst.stylize` with the job id as task id, so the id survives a bot restart (`adopt`). One monitor task
on the event loop looks at every job in flight (in a thread, every `poll_interval` seconds) through the shared
client (`celery_client`, which also serves `nst stylize --broker`) and reports its Steps to the sink:

    Step.started            -> on_started (once per job)
    Step.reports            -> on_progress for every event not yet reported (and the preview, when a new one came)
    DONE                    -> on_done
    CANCELLED               -> on_cancelled
    WORKER_LOST             -> on_failed(retry=True): the queue runs it again (an attempt)
    FAILED, TIME_LIMIT,     -> on_failed(retry=False) with the outcome's reason (a job past the time limit would
    NEVER_TAKEN, ERROR         only run out of time again; one never taken waited longer than any healthy set-up)

A worker that dies mid-job (SIGKILL, OOM, power) is not reported at all: with acks_late and
reject_on_worker_lost the broker gives the job to a worker again after the visibility timeout, and the monitor just
sees it start over. Nothing here blocks the event loop: every Redis or broker call runs in `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nst_jobs.backend import BackendSink
from nst_jobs.celery_app import ping_broker, redact_url
from nst_jobs.celery_client import CeleryClient, Outcome, OutcomeKind, Step, TaskFollower
from nst_jobs.config import QueueConfig
from nst_jobs.work import WorkPayload

__all__ = ["CeleryBackend"]

log = logging.getLogger(__name__)

#: After the hard revoke: how long to wait for the worker to record REVOKED before reporting on_cancelled anyway.
_REVOKE_SETTLE_SECONDS = 3.0
#: While the result backend cannot be read, warn at most this often (the monitor retries every poll).
_WARN_EVERY_SECONDS = 60.0


class CeleryBackend:
    """Runs jobs on Celery workers; see the module docstring."""

    keeps_running_jobs = True  # the workers go on without us; `adopt` follows their jobs again after a restart

    def __init__(self, config: QueueConfig, *, poll_interval: float = 0.5) -> None:
        if not config.broker_url:
            raise ValueError("CeleryBackend needs QueueConfig.broker_url (e.g. redis://localhost:6379/0)")
        self._config = config
        self._poll_interval = poll_interval
        self._client = CeleryClient(config.broker_url, config.celery_limits)
        self._inflight: dict[str, TaskFollower] = {}
        self._sink: BackendSink | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._warned_at = -_WARN_EVERY_SECONDS
        self._cancelling: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # cancel enforcers

    # ---- Backend protocol ------------------------------------------------------------------------------------------

    async def start(self, sink: BackendSink) -> None:
        """Raises BrokerUnavailableError (a one-line message without the password) if Redis does not answer."""
        await asyncio.to_thread(ping_broker, self._config.broker_url or "")
        self._sink = sink
        self._closed = False
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._monitor_loop(), name="nst-celery-monitor")
        log.info("celery backend on %s (up to %d jobs in flight)", redact_url(self._config.broker_url or ""),
                 self._config.celery_inflight)

    def free_slots(self) -> int:
        return max(0, self._config.celery_inflight - len(self._inflight))

    def health(self) -> tuple[bool, str]:
        alive = self._monitor is not None and not self._monitor.done() and not self._closed
        return alive, f"celery on {redact_url(self._config.broker_url or '')}: {len(self._inflight)} job(s) in flight"

    def workers_up(self) -> dict[str, int]:
        return {}  # the workers are nst-worker processes elsewhere: each serves its own nst_worker_up

    async def dispatch(self, payload: WorkPayload) -> None:
        """Raises BrokerUnavailableError if the broker does not take the job."""
        job_id = payload.job_id
        self._inflight[job_id] = self._client.follower(job_id)  # counts against free_slots from now on
        try:
            await asyncio.to_thread(self._client.send, payload)
        except BaseException:
            self._inflight.pop(job_id, None)
            raise
        self._wake.set()

    async def cancel(self, job_id: str) -> None:
        """Cancel key + plain revoke, then return. A job no worker has taken yet is reported cancelled before this
        returns (it will never run: live workers drop it, a later one sees the key). A running one stops within an
        iteration and the monitor reports it; if it has not within `cancel_grace_seconds`, a background task revokes
        it with SIGKILL and reports on_cancelled. A job not in flight is only marked cancelled in Redis."""
        await asyncio.to_thread(self._client.request_cancel, job_id)
        if job_id not in self._inflight or job_id in self._cancelling:
            return
        meta = await asyncio.to_thread(self._meta, job_id)
        if meta is not None and meta.get("status") == "PENDING":
            await self._finish(job_id, Outcome(OutcomeKind.CANCELLED))
            return
        self._wake.set()
        self._cancelling.add(job_id)
        task = asyncio.create_task(self._enforce_cancel(job_id), name=f"nst-celery-cancel-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def adopt(self, job_ids: list[str]) -> list[str]:
        """Every adopted id stays with Celery: a finished one is reported by the monitor right away, a running or
        queued one when it finishes (PENDING is also what a never-seen id looks like; with the queue's flow every id
        was really sent, and with acks_late the broker still holds it)."""
        for job_id in job_ids:
            self._inflight.setdefault(job_id, self._client.follower(job_id))
        self._wake.set()  # poll now: results that arrived while the bot was down are reported at once
        return list(job_ids)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        await asyncio.to_thread(self._client.close)

    # ---- monitoring ------------------------------------------------------------------------------------------------

    def _warn(self, job_id: str, exc: Exception) -> None:
        if time.monotonic() - self._warned_at >= _WARN_EVERY_SECONDS:  # once a minute, not every poll
            self._warned_at = time.monotonic()
            log.warning("cannot read the state of job %s from %s (retrying): %s", job_id,
                        redact_url(self._config.broker_url or ""), exc)

    def _meta(self, job_id: str) -> dict[str, Any] | None:
        """The task's state and result/info in one read (None if the result backend cannot be read)."""
        try:
            return self._client.meta(job_id)
        except Exception as exc:
            self._warn(job_id, exc)
            return None

    def _poll(self, followers: list[TaskFollower]) -> list[tuple[str, Step]]:
        found = []
        for follower in followers:
            try:
                step = self._client.look(follower)
            except Exception as exc:
                self._warn(follower.job_id, exc)
                break  # the backend is down: try again next round
            found.append((follower.job_id, step))
        return found

    async def _monitor_loop(self) -> None:
        while not self._closed:
            self._wake.clear()
            if self._inflight:
                try:
                    for job_id, step in await asyncio.to_thread(self._poll, list(self._inflight.values())):
                        await self._report(job_id, step)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug in one report must not stop the monitoring of every other job
                    log.exception("celery monitor: error while reporting")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)

    async def _report(self, job_id: str, step: Step) -> None:
        sink = self._sink
        if job_id not in self._inflight or sink is None:
            return
        if step.started:
            await sink.on_started(job_id)
        for report in step.reports:
            await sink.on_progress(job_id, report.event, report.preview)
        if step.outcome is not None:
            await self._finish(job_id, step.outcome)

    async def _finish(self, job_id: str, outcome: Outcome) -> None:
        """Report a job's end exactly once (the monitor and `cancel` may both get here)."""
        if self._inflight.pop(job_id, None) is None or self._sink is None:
            return
        if outcome.kind is OutcomeKind.DONE and outcome.result is not None:
            await self._sink.on_done(job_id, outcome.result)
        elif outcome.kind is OutcomeKind.CANCELLED:
            await self._sink.on_cancelled(job_id)
        else:
            await self._sink.on_failed(job_id, outcome.reason, retry=outcome.retry)

    async def _enforce_cancel(self, job_id: str) -> None:
        """The grace period, then the hard revoke; reports on_cancelled if the worker does not."""
        try:
            if await self._wait_until_reported(job_id, self._config.cancel_grace_seconds):
                return
            log.warning("job %s did not stop within %.0f s of the cancel request; killing it", job_id,
                        self._config.cancel_grace_seconds)
            try:
                await asyncio.to_thread(self._client.kill, job_id)
            except Exception as exc:  # the key still stops it wherever it runs next
                log.warning("job %s: cannot revoke it: %s", job_id, exc)
            if not await self._wait_until_reported(job_id, _REVOKE_SETTLE_SECONDS):
                await self._finish(job_id, Outcome(OutcomeKind.CANCELLED))
        finally:
            self._cancelling.discard(job_id)

    async def _wait_until_reported(self, job_id: str, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while job_id in self._inflight:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True
