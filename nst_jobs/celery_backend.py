"""`CeleryBackend`: the queue's `Backend` for Celery workers on Redis (scale-out).

The queue keeps its fair order and hands Celery at most `celery_inflight` jobs at once (`free_slots`). Each job is
sent as task `nst.stylize` with the job id as task id, so the id survives a bot restart (`adopt`). One monitor task
on the event loop polls the result backend for every job in flight (in a thread, every `poll_interval` seconds) and
reports to the sink:

    STARTED                 -> on_started (once per job)
    PROGRESS                -> on_progress for every event not yet reported (and the preview, when a new one came)
    SUCCESS                 -> on_done / on_failed(reason, retry=False) / on_cancelled, by the task's "status"
    FAILURE                 -> on_failed(retry=True) for a lost worker, else retry=False (the hard time limit too:
                               it would only run out of time again)
    REVOKED                 -> on_cancelled
    PENDING for too long    -> on_failed(retry=False): longer than celery_inflight x time limit + visibility
                               timeout, no healthy set-up leaves a job unclaimed (workers down, broker data lost)

A worker that dies mid-job (SIGKILL, OOM, power) is not reported at all: with acks_late and
reject_on_worker_lost the broker gives the job to a worker again after the visibility timeout, and the monitor just
sees it start over. Nothing here blocks the event loop: every Redis or broker call runs in `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.exceptions import OperationalError

from nst_core.result import JobResult
from nst_jobs.backend import BackendSink
from nst_jobs.celery_app import (
    QUEUE,
    TASK_NAME,
    BrokerUnavailableError,
    make_celery,
    ping_broker,
    redact_url,
    redis_client,
    request_cancel,
)
from nst_jobs.config import QueueConfig
from nst_jobs.work import WorkPayload

__all__ = ["CeleryBackend"]

log = logging.getLogger(__name__)

#: Celery states of a job that has not finished.
_RUNNING_STATES = frozenset({"PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY"})
#: Exceptions in a FAILURE that mean the worker was killed, not that the job is bad.
_WORKER_DIED = frozenset({"WorkerLostError", "Terminated"})
#: After the hard revoke: how long to wait for the worker to record REVOKED before reporting on_cancelled anyway.
_REVOKE_SETTLE_SECONDS = 3.0
#: While the result backend cannot be read, warn at most this often (the monitor retries every poll).
_WARN_EVERY_SECONDS = 60.0


@dataclass
class _Tracked:
    """What the monitor knows about one job in flight."""

    started: bool = False
    since: float = field(default_factory=time.monotonic)  # handed to Celery (or adopted) at this time
    run: str | None = None  # the PROGRESS "run" id: changes when a redelivered job starts over
    seq: int = 0  # the last event reported in this run
    preview_seq: int = 0


class CeleryBackend:
    """Runs jobs on Celery workers; see the module docstring."""

    def __init__(self, config: QueueConfig, *, poll_interval: float = 0.5) -> None:
        if not config.broker_url:
            raise ValueError("CeleryBackend needs QueueConfig.broker_url (e.g. redis://localhost:6379/0)")
        self._config = config
        self._poll_interval = poll_interval
        # A job handed to Celery waits at most for the jobs in flight ahead of it (each within the time limit) and a
        # redelivery (the visibility timeout); still unclaimed after that, nobody will take it.
        self._lost_after = (config.celery_inflight * config.celery_time_limit_seconds
                            + config.celery_visibility_timeout_seconds)
        self._app = make_celery(config.broker_url, time_limit=config.celery_time_limit_seconds,
                                visibility_timeout=config.celery_visibility_timeout_seconds)
        self._task = self._app.tasks[TASK_NAME]
        self._redis = redis_client(config.broker_url)
        self._inflight: dict[str, _Tracked] = {}
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

    async def dispatch(self, payload: WorkPayload) -> None:
        job_id = payload.job_id
        self._inflight[job_id] = _Tracked()  # counts against free_slots from now on
        try:
            await asyncio.to_thread(self._task.apply_async, args=[payload.to_dict()], task_id=job_id, queue=QUEUE)
        except (OperationalError, redis.RedisError, OSError) as exc:
            self._inflight.pop(job_id, None)
            raise BrokerUnavailableError(
                f"cannot hand job {job_id} to the broker at {redact_url(self._config.broker_url or '')} ({exc})"
            ) from exc
        except BaseException:
            self._inflight.pop(job_id, None)
            raise
        self._wake.set()

    async def cancel(self, job_id: str) -> None:
        """Cancel key + plain revoke, then return. A job no worker has taken yet is reported cancelled before this
        returns (it will never run: live workers drop it, a later one sees the key). A running one stops within an
        iteration and the monitor reports it; if it has not within `cancel_grace_seconds`, a background task revokes
        it with SIGKILL and reports on_cancelled. A job not in flight is only marked cancelled in Redis."""
        await asyncio.to_thread(request_cancel, self._app, self._redis, job_id)
        if job_id not in self._inflight or job_id in self._cancelling:
            return
        meta = await asyncio.to_thread(self._meta, job_id)
        if meta is not None and meta.get("status") == "PENDING":
            await self._finish(job_id, "on_cancelled")
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
            self._inflight.setdefault(job_id, _Tracked())
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
        await asyncio.to_thread(self._close_clients)

    # ---- monitoring ------------------------------------------------------------------------------------------------

    def _close_clients(self) -> None:
        self._redis.close()
        self._app.close()

    def _meta(self, job_id: str) -> dict[str, Any] | None:
        """The task's state and result/info in one read (None if the result backend cannot be read)."""
        try:
            return self._app.backend.get_task_meta(job_id)
        except Exception as exc:
            if time.monotonic() - self._warned_at >= _WARN_EVERY_SECONDS:  # once a minute, not every poll
                self._warned_at = time.monotonic()
                log.warning("cannot read the state of job %s from %s (retrying): %s", job_id,
                            redact_url(self._config.broker_url or ""), exc)
            return None

    def _poll(self, job_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for job_id in job_ids:
            meta = self._meta(job_id)
            if meta is None:
                break  # the backend is down: try again next round
            found.append((job_id, meta))
        return found

    async def _monitor_loop(self) -> None:
        while not self._closed:
            self._wake.clear()
            if self._inflight:
                try:
                    for job_id, meta in await asyncio.to_thread(self._poll, list(self._inflight)):
                        await self._handle(job_id, meta)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug in one report must not stop the monitoring of every other job
                    log.exception("celery monitor: error while reporting")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)

    async def _handle(self, job_id: str, meta: dict[str, Any]) -> None:
        tracked = self._inflight.get(job_id)
        sink = self._sink
        if tracked is None or sink is None:
            return
        state = meta.get("status")
        info = meta.get("result")
        if state == "PENDING" and not tracked.started and time.monotonic() - tracked.since > self._lost_after:
            await self._give_up_unclaimed(job_id)
            return
        if state in ("STARTED", "PROGRESS") and not tracked.started:
            tracked.started = True
            await sink.on_started(job_id)
        if state == "PROGRESS" and isinstance(info, dict):
            await self._report_progress(job_id, tracked, info)
        elif state == "SUCCESS":
            await self._report_success(job_id, info)
        elif state == "FAILURE":
            name = type(info).__name__
            if name == "TimeLimitExceeded":  # it would only run out of time again: no retry
                limit = self._config.celery_time_limit_seconds
                await self._finish(job_id, "on_failed", f"the job ran longer than the workers' time limit of "
                                   f"{limit} s; try a smaller size or fewer iterations", retry=False)
            elif name in _WORKER_DIED:
                await self._finish(job_id, "on_failed", f"the worker running the job died ({info})", retry=True)
            else:
                await self._finish(job_id, "on_failed", f"internal error: {name}: {info}", retry=False)
        elif state == "REVOKED":
            await self._finish(job_id, "on_cancelled")
        elif state not in _RUNNING_STATES:
            log.warning("job %s is in unexpected Celery state %r", job_id, state)

    async def _give_up_unclaimed(self, job_id: str) -> None:
        """No worker took the job for longer than any healthy set-up allows: the workers are down or the broker lost
        the message. Fail it with a reason (it is marked cancelled in Redis, so a worker that appears later skips
        any copy still queued) rather than let it look like it runs for ever."""
        waited = (f"{round(self._lost_after / 60)} minutes" if self._lost_after >= 120
                  else f"{self._lost_after} s")
        log.warning("job %s: no worker took it within %s; giving up on it", job_id, waited)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(request_cancel, self._app, self._redis, job_id)
        await self._finish(job_id, "on_failed", f"no worker took the job within {waited} (are the nst-worker "
                           "processes running?); please try again", retry=False)

    async def _report_progress(self, job_id: str, tracked: _Tracked, info: dict[str, Any]) -> None:
        assert self._sink is not None
        run, seq = info.get("run"), int(info.get("seq", 0))
        if run != tracked.run:  # first event of this job, or the job started over on another worker
            tracked.run, tracked.seq, tracked.preview_seq = run, 0, 0
        if seq <= tracked.seq:
            return
        preview = None
        preview_seq = int(info.get("preview_seq") or 0)
        if info.get("preview") and preview_seq > tracked.preview_seq:
            preview = base64.b64decode(info["preview"])
            tracked.preview_seq = preview_seq
        for notice in info.get("notices") or []:  # scale changes and such, even if a later event overwrote them
            if tracked.seq < notice["seq"] < seq:
                await self._sink.on_progress(job_id, notice["event"], None)
        tracked.seq = seq
        await self._sink.on_progress(job_id, info["event"], preview)

    async def _report_success(self, job_id: str, value: Any) -> None:
        status = value.get("status") if isinstance(value, dict) else None
        if status == "done":
            try:
                result = JobResult.from_dict(value["result"])
            except (KeyError, TypeError, ValueError) as exc:
                await self._finish(job_id, "on_failed", f"the worker sent an unreadable result ({exc})", retry=False)
                return
            await self._finish(job_id, "on_done", result)
        elif status == "failed":
            await self._finish(job_id, "on_failed", str(value.get("reason") or "the job failed"), retry=False)
        elif status == "cancelled":
            await self._finish(job_id, "on_cancelled")
        else:
            await self._finish(job_id, "on_failed", f"the worker sent an unexpected answer: {value!r:.200}",
                               retry=False)

    async def _finish(self, job_id: str, method: str, *args: Any, **kwargs: Any) -> None:
        """Report a job's end exactly once (the monitor and `cancel` may both get here)."""
        if self._inflight.pop(job_id, None) is None or self._sink is None:
            return
        await getattr(self._sink, method)(job_id, *args, **kwargs)

    async def _enforce_cancel(self, job_id: str) -> None:
        """The grace period, then the hard revoke; reports on_cancelled if the worker does not."""
        try:
            if await self._wait_until_reported(job_id, self._config.cancel_grace_seconds):
                return
            log.warning("job %s did not stop within %.0f s of the cancel request; killing it", job_id,
                        self._config.cancel_grace_seconds)
            try:
                await asyncio.to_thread(self._app.control.revoke, job_id, terminate=True, signal="SIGKILL")
            except Exception as exc:  # the key still stops it wherever it runs next
                log.warning("job %s: cannot revoke it: %s", job_id, exc)
            if not await self._wait_until_reported(job_id, _REVOKE_SETTLE_SECONDS):
                await self._finish(job_id, "on_cancelled")
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
