"""The embedded executor: runs jobs on long-lived workers inside the bot's own machine, no broker needed.

Why it exists: a bot on one machine (one GPU, or a CPU) needs neither Redis nor Celery, but it must not run the
optimisation on its event loop (a Discord gateway that stalls for seconds drops its heartbeat) and should not load
the model for every job. So there is one long-lived worker per entry of `QueueConfig.devices`, warmed up once (torch,
the VGG weights, the optimiser code), and the event loop only ever receives messages from it.

- `executor="process"` (the default): each worker is a *spawned* subprocess. A CUDA fault, a segfault in a kernel or
  a hard kill on cancel stays out of the bot process; a crashed worker is replaced by a fresh, warmed-up one and its
  job reported back with `retry=True`.
- `executor="thread"`: each worker is a thread of the bot process (CPU, tests). It cannot be killed: a job that
  ignores cancellation is waited for.

Both kinds run the same loop (`_worker_main`), which talks to the parent with plain tuples:
("ready", pid), ("fatal", message) when the warm-up fails, ("started", job_id), ("progress", job_id, event_dict,
preview_bytes), ("done", job_id, JobResult), ("failed", job_id, message) and ("cancelled", job_id).

On the parent side a reader thread per worker receives these and hands them to the event loop; one pump task on
the loop applies them in order (worker state first, then the `BackendSink` call), so the sink sees started,
progress, done in the order they happened and a worker counts as free again before `on_done` runs. A process
worker's messages travel over a one-way pipe whose only writer is the worker: when the worker dies, reading it ends
with EOF, which is how a crash is noticed (no polling, and a message cut off by a kill cannot hang the reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from nst_core.errors import JobCancelled, NSTError
from nst_jobs.backend import BackendSink
from nst_jobs.config import QueueConfig
from nst_jobs.work import WorkPayload, perform, warm_up

__all__ = ["LocalExecutor"]

logger = logging.getLogger(__name__)

#: How long `start()` waits for the workers' warm-up before it returns anyway (CUDA init + weights can be slow).
WARM_UP_TIMEOUT = 300.0
#: How long `close()` waits for workers to stop on their own before it kills what is left.
CLOSE_TIMEOUT = 5.0
#: A worker that dies this many times in a row before it is ready is not started again (a broken device or install).
MAX_START_FAILURES = 3

Message = tuple[Any, ...]


class _Inbox(Protocol):
    def get(self) -> WorkPayload | None: ...

    def put(self, item: WorkPayload | None) -> None: ...


class _Outbox(Protocol):
    def put(self, item: Message) -> None: ...


class _Flag(Protocol):
    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def clear(self) -> None: ...


class _PipeOutbox:
    """The worker's end of a one-way pipe, with a queue's `put` so `_worker_main` does not care which it has."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def put(self, item: Message) -> None:
        self.conn.send(item)


# -- the worker side (runs in the subprocess or the worker thread) -----------------------------------------------------
def _worker_main(device: str, inbox: _Inbox, outbox: _Outbox, cancel_event: _Flag) -> None:
    """One worker's whole life: warm up, then run jobs from `inbox` until it sends None."""
    try:
        warm_up(device)
    except Exception as exc:
        if isinstance(exc, NSTError):
            logger.error("worker for device %r could not warm up: %s", device, exc)
        else:
            logger.exception("worker for device %r could not warm up", device)
        outbox.put(("fatal", str(exc) if isinstance(exc, NSTError) else f"{type(exc).__name__}: {exc}"))
        return
    outbox.put(("ready", os.getpid()))
    while True:
        payload = inbox.get()
        if payload is None:
            return
        job_id = payload.job_id
        if cancel_event.is_set():  # cancelled before it got here
            outbox.put(("cancelled", job_id))
            continue
        outbox.put(("started", job_id))

        def report(event: dict[str, Any], preview: bytes | None, job_id: str = job_id) -> None:
            outbox.put(("progress", job_id, event, preview))

        try:
            result = perform(payload, report=report, should_cancel=cancel_event.is_set, device=device)
        except JobCancelled:
            outbox.put(("cancelled", job_id))
        except NSTError as exc:
            outbox.put(("failed", job_id, str(exc)))
        except Exception as exc:
            # A bug, not the user's input: running it again will not help, so the parent reports retry=False.
            logger.exception("job %s: unexpected error in the worker", job_id)
            outbox.put(("failed", job_id, f"internal error: {type(exc).__name__}: {exc}"))
        else:
            outbox.put(("done", job_id, result))


def _process_main(device: str, inbox: _Inbox, outbox: _Outbox, cancel_event: _Flag, log_level: int) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl+C reaches the whole process group; the parent decides when its workers stop (sentinel, then kill).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="nst-parent-watch", daemon=True).start()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level,
                            format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    _worker_main(device, inbox, outbox, cancel_event)


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose bot process was killed (SIGKILL, OOM) must not live on holding the GPU: exit when orphaned."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


# -- the parent side ---------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Worker:
    index: int
    device: str
    # "starting" (warming up), "ready" (idle), "busy", "dying" (killed, exit not seen yet), "dead", "broken"
    state: str = "starting"
    generation: int = 0  # +1 on every (re)spawn; messages from an earlier life are ignored
    handle: BaseProcess | threading.Thread | None = None
    reader: threading.Thread | None = None  # takes its messages; for a process also the one that reaps it
    inbox: Any = None  # mp.Queue or queue.Queue of WorkPayload | None
    cancel_event: Any = None  # mp.Event or threading.Event
    job_id: str | None = None
    job_started: float = 0.0
    kill_reason: str | None = None  # "cancel" when the parent killed it to enforce a cancel
    start_failures: int = 0
    fatal: str | None = None
    pid: int | None = None

    @property
    def name(self) -> str:
        return f"nst-worker-{self.index}"


class LocalExecutor:
    """`Backend` that runs jobs on one long-lived worker per configured device (see the module docstring)."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self._kind = config.executor
        self._ctx = multiprocessing.get_context("spawn")
        self._workers = [_Worker(index=i, device=device) for i, device in enumerate(config.devices)]
        self._sink: BackendSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[tuple[_Worker, int, Message]] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # cancel enforcement: cancelled by close()
        self._respawns: set[asyncio.Task[None]] = set()  # awaited by close(): a half-started worker is not left
        self._closing = False

    # -- Backend -------------------------------------------------------------------------------------------------------
    async def start(self, sink: BackendSink) -> None:
        """Start every worker and wait (without blocking the loop) until each has warmed up.

        Raises RuntimeError when a worker cannot start at all (e.g. a device that does not exist): a configuration
        error should stop the bot at start-up, not leave it with no one to run jobs.
        """
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self._pump_task = asyncio.create_task(self._pump(), name="nst-local-pump")
        for worker in self._workers:
            await self._spawn(worker)
        deadline = time.monotonic() + WARM_UP_TIMEOUT
        while any(w.state in ("starting", "dead") for w in self._workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        broken = [w for w in self._workers if w.state == "broken"]
        if broken:
            await self.close()
            reasons = "; ".join(f"device {w.device!r}: {w.fatal}" for w in broken)
            raise RuntimeError(f"the embedded executor could not start its workers ({reasons})")
        late = [w.name for w in self._workers if w.state != "ready"]
        if late:
            logger.warning("workers %s are not ready after %.0f s; starting anyway", ", ".join(late), WARM_UP_TIMEOUT)

    def free_slots(self) -> int:
        if self._closing:
            return 0
        return sum(1 for w in self._workers if w.state == "ready" and w.job_id is None)

    async def dispatch(self, payload: WorkPayload) -> None:
        if self._closing:
            raise RuntimeError("the executor is closed")
        worker = next((w for w in self._workers if w.state == "ready" and w.job_id is None), None)
        if worker is None:
            raise RuntimeError(f"no free worker for job {payload.job_id} (check free_slots() first)")
        worker.state = "busy"
        worker.job_id = payload.job_id
        worker.job_started = time.monotonic()
        # Cleared here, not in the worker: a cancel for this job may come before the worker picks it up.
        worker.cancel_event.clear()
        worker.inbox.put(payload)  # mp.Queue pickles and writes from its feeder thread: no wait here
        logger.info("job %s dispatched to %s (%s)", payload.job_id, worker.name, worker.device)

    async def cancel(self, job_id: str) -> None:
        worker = self._running(job_id)
        if worker is None:
            logger.info("job %s: cancel requested, but no worker runs it", job_id)
            return
        if worker.cancel_event.is_set():
            return  # already being cancelled
        logger.info("job %s: cancelling on %s", job_id, worker.name)
        worker.cancel_event.set()
        self._track(self._enforce_cancel(worker, worker.generation, job_id), name=f"nst-cancel-{job_id}")

    async def adopt(self, job_ids: list[str]) -> list[str]:
        return []  # the workers died with the previous process; the queue requeues these jobs

    def health(self) -> tuple[bool, str]:
        states = [w.state for w in self._workers]
        usable = [s for s in states if s in ("starting", "ready", "busy")]
        return (not self._closing and bool(usable)), "workers: " + ", ".join(states)

    async def close(self) -> None:
        """Stop the workers: a sentinel and the cancel flag, then (off the loop) join, then kill what is left."""
        if self._closing:
            return
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._respawns, return_exceptions=True)
        for worker in self._workers:
            if worker.handle is None:
                continue
            worker.cancel_event.set()  # a running job stops at its next iteration; the queue requeues it
            with contextlib.suppress(Exception):
                worker.inbox.put(None)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._stop_workers)
        if self._pump_task is not None and self._pump_task is not asyncio.current_task():
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        logger.info("embedded executor closed")

    # -- spawning ------------------------------------------------------------------------------------------------------
    async def _spawn(self, worker: _Worker) -> None:
        """Start a new life of `worker` (the process start runs off the loop: it forks and writes the payload)."""
        worker.generation += 1
        worker.state = "starting"
        worker.job_id = None
        worker.kill_reason = None
        worker.pid = None
        assert self._loop is not None
        try:
            await self._loop.run_in_executor(None, self._launch, worker, worker.generation)
        except Exception as exc:  # cannot even start a process/thread (out of memory, too many processes ...)
            logger.exception("%s could not be started", worker.name)
            worker.state = "broken"
            worker.fatal = f"could not be started: {type(exc).__name__}: {exc}"

    def _launch(self, worker: _Worker, generation: int) -> None:
        if self._kind == "process":
            inbox = self._ctx.Queue()
            cancel_event = self._ctx.Event()
            receiver, sender = self._ctx.Pipe(duplex=False)
            process = self._ctx.Process(
                target=_process_main, name=worker.name, daemon=True,
                args=(worker.device, inbox, _PipeOutbox(sender), cancel_event, logging.getLogger().getEffectiveLevel()),
            )
            worker.inbox, worker.cancel_event, worker.handle = inbox, cancel_event, process
            process.start()
            sender.close()  # the worker holds the only writer now: its death ends our reads with EOF
            reader = threading.Thread(target=self._read_process, args=(worker, generation, receiver, process),
                                      name=f"{worker.name}-reader", daemon=True)
        else:
            thread_inbox: queue.Queue[WorkPayload | None] = queue.Queue()
            outbox: queue.Queue[Message] = queue.Queue()
            thread_cancel = threading.Event()
            thread = threading.Thread(target=_worker_main, args=(worker.device, thread_inbox, outbox, thread_cancel),
                                      name=worker.name, daemon=True)
            worker.inbox, worker.cancel_event, worker.handle = thread_inbox, thread_cancel, thread
            thread.start()
            reader = threading.Thread(target=self._read_thread, args=(worker, generation, outbox, thread),
                                      name=f"{worker.name}-reader", daemon=True)
        worker.reader = reader
        reader.start()

    # -- reader threads: hand every message to the loop ----------------------------------------------------------------
    def _post(self, worker: _Worker, generation: int, message: Message) -> bool:
        loop, events = self._loop, self._events
        if loop is None or events is None:
            return False
        try:
            loop.call_soon_threadsafe(events.put_nowait, (worker, generation, message))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _read_process(self, worker: _Worker, generation: int, conn: Connection, process: BaseProcess) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the worker is gone (or closed its end on the way out)
            except Exception:
                logger.exception("%s sent a message that cannot be read", worker.name)
                continue
            if not self._post(worker, generation, message):
                break
        process.join(CLOSE_TIMEOUT)
        if process.exitcode is None:  # closed the pipe but hangs on the way out
            process.kill()
            process.join(CLOSE_TIMEOUT)
        conn.close()
        self._post(worker, generation, ("exited", process.exitcode))

    def _read_thread(self, worker: _Worker, generation: int, outbox: queue.Queue[Message],
                     thread: threading.Thread) -> None:
        while True:
            try:
                message = outbox.get(timeout=0.5)
            except queue.Empty:
                if thread.is_alive():
                    continue
                break
            if not self._post(worker, generation, message):
                return
        with contextlib.suppress(queue.Empty):
            while True:  # anything put between the last get and the thread's end
                self._post(worker, generation, outbox.get_nowait())
        self._post(worker, generation, ("exited", None))

    # -- the pump: apply messages on the loop, in order ----------------------------------------------------------------
    async def _pump(self) -> None:
        assert self._events is not None
        while True:
            worker, generation, message = await self._events.get()
            if self._closing or generation != worker.generation:
                continue
            try:
                await self._handle(worker, message)
            except Exception:
                logger.exception("handling %r from %s failed", message[0], worker.name)

    async def _handle(self, worker: _Worker, message: Message) -> None:
        assert self._sink is not None
        kind = message[0]
        if kind == "ready":
            worker.pid = message[1]
            worker.state = "ready"
            worker.start_failures = 0
            logger.info("%s ready on %s (pid %s)", worker.name, worker.device, worker.pid)
        elif kind == "fatal":
            worker.state = "broken"
            worker.fatal = message[1]
            logger.error("%s cannot run on device %r: %s; it will not be started again", worker.name, worker.device,
                         message[1])
        elif kind == "started":
            logger.info("job %s started on %s", message[1], worker.name)
            await self._sink.on_started(message[1])
        elif kind == "progress":
            await self._sink.on_progress(message[1], message[2], message[3])
        elif kind in ("done", "failed", "cancelled"):
            job_id = message[1]
            elapsed = time.monotonic() - worker.job_started
            if worker.job_id == job_id:
                worker.job_id = None
                if worker.state == "busy":
                    worker.state = "ready"  # free before the sink runs: on_done may dispatch the next job
            if kind == "done":
                logger.info("job %s done in %.1f s on %s", job_id, elapsed, worker.name)
                await self._sink.on_done(job_id, message[2])
            elif kind == "failed":
                logger.warning("job %s failed after %.1f s: %s", job_id, elapsed, message[2])
                await self._sink.on_failed(job_id, message[2], retry=False)
            else:
                logger.info("job %s cancelled after %.1f s", job_id, elapsed)
                await self._sink.on_cancelled(job_id)
        elif kind == "exited":
            await self._exited(worker, message[1])
        else:
            logger.error("%s sent an unknown message %r", worker.name, kind)

    async def _exited(self, worker: _Worker, exitcode: int | None) -> None:
        assert self._sink is not None
        job_id, worker.job_id = worker.job_id, None
        killed_for_cancel = worker.kill_reason == "cancel"
        previous = worker.state
        if isinstance(worker.handle, BaseProcess):
            worker.inbox.cancel_join_thread()  # a payload nobody will read must not hold up our exit
            worker.inbox.close()
        if previous == "broken":
            return  # the fatal message said it all
        worker.state = "dead"
        code = f"exit code {exitcode}" if exitcode is not None else "the worker thread ended"
        if previous == "starting":
            worker.start_failures += 1
        if worker.start_failures >= MAX_START_FAILURES:
            worker.state = "broken"
            worker.fatal = f"died {worker.start_failures} times while starting ({code})"
            logger.error("%s on %s %s; it will not be started again", worker.name, worker.device, worker.fatal)
        else:
            logger.log(logging.INFO if worker.kill_reason else logging.WARNING,
                       "%s ended (%s)%s; starting a new one", worker.name, code,
                       f" while running job {job_id}" if job_id else "")
            self._track(self._spawn(worker), name=f"nst-respawn-{worker.index}", into=self._respawns)
        if job_id is None:
            return
        if killed_for_cancel:
            logger.info("job %s cancelled (worker killed)", job_id)
            await self._sink.on_cancelled(job_id)
        else:
            logger.error("job %s: worker crashed (%s); it may run again", job_id, code)
            await self._sink.on_failed(job_id, f"worker crashed ({code})", retry=True)

    # -- cancel and close helpers --------------------------------------------------------------------------------------
    async def _enforce_cancel(self, worker: _Worker, generation: int, job_id: str) -> None:
        grace = self.config.cancel_grace_seconds
        await asyncio.sleep(grace)
        if worker.generation != generation or worker.job_id != job_id or worker.state != "busy":
            return  # it stopped (or finished) in time
        handle = worker.handle
        if not isinstance(handle, BaseProcess):
            logger.warning("job %s did not stop within %.1f s of its cancel; a thread worker cannot be killed, so it "
                           "is left to notice the cancel", job_id, grace)
            return
        logger.warning("job %s did not stop within %.1f s of its cancel; killing %s (pid %s)", job_id, grace,
                       worker.name, handle.pid)
        worker.kill_reason = "cancel"
        worker.state = "dying"  # not free even if a last message clears its job before the exit is seen
        handle.kill()  # the reader sees EOF; `_exited` reports on_cancelled and starts a new worker

    def _stop_workers(self) -> None:
        """Wait up to CLOSE_TIMEOUT for every worker to stop; kill the processes still running.

        A process is reaped by its reader thread only (two threads waiting on one child race for its exit status),
        so here "stopped" means the reader has finished.
        """
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for worker in self._workers:
            handle, reader = worker.handle, worker.reader
            if handle is None or reader is None:
                continue
            if isinstance(handle, BaseProcess):
                reader.join(max(0.0, deadline - time.monotonic()))
                if reader.is_alive():
                    logger.warning("%s did not stop within %.0f s; killing it", worker.name, CLOSE_TIMEOUT)
                    handle.kill()
                    reader.join(2 * CLOSE_TIMEOUT)
                worker.inbox.cancel_join_thread()
                worker.inbox.close()
            else:
                handle.join(max(0.0, deadline - time.monotonic()))
                if handle.is_alive():
                    logger.warning("%s (a thread) is still running a job; it stops at its next iteration",
                                   worker.name)

    def _running(self, job_id: str) -> _Worker | None:
        return next((w for w in self._workers if w.job_id == job_id), None)

    def _track(self, coro: Any, *, name: str, into: set[asyncio.Task[None]] | None = None) -> None:
        tasks = self._tasks if into is None else into
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
