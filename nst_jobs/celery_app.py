"""The Celery side of the scale-out backend: the app, its settings and the one task, `nst.stylize`.

Broker and result backend are the same Redis. The settings that matter (DESIGN.md, "Job system facts"):

* `task_acks_late` + `task_reject_on_worker_lost`: a job whose worker dies (SIGKILL, OOM, power) is not lost; the
  broker hands it out again once its `visibility_timeout` has passed.
* `task_time_limit` below the `visibility_timeout`, or a long job is handed to a second worker while it still runs.
* `worker_prefetch_multiplier=1` and one process per GPU: a worker holds only the job it is running; the rest wait
  in the bot's fair queue (it hands Celery only `celery_inflight` jobs at once).

Cancellation is cooperative first: the bot (or `nst stylize --broker`) sets the Redis key `nst:cancel:<job_id>`, the
task polls it between iterations (at most every 0.5 s) and stops within an iteration; the key also stops a job that
no worker has picked up yet. A hard `revoke(terminate=True)` follows only after a grace period.

Workers start with `nst-worker` (nst_jobs.worker_cli) or `celery -A nst_jobs.celery_app worker -Q nst ...`; the
module-level `app` reads NST_BROKER_URL, NST_TIME_LIMIT and NST_VISIBILITY_TIMEOUT, the worker processes NST_DEVICE,
and Celery's log handlers write JSON lines when NST_LOG_FORMAT is `json` (`nst-worker --log-format json`).
Torch is imported only inside worker processes (by `warm_up` and the task), never by the bot or the CLI.
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery, Task
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_init

from nst_core.errors import JobCancelled, NSTError
from nst_core.progress import CancelCheck
from nst_jobs.config import DEFAULT_TIME_LIMIT, DEFAULT_VISIBILITY_TIMEOUT, CeleryLimits, check_time_limit
from nst_jobs.log_format import LogFormat, job_fields, make_formatter
from nst_jobs.work import WorkFunction, WorkPayload, perform, warm_up

__all__ = [
    "CANCEL_KEY_TTL",
    "DEFAULT_BROKER_URL",
    "QUEUE",
    "TASK_NAME",
    "BrokerUnavailableError",
    "app",
    "app_from_env",
    "cancel_key",
    "make_celery",
    "ping_broker",
    "redact_url",
    "redis_client",
    "request_cancel",
]

log = logging.getLogger(__name__)

TASK_NAME = "nst.stylize"
QUEUE = "nst"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
#: How long a cancel request is kept (a job queued longer than this is long gone anyway).
CANCEL_KEY_TTL = 24 * 3600
#: The task looks at its cancel key at most this often (seconds).
CANCEL_POLL_INTERVAL = 0.5
#: Seconds a new worker process may take to start (it loads torch and the VGG weights before it reports "up"). Celery
#: kills a process that is not up within `worker_proc_alive_timeout` (4 s by default) and starts another, which on a
#: busy machine, or with a slow CUDA start, is killed again: after its first process the worker never runs a job.
WORKER_START_TIMEOUT = 300.0
#: A job keeps this many recent notices (scale changes, downsizing) in its PROGRESS meta, so a monitor polling less
#: often than the task reports does not miss them.
_NOTICES_KEPT = 8


class BrokerUnavailableError(NSTError):
    """The Redis broker cannot be reached (or the URL is not a Redis URL). The message never shows a password."""


def cancel_key(job_id: str) -> str:
    return f"nst:cancel:{job_id}"


def redact_url(url: str) -> str:
    """The URL without user name and password: safe for logs and error messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port is not None else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparsable broker URL>"


def redis_client(url: str, *, timeout: float | None = 10.0) -> redis.Redis:
    """A Redis client for the broker URL (BrokerUnavailableError for a URL that is not a Redis URL)."""
    try:
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        raise BrokerUnavailableError(
            f"broker URL {redact_url(url)!r} is not usable ({exc}); use redis://HOST:PORT/DB") from None


def ping_broker(url: str, *, timeout: float = 3.0) -> None:
    """Raise BrokerUnavailableError unless the Redis at `url` answers PING within `timeout` seconds."""
    client = redis_client(url, timeout=timeout)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise BrokerUnavailableError(f"the broker at {redact_url(url)} refused the password") from None
    except redis.RedisError as exc:
        reason = str(exc).strip().rstrip(".") or type(exc).__name__
        raise BrokerUnavailableError(f"cannot reach the broker at {redact_url(url)} ({reason})") from None
    finally:
        client.close()


def request_cancel(app: Celery, client: redis.Redis, job_id: str) -> None:
    """Ask a job to stop: the cancel key (the running task sees it within an iteration; a task still queued stops
    as soon as a worker takes it) and a plain revoke (live workers drop the queued message)."""
    client.set(cancel_key(job_id), "1", ex=CANCEL_KEY_TTL)
    app.control.revoke(job_id)


def _restore_interval(visibility_timeout: int) -> int:
    """Seconds between the worker's sweeps for messages of dead workers (kombu's default sweeps every ~100 s)."""
    return max(1, min(60, visibility_timeout // 10))


class NSTCelery(Celery):
    """The app, knowing the job function its task runs (one registered task function for every app: Celery warns
    when one task name is registered to two different callables in a process)."""

    work: WorkFunction = perform


def make_celery(broker_url: str, *, time_limit: int = DEFAULT_TIME_LIMIT,
                visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT, work: WorkFunction = perform) -> Celery:
    """A Celery app for `broker_url` (also the result backend) with the `nst.stylize` task registered; its workers
    run each job with `work` (the one job function, `perform`, as in the embedded executor)."""
    check_time_limit(time_limit, visibility_timeout)
    app = NSTCelery("nst", broker=broker_url, backend=broker_url, set_as_current=False)
    transport = {
        "visibility_timeout": visibility_timeout,
        # Sweep for unacknowledged messages of dead workers every interval (throttle 1: each sweep scans).
        "unacked_restore_interval": _restore_interval(visibility_timeout),
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": visibility_timeout},
        task_time_limit=time_limit,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_proc_alive_timeout=WORKER_START_TIMEOUT,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_routes={TASK_NAME: {"queue": QUEUE}},
        worker_hijack_root_logger=True,
    )
    app.work = work
    app.task(bind=True, name=TASK_NAME, resultrepr_maxsize=200)(_stylize)  # the log shows no whole image
    return app


# --------------------------------------------------------------------------------------------------------------------
# Worker side


_clients: dict[str, redis.Redis] = {}
_clients_pid = 0


def _worker_redis(url: str) -> redis.Redis:
    """One Redis client per worker process (and URL) for the cancel checks; a forked child makes its own."""
    global _clients_pid
    if _clients_pid != os.getpid():
        _clients.clear()
        _clients_pid = os.getpid()
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return client


def _cancel_check(url: str, job_id: str) -> CancelCheck:
    """True once the job's cancel key exists; asks Redis at most every CANCEL_POLL_INTERVAL seconds."""
    last = 0.0
    cancelled = False

    def should_cancel() -> bool:
        nonlocal last, cancelled
        now = time.monotonic()
        if cancelled or now - last < CANCEL_POLL_INTERVAL:
            return cancelled
        last = now
        try:
            cancelled = bool(_worker_redis(url).exists(cancel_key(job_id)))
        except redis.RedisError as exc:  # the job goes on; a revoke still stops it
            log.warning("job %s: cannot check for a cancel request: %s", job_id, exc)
        return cancelled

    return should_cancel


def _worker_device() -> str:
    return os.environ.get("NST_DEVICE", "auto") or "auto"


def _stylize(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one job with the app's job function (`perform`). Returns {"status": "done", "result": JobResult.to_dict()},
    {"status": "failed", "reason": ...} (a user error: never retried) or {"status": "cancelled"}.
    Reports PROGRESS with meta {"run", "seq", "event", "notices", "preview", "preview_seq"} (see CeleryBackend)."""
    work = WorkPayload.from_dict(payload)
    job_function = self.app.work if isinstance(self.app, NSTCelery) else perform
    job_id = work.job_id
    try:
        previous = self.backend.get_task_meta(job_id)
    except Exception as exc:  # the result backend is the broker: if it is down, storing the result fails anyway
        log.warning("job %s: cannot read its earlier state: %s", job_id, exc)
        previous = {}
    if previous.get("status") == "SUCCESS" and isinstance(previous.get("result"), dict):
        log.info("job %s already finished; not running it again", job_id)  # a redelivered copy of a finished job
        return previous["result"]

    should_cancel = _cancel_check(self.app.conf.broker_url, job_id)
    if should_cancel():
        return {"status": "cancelled"}

    run = uuid.uuid4().hex[:12]  # tells a monitor that a redelivered job started over
    seq = 0
    notices: list[dict[str, Any]] = []
    preview_b64: str | None = None
    preview_seq = 0

    def report(event: dict[str, Any], preview: bytes | None) -> None:
        nonlocal seq, preview_b64, preview_seq
        seq += 1
        if event.get("kind") != "iteration":
            notices.append({"seq": seq, "event": event})
            del notices[:-_NOTICES_KEPT]
        if preview is not None:
            preview_b64 = base64.b64encode(preview).decode("ascii")
            preview_seq = seq
        meta = {"run": run, "seq": seq, "event": event, "notices": notices, "preview": preview_b64,
                "preview_seq": preview_seq}
        try:
            self.update_state(state="PROGRESS", meta=meta)
        except Exception as exc:  # progress is best effort: never fail a job for it
            log.warning("job %s: cannot store progress: %s", job_id, exc)

    try:
        result = job_function(work, report=report, should_cancel=should_cancel, device=_worker_device())
    except JobCancelled:
        log.info("job %s cancelled", job_id, extra=job_fields(job_id))
        return {"status": "cancelled"}
    except NSTError as exc:  # the job itself is bad (image, parameter): retrying cannot help
        log.info("job %s failed: %s", job_id, exc, extra=job_fields(job_id))
        return {"status": "failed", "reason": str(exc)}
    total = result.timings.get("total")
    log.info("job %s done in %.1f s on %s", job_id, total or 0.0, result.device,
             extra=job_fields(job_id, duration=total))
    return {"status": "done", "result": result.to_dict()}


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    """NST_LOG_FORMAT=json: Celery's handlers (the worker's and its tasks') write JSON lines, Python's warnings
    included (they would go to stderr as text)."""
    if os.environ.get("NST_LOG_FORMAT") == LogFormat.JSON:
        logging.captureWarnings(True)
        for handler in logger.handlers:
            handler.setFormatter(make_formatter(LogFormat.JSON))


@worker_process_init.connect
def _warm_up_worker_process(**_: Any) -> None:
    """Load torch and the VGG weights once per worker process, before its first job."""
    device = _worker_device()
    started = time.perf_counter()
    try:
        warm_up(device)
    except NSTError as exc:  # e.g. no such GPU: every job will fail with the same message, so say it loudly now
        log.error("worker process cannot use device %r: %s", device, exc)
        return
    log.info("worker process ready on device %r (warm-up %.1f s)", device, time.perf_counter() - started)


def app_from_env(*, work: WorkFunction = perform) -> Celery:
    """The worker's app from NST_BROKER_URL, NST_TIME_LIMIT and NST_VISIBILITY_TIMEOUT (or the defaults)."""
    limits = CeleryLimits.from_env()
    return make_celery(os.environ.get("NST_BROKER_URL") or DEFAULT_BROKER_URL, time_limit=limits.time_limit,
                       visibility_timeout=limits.visibility_timeout, work=work)


#: The app `celery -A nst_jobs.celery_app worker` runs.
app = app_from_env()
