"""The worker side of the embedded executor: one worker's whole life, in a spawned process or a thread.

Why it exists: this code runs away from the event loop (in a subprocess that imports torch, or in a worker thread)
and shares nothing with the executor (`nst_jobs.local`) but its queues and a cancel flag, so it lives on its own:
what is imported here is what a spawned worker process loads. It warms up once, then runs jobs from its inbox
with the executor's work function (`nst_jobs.work.perform` unless told otherwise) and reports back with the
messages of `nst_jobs.worker_messages`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Protocol

from nst_core.errors import JobCancelled, NSTError
from nst_jobs.work import WorkFunction, WorkPayload, warm_up
from nst_jobs.worker_messages import Cancelled, Done, Failed, Fatal, Progress, Ready, Started, WorkerMessage

__all__ = ["Flag", "Inbox", "Outbox", "PipeOutbox", "process_main", "run_worker"]

logger = logging.getLogger(__name__)


class Inbox(Protocol):
    """Jobs for the worker; None tells it to stop (a `queue.Queue` or a `multiprocessing` queue)."""

    def get(self) -> WorkPayload | None: ...

    def put(self, item: WorkPayload | None) -> None: ...


class Outbox(Protocol):
    """Where the worker's messages go (a `queue.Queue`, or `PipeOutbox` for a process)."""

    def put(self, item: WorkerMessage) -> None: ...


class Flag(Protocol):
    """The cancel flag of the worker's current job (a `threading.Event` or a `multiprocessing` event)."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def clear(self) -> None: ...


class PipeOutbox:
    """The worker's end of a one-way pipe, with a queue's `put` so `run_worker` does not care which it has."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def put(self, item: WorkerMessage) -> None:
        self.conn.send(item)


def run_worker(device: str, inbox: Inbox, outbox: Outbox, cancel_event: Flag, work: WorkFunction) -> None:
    """One worker's whole life: warm up, then run jobs from `inbox` with `work` until it sends None."""
    try:
        warm_up(device)
    except Exception as exc:
        if isinstance(exc, NSTError):
            logger.error("worker for device %r could not warm up: %s", device, exc)
        else:
            logger.exception("worker for device %r could not warm up", device)
        outbox.put(Fatal(str(exc) if isinstance(exc, NSTError) else f"{type(exc).__name__}: {exc}"))
        return
    outbox.put(Ready(os.getpid()))
    while True:
        payload = inbox.get()
        if payload is None:
            return
        outbox.put(_run_one(payload, outbox, cancel_event, work, device))


def _run_one(payload: WorkPayload, outbox: Outbox, cancel_event: Flag, work: WorkFunction,
             device: str) -> Done | Failed | Cancelled:
    """Run one job, sending `Started` and its progress; return the message that ends it."""
    job_id = payload.job_id
    if cancel_event.is_set():  # cancelled before it got here
        return Cancelled(job_id)
    outbox.put(Started(job_id))

    def report(event: dict[str, Any], preview: bytes | None) -> None:
        outbox.put(Progress(job_id, event, preview))

    try:
        result = work(payload, report=report, should_cancel=cancel_event.is_set, device=device)
    except JobCancelled:
        return Cancelled(job_id)
    except NSTError as exc:
        return Failed(job_id, str(exc))
    except Exception as exc:
        # A bug, not the user's input: running it again will not help, so the parent reports retry=False.
        logger.exception("job %s: unexpected error in the worker", job_id)
        return Failed(job_id, f"internal error: {type(exc).__name__}: {exc}")
    return Done(job_id, result)


def process_main(device: str, inbox: Inbox, outbox: Outbox, cancel_event: Flag, log_level: int,
                 work: WorkFunction) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl+C reaches the whole process group; the parent decides when its workers stop (sentinel, then kill).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="nst-parent-watch", daemon=True).start()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level,
                            format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    run_worker(device, inbox, outbox, cancel_event, work)


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose bot process was killed (SIGKILL, OOM) must not live on holding the GPU: exit when orphaned."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)
