"""The one client of the `nst.stylize` Celery task: submit a job, follow its progress, decode how it ended.

Both front ends of the scale-out path use it, so they agree on what a task's state means: the bot's
`CeleryBackend` (many jobs, polled from its event loop) and `nst stylize --broker` (one job, `CeleryClient.run`).

    PENDING for too long  -> NEVER_TAKEN: longer than `CeleryLimits.unclaimed_after` (inflight x time limit +
                             visibility timeout) no healthy set-up leaves a job unclaimed (workers down, broker data
                             lost); the job is marked cancelled so a worker that appears later skips it
    STARTED / PROGRESS    -> `Step.started` once, then every progress event not reported yet (and a new preview)
    SUCCESS               -> DONE, FAILED (the job itself is bad) or CANCELLED, by the task's "status"
    FAILURE               -> TIME_LIMIT (it would only run out of time again), WORKER_LOST (may run again) or ERROR
    REVOKED               -> CANCELLED

A worker that dies mid-job (SIGKILL, OOM, power) is not an outcome at all: with acks_late and reject_on_worker_lost
the broker hands the job out again after the visibility timeout, and a follower just sees it start over.
"""

from __future__ import annotations

import base64
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.exceptions import OperationalError

from nst_core.progress import CancelCheck
from nst_core.result import JobResult
from nst_jobs.celery_app import (
    QUEUE,
    TASK_NAME,
    BrokerUnavailableError,
    make_celery,
    redact_url,
    redis_client,
    request_cancel,
)
from nst_jobs.config import CeleryLimits
from nst_jobs.work import WorkPayload

__all__ = ["BROKER_ERRORS", "CeleryClient", "Outcome", "OutcomeKind", "ProgressReport", "Step", "TaskFollower"]

log = logging.getLogger(__name__)

#: What a call to the broker or the result backend raises when Redis is away.
BROKER_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OperationalError, OSError)
#: Celery states of a job that has not finished.
_RUNNING_STATES = frozenset({"PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY"})
#: Exceptions in a FAILURE that mean the worker was killed, not that the job is bad.
_WORKER_DIED = frozenset({"WorkerLostError", "Terminated"})


class OutcomeKind(enum.Enum):
    """How a job sent to Celery ended."""

    DONE = "done"
    FAILED = "failed"  # the job itself is bad (an image, a parameter): `reason` is for the user; never retried
    CANCELLED = "cancelled"
    TIME_LIMIT = "time_limit"  # killed by the workers' time limit: a retry would only run out of time again
    WORKER_LOST = "worker_lost"  # the worker died: the job may run again
    NEVER_TAKEN = "never_taken"  # no worker took it within `CeleryLimits.unclaimed_after`
    ERROR = "error"  # an internal error, or an answer the client cannot read


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""  # for every kind but DONE and CANCELLED: one line for the user
    result: JobResult | None = None  # DONE only

    @property
    def retry(self) -> bool:
        """Whether sending the job again may help (the job was fine, its worker was not)."""
        return self.kind is OutcomeKind.WORKER_LOST


@dataclass(frozen=True)
class ProgressReport:
    event: dict[str, Any]  # a ProgressEvent.to_dict()
    preview: bytes | None = None  # a small JPEG, when a new one came with this event


@dataclass(frozen=True)
class Step:
    """What one look at a job's state found."""

    started: bool = False  # the job began running on a worker (reported once per job)
    reports: tuple[ProgressReport, ...] = ()
    outcome: Outcome | None = None


def _duration(seconds: float) -> str:
    return f"{round(seconds / 60)} minutes" if seconds >= 120 else f"{seconds:g} s"


@dataclass
class TaskFollower:
    """Turns the successive states of one task into Steps; no I/O (`CeleryClient.look` reads the state)."""

    job_id: str
    limits: CeleryLimits
    since: float = field(default_factory=time.monotonic)  # handed to Celery (or adopted) at this time
    started: bool = False
    run: str | None = None  # the PROGRESS "run" id: changes when a redelivered job starts over
    seq: int = 0  # the last event reported in this run
    preview_seq: int = 0

    def follow(self, meta: dict[str, Any], now: float | None = None) -> Step:
        """The Step for the task's meta (`backend.get_task_meta`: its "status" and "result")."""
        now = time.monotonic() if now is None else now
        state, info = meta.get("status"), meta.get("result")
        if state == "PENDING" and not self.started and now - self.since > self.limits.unclaimed_after:
            return Step(outcome=Outcome(OutcomeKind.NEVER_TAKEN, f"no worker took the job within "
                                        f"{_duration(self.limits.unclaimed_after)} (are the nst-worker processes "
                                        "running?); please try again"))
        started = state in ("STARTED", "PROGRESS") and not self.started
        self.started = self.started or started
        if state == "PROGRESS" and isinstance(info, dict):
            return Step(started=started, reports=self._progress(info))
        if state == "SUCCESS":
            return Step(started=started, outcome=_decode_success(info))
        if state == "FAILURE":
            return Step(started=started, outcome=self._decode_failure(info))
        if state == "REVOKED":
            return Step(started=started, outcome=Outcome(OutcomeKind.CANCELLED))
        if state not in _RUNNING_STATES:
            log.warning("job %s is in unexpected Celery state %r", self.job_id, state)
        return Step(started=started)

    def _progress(self, info: dict[str, Any]) -> tuple[ProgressReport, ...]:
        run, seq = info.get("run"), int(info.get("seq", 0))
        if run != self.run:  # first event of this job, or the job started over on another worker
            self.run, self.seq, self.preview_seq = run, 0, 0
        if seq <= self.seq:
            return ()
        preview = None
        preview_seq = int(info.get("preview_seq") or 0)
        if info.get("preview") and preview_seq > self.preview_seq:
            preview = base64.b64decode(info["preview"])
            self.preview_seq = preview_seq
        # scale changes and such, even if a later event overwrote them
        reports = [ProgressReport(n["event"]) for n in info.get("notices") or [] if self.seq < n["seq"] < seq]
        reports.append(ProgressReport(info["event"], preview))
        self.seq = seq
        return tuple(reports)

    def _decode_failure(self, info: Any) -> Outcome:
        name = type(info).__name__
        if name == "TimeLimitExceeded":
            return Outcome(OutcomeKind.TIME_LIMIT, f"the job ran longer than the workers' time limit of "
                           f"{self.limits.time_limit} s; try a smaller size or fewer iterations")
        if name in _WORKER_DIED:
            return Outcome(OutcomeKind.WORKER_LOST, f"the worker running the job died ({info})")
        return Outcome(OutcomeKind.ERROR, f"internal error: {name}: {info}")


def _decode_success(value: Any) -> Outcome:
    """The task's own answer (see `celery_app._stylize`)."""
    status = value.get("status") if isinstance(value, dict) else None
    if status == "done":
        try:
            return Outcome(OutcomeKind.DONE, result=JobResult.from_dict(value["result"]))
        except (KeyError, TypeError, ValueError) as exc:
            return Outcome(OutcomeKind.ERROR, f"the worker sent an unreadable result ({exc})")
    if status == "failed":
        return Outcome(OutcomeKind.FAILED, str(value.get("reason") or "the job failed"))
    if status == "cancelled":
        return Outcome(OutcomeKind.CANCELLED)
    return Outcome(OutcomeKind.ERROR, f"the worker sent an unexpected answer: {value!r:.200}")


class CeleryClient:
    """The Celery app and Redis client of one broker URL. Blocking: an event loop calls it in a thread."""

    def __init__(self, broker_url: str, limits: CeleryLimits) -> None:
        self.broker_url = broker_url
        self.limits = limits
        self._app = make_celery(broker_url, time_limit=limits.time_limit,
                                visibility_timeout=limits.visibility_timeout)
        self._redis = redis_client(broker_url)

    def follower(self, job_id: str) -> TaskFollower:
        """A follower for a job handed to Celery now (or adopted now)."""
        return TaskFollower(job_id, self.limits)

    def send(self, payload: WorkPayload) -> None:
        """Hand the job to the workers (BrokerUnavailableError if the broker is away). A failed earlier attempt of
        the same job id is forgotten first, so that its FAILURE is not read as the new attempt's."""
        try:
            if self._app.backend.get_task_meta(payload.job_id).get("status") == "FAILURE":
                self._app.backend.forget(payload.job_id)
            self._app.tasks[TASK_NAME].apply_async(args=[payload.to_dict()], task_id=payload.job_id, queue=QUEUE)
        except BROKER_ERRORS as exc:
            raise BrokerUnavailableError(f"cannot hand job {payload.job_id} to the broker at "
                                         f"{redact_url(self.broker_url)} ({exc})") from exc

    def meta(self, job_id: str) -> dict[str, Any]:
        """The task's state and result/info in one read (raises one of BROKER_ERRORS if Redis is away)."""
        return self._app.backend.get_task_meta(job_id)

    def look(self, follower: TaskFollower) -> Step:
        """Read the job's state and follow it; a job given up as NEVER_TAKEN is also marked cancelled."""
        step = follower.follow(self.meta(follower.job_id))
        if step.outcome is not None and step.outcome.kind is OutcomeKind.NEVER_TAKEN:
            log.warning("job %s: no worker took it within %s s; giving up on it", follower.job_id,
                        self.limits.unclaimed_after)
            try:  # a worker that appears later skips any copy still queued
                self.request_cancel(follower.job_id)
            except BROKER_ERRORS as exc:
                log.warning("job %s: cannot mark it cancelled: %s", follower.job_id, exc)
        return step

    def request_cancel(self, job_id: str) -> None:
        """The cancel key and a plain revoke (see `celery_app.request_cancel`). A job that is still PENDING after
        this will never run, so it counts as cancelled at once; a running one stops within an iteration."""
        request_cancel(self._app, self._redis, job_id)

    def kill(self, job_id: str) -> None:
        """The hard revoke: SIGKILL the worker process running the job (after the grace period of a cancel)."""
        self._app.control.revoke(job_id, terminate=True, signal="SIGKILL")

    def close(self) -> None:
        self._redis.close()
        self._app.close()

    def run(self, payload: WorkPayload, *, on_report: Callable[[ProgressReport], None], say: Callable[[str], None],
            should_cancel: CancelCheck, max_attempts: int, cancel_grace: float, wait_notice: float = 5.0,
            poll_interval: float = 0.2) -> Outcome:
        """Send one job and follow it to its end, blocking (`nst stylize --broker`). A WORKER_LOST job is sent
        again up to `max_attempts` runs in all, as the queue does for the bot. Once `should_cancel()` is true the
        job is asked to stop; it is killed after `cancel_grace` seconds. Raises BrokerUnavailableError if Redis is
        lost on the way."""
        url = redact_url(self.broker_url)
        try:
            self.send(payload)
            follower, attempt = self.follower(payload.job_id), 1
            cancel_sent: float | None = None
            said_waiting = False
            while True:
                step = self.look(follower)
                for report in step.reports:
                    on_report(report)
                outcome = step.outcome
                if outcome is not None and outcome.retry and cancel_sent is not None:
                    return Outcome(OutcomeKind.CANCELLED)  # asked to stop, and stopped (if not the way it was asked)
                if outcome is not None and outcome.retry and attempt < max_attempts:
                    attempt += 1
                    say(f"{outcome.reason}; sending it again (attempt {attempt} of {max_attempts})")
                    self.send(payload)
                    follower = self.follower(payload.job_id)
                    continue
                if outcome is not None:
                    return outcome
                now = time.monotonic()
                if should_cancel():
                    if cancel_sent is None:
                        cancel_sent = now
                        self.request_cancel(payload.job_id)
                        if self.meta(payload.job_id).get("status") == "PENDING":  # no worker has it: never runs
                            return Outcome(OutcomeKind.CANCELLED)
                    elif now - cancel_sent > cancel_grace:
                        self.kill(payload.job_id)
                        return Outcome(OutcomeKind.CANCELLED)
                if not follower.started and not said_waiting and now - follower.since > wait_notice:
                    say(f"waiting for a worker on {url} (start one with nst-worker)")
                    said_waiting = True
                time.sleep(poll_interval)
        except BROKER_ERRORS as exc:
            raise BrokerUnavailableError(f"lost the connection to the broker at {url} ({exc})") from None
