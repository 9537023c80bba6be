"""The embedded executor's handle on one worker: start its process or thread, read its messages, stop it.

Why it exists: the executor (`nst_jobs.local`) decides what a worker does (which job, when to cancel, when to start
a new one); how a worker is started, listened to and stopped differs between a spawned process and a thread, and
that plumbing lives here. A reader thread per worker life takes the worker's messages (`nst_jobs.worker_messages`)
and hands each to the executor's `post` callback, then posts `Exited` once the worker has ended.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.queues
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess

from nst_jobs.work import WorkFunction, WorkPayload
from nst_jobs.worker_loop import Flag, Inbox, PipeOutbox, process_main, run_worker
from nst_jobs.worker_messages import Exited, WorkerEvent, WorkerMessage

__all__ = ["CLOSE_TIMEOUT", "Life", "Post", "Worker", "WorkerState", "launch_process", "launch_thread"]

logger = logging.getLogger(__name__)

#: How long a worker is waited for (its exit after the pipe closed; `Life.stop`) before it is killed.
CLOSE_TIMEOUT = 5.0

#: Hands one message to the executor; False when nobody listens any more (the reader stops).
Post = Callable[[WorkerEvent], bool]


class WorkerState(StrEnum):
    """Where one worker is in its life, as the executor sees it (shown by the executor's `health()`)."""

    STARTING = "starting"  # (re)spawned, warming up
    READY = "ready"  # idle: may take a job
    BUSY = "busy"  # running a job
    DYING = "dying"  # killed to enforce a cancel; its exit not seen yet
    DEAD = "dead"  # ended; a new life is being started
    BROKEN = "broken"  # will not be started again (its device cannot work, or it keeps dying at start)


@dataclass(eq=False)
class Life:
    """One (re)spawn of a worker: its process or thread, inbox and cancel flag, and the thread reading its messages."""

    handle: BaseProcess | threading.Thread
    inbox: Inbox  # a multiprocessing queue for a process, a queue.Queue for a thread
    cancel_event: Flag
    reader: threading.Thread | None = None  # takes its messages; for a process also the one that reaps it

    def close_inbox(self) -> None:
        """A process's inbox: a payload nobody will read must not hold up our exit."""
        if isinstance(self.inbox, multiprocessing.queues.Queue):
            self.inbox.cancel_join_thread()
            self.inbox.close()

    def stop(self, name: str, deadline: float) -> None:
        """Wait until `deadline` (monotonic) for the worker to stop after its sentinel; kill a process still running.

        A process is reaped by its reader thread only (two threads waiting on one child race for its exit status),
        so here "stopped" means the reader has finished. A thread cannot be killed: it is left to notice its cancel.
        """
        if self.reader is None:
            return  # never started
        if isinstance(self.handle, BaseProcess):
            self.reader.join(max(0.0, deadline - time.monotonic()))
            if self.reader.is_alive():
                logger.warning("%s did not stop within %.0f s; killing it", name, CLOSE_TIMEOUT)
                self.handle.kill()
                self.reader.join(2 * CLOSE_TIMEOUT)
            self.close_inbox()
        else:
            self.handle.join(max(0.0, deadline - time.monotonic()))
            if self.handle.is_alive():
                logger.warning("%s (a thread) is still running a job; it stops at its next iteration", name)


@dataclass(eq=False)
class Worker:
    """One configured device's worker across its lives, as the executor tracks it."""

    index: int
    device: str
    state: WorkerState = WorkerState.STARTING
    generation: int = 0  # +1 on every (re)spawn; messages from an earlier life are ignored
    life: Life | None = None
    job_id: str | None = None
    job_started: float = 0.0
    kill_reason: str | None = None  # "cancel" when the parent killed it to enforce a cancel
    start_failures: int = 0
    fatal: str | None = None
    pid: int | None = None

    @property
    def name(self) -> str:
        return f"nst-worker-{self.index}"

    @property
    def free(self) -> bool:
        return self.state == WorkerState.READY and self.job_id is None


def launch_process(ctx: SpawnContext, worker: Worker, work: WorkFunction, post: Post) -> Life:
    """Spawn a worker process and its reader; `worker.life` is set before the process starts."""
    inbox: multiprocessing.queues.Queue[WorkPayload | None] = ctx.Queue()
    cancel_event = ctx.Event()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=process_main, name=worker.name, daemon=True,
        args=(worker.device, inbox, PipeOutbox(sender), cancel_event, logging.getLogger().getEffectiveLevel(), work),
    )
    life = worker.life = Life(handle=process, inbox=inbox, cancel_event=cancel_event)
    process.start()
    sender.close()  # the worker holds the only writer now: its death ends our reads with EOF
    life.reader = threading.Thread(target=_read_process, args=(worker.name, receiver, process, post),
                                   name=f"{worker.name}-reader", daemon=True)
    life.reader.start()
    return life


def launch_thread(worker: Worker, work: WorkFunction, post: Post) -> Life:
    """Start a worker thread and its reader; `worker.life` is set before the thread starts."""
    inbox: queue.Queue[WorkPayload | None] = queue.Queue()
    outbox: queue.Queue[WorkerMessage] = queue.Queue()
    cancel_event = threading.Event()
    thread = threading.Thread(target=run_worker, name=worker.name, daemon=True,
                              args=(worker.device, inbox, outbox, cancel_event, work))
    life = worker.life = Life(handle=thread, inbox=inbox, cancel_event=cancel_event)
    thread.start()
    life.reader = threading.Thread(target=_read_thread, args=(outbox, thread, post), name=f"{worker.name}-reader",
                                   daemon=True)
    life.reader.start()
    return life


def _read_process(name: str, conn: Connection, process: BaseProcess, post: Post) -> None:
    while True:
        try:
            message: WorkerMessage = conn.recv()
        except (EOFError, OSError):
            break  # the worker is gone (or closed its end on the way out)
        except Exception:
            logger.exception("%s sent a message that cannot be read", name)
            continue
        if not post(message):
            break
    process.join(CLOSE_TIMEOUT)
    if process.exitcode is None:  # closed the pipe but hangs on the way out
        process.kill()
        process.join(CLOSE_TIMEOUT)
    conn.close()
    post(Exited(process.exitcode))


def _read_thread(outbox: queue.Queue[WorkerMessage], thread: threading.Thread, post: Post) -> None:
    while True:
        try:
            message = outbox.get(timeout=0.5)
        except queue.Empty:
            if thread.is_alive():
                continue
            break
        if not post(message):
            return
    with contextlib.suppress(queue.Empty):
        while True:  # anything put between the last get and the thread's end
            post(outbox.get_nowait())
    post(Exited(None))
