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

Both kinds run the same loop (`nst_jobs.worker_loop.run_worker`) with the executor's work function (`work`, by
default `nst_jobs.work.perform`, the job function the Celery worker runs too), and talk to this module with the typed
messages of `nst_jobs.worker_messages`. This module is the executor's logic (who runs what, cancels, respawns);
starting, reading and stopping a worker process or thread is `nst_jobs.worker_handles`.

A reader thread per worker receives the messages and hands them to the event loop; one pump task on the loop
applies them in order (worker state first, then the `BackendSink` call), so the sink sees started,
progress, done in the order they happened and a worker counts as free again before `on_done` runs. A process
worker's messages travel over a one-way pipe whose only writer is the worker: when the worker dies, reading it ends
with EOF, which is how a crash is noticed (no polling, and a message cut off by a kill cannot hang the reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import time
from collections.abc import Coroutine
from multiprocessing.process import BaseProcess
from typing import Any

from nst_jobs.backend import BackendSink
from nst_jobs.config import QueueConfig
from nst_jobs.log_format import job_fields
from nst_jobs.work import WorkFunction, WorkPayload, perform
from nst_jobs.worker_handles import CLOSE_TIMEOUT, Worker, WorkerState, launch_process, launch_thread
from nst_jobs.worker_messages import (
    Cancelled,
    Done,
    Exited,
    Failed,
    Fatal,
    JobEnd,
    Progress,
    Ready,
    Started,
    WorkerEvent,
)

__all__ = ["LocalExecutor"]

logger = logging.getLogger(__name__)

#: How long `start()` waits for the workers' warm-up before it returns anyway (CUDA init + weights can be slow).
WARM_UP_TIMEOUT = 300.0
#: A worker that dies this many times in a row before it is ready is not started again (a broken device or install).
MAX_START_FAILURES = 3


class LocalExecutor:
    """`Backend` that runs jobs on one long-lived worker per configured device (see the module docstring).

    `work` is the function a worker calls for each job: `nst_jobs.work.perform` (the real engine) unless another
    `WorkFunction` is given, e.g. one that instruments or holds jobs. With `executor="process"` it is pickled into
    each spawned worker, so it must be a module-level function or a picklable object.
    """

    keeps_running_jobs = False  # the workers stop with the executor; the queue puts their jobs back in line

    def __init__(self, config: QueueConfig, *, work: WorkFunction = perform) -> None:
        self.config = config
        self.work = work
        self._kind = config.executor
        self._ctx = multiprocessing.get_context("spawn")
        self._workers = [Worker(index=i, device=device) for i, device in enumerate(config.devices)]
        self._sink: BackendSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[tuple[Worker, int, WorkerEvent]] | None = None
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
        while (any(w.state in (WorkerState.STARTING, WorkerState.DEAD) for w in self._workers)
               and time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        broken = [w for w in self._workers if w.state == WorkerState.BROKEN]
        if broken:
            await self.close()
            reasons = "; ".join(f"device {w.device!r}: {w.fatal}" for w in broken)
            raise RuntimeError(f"the embedded executor could not start its workers ({reasons})")
        late = [w.name for w in self._workers if w.state != WorkerState.READY]
        if late:
            logger.warning("workers %s are not ready after %.0f s; starting anyway", ", ".join(late), WARM_UP_TIMEOUT)

    def free_slots(self) -> int:
        if self._closing:
            return 0
        return sum(1 for w in self._workers if w.free)

    async def dispatch(self, payload: WorkPayload) -> None:
        if self._closing:
            raise RuntimeError("the executor is closed")
        worker = next((w for w in self._workers if w.free), None)
        if worker is None or worker.life is None:
            raise RuntimeError(f"no free worker for job {payload.job_id} (check free_slots() first)")
        worker.state = WorkerState.BUSY
        worker.job_id = payload.job_id
        worker.job_started = time.monotonic()
        # Cleared here, not in the worker: a cancel for this job may come before the worker picks it up.
        worker.life.cancel_event.clear()
        worker.life.inbox.put(payload)  # mp.Queue pickles and writes from its feeder thread: no wait here
        logger.info("job %s dispatched to %s (%s)", payload.job_id, worker.name, worker.device,
                    extra=job_fields(payload.job_id))

    async def cancel(self, job_id: str) -> None:
        worker = self._running(job_id)
        if worker is None or worker.life is None:
            logger.info("job %s: cancel requested, but no worker runs it", job_id)
            return
        if worker.life.cancel_event.is_set():
            return  # already being cancelled
        logger.info("job %s: cancelling on %s", job_id, worker.name)
        worker.life.cancel_event.set()
        self._track(self._enforce_cancel(worker, worker.generation, job_id), name=f"nst-cancel-{job_id}")

    async def adopt(self, job_ids: list[str]) -> list[str]:
        return []  # the workers died with the previous process; the queue requeues these jobs

    def health(self) -> tuple[bool, str]:
        states = [w.state for w in self._workers]
        usable = [s for s in states if s in (WorkerState.STARTING, WorkerState.READY, WorkerState.BUSY)]
        return (not self._closing and bool(usable)), "workers: " + ", ".join(states)

    def workers_up(self) -> dict[str, int]:
        up = dict.fromkeys((w.device for w in self._workers), 0)
        for worker in self._workers:
            if not self._closing and worker.state in (WorkerState.READY, WorkerState.BUSY):
                up[worker.device] += 1
        return up

    async def close(self) -> None:
        """Stop the workers: a sentinel and the cancel flag, then (off the loop) join, then kill what is left."""
        if self._closing:
            return
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._respawns, return_exceptions=True)
        for worker in self._workers:
            if worker.life is None:
                continue
            worker.life.cancel_event.set()  # a running job stops at its next iteration; the queue puts it back in line
            with contextlib.suppress(Exception):
                worker.life.inbox.put(None)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._stop_workers)
        if self._pump_task is not None and self._pump_task is not asyncio.current_task():
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        logger.info("embedded executor closed")

    # -- spawning ------------------------------------------------------------------------------------------------------
    async def _spawn(self, worker: Worker) -> None:
        """Start a new life of `worker` (the process start runs off the loop: it forks and writes the payload)."""
        worker.generation += 1
        worker.state = WorkerState.STARTING
        worker.job_id = None
        worker.kill_reason = None
        worker.pid = None
        assert self._loop is not None
        try:
            await self._loop.run_in_executor(None, self._launch, worker, worker.generation)
        except Exception as exc:  # cannot even start a process/thread (out of memory, too many processes ...)
            logger.exception("%s could not be started", worker.name)
            worker.state = WorkerState.BROKEN
            worker.fatal = f"could not be started: {type(exc).__name__}: {exc}"

    def _launch(self, worker: Worker, generation: int) -> None:
        post = functools.partial(self._post, worker, generation)
        if self._kind == "process":
            launch_process(self._ctx, worker, self.work, post)
        else:
            launch_thread(worker, self.work, post)

    def _post(self, worker: Worker, generation: int, message: WorkerEvent) -> bool:
        """Hand a message from a reader thread to the pump on the loop (False once nobody listens)."""
        loop, events = self._loop, self._events
        if loop is None or events is None:
            return False
        try:
            loop.call_soon_threadsafe(events.put_nowait, (worker, generation, message))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

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
                logger.exception("handling %r from %s failed", getattr(message, "kind", message), worker.name)

    async def _handle(self, worker: Worker, message: WorkerEvent) -> None:
        assert self._sink is not None
        match message:
            case Ready(pid=pid):
                worker.pid = pid
                worker.state = WorkerState.READY
                worker.start_failures = 0
                logger.info("%s ready on %s (pid %s)", worker.name, worker.device, worker.pid)
            case Fatal(reason=reason):
                worker.state = WorkerState.BROKEN
                worker.fatal = reason
                logger.error("%s cannot run on device %r: %s; it will not be started again", worker.name,
                             worker.device, reason)
            case Started(job_id=job_id):
                logger.info("job %s started on %s", job_id, worker.name, extra=job_fields(job_id))
                await self._sink.on_started(job_id)
            case Progress(job_id=job_id, event=event, preview=preview):
                await self._sink.on_progress(job_id, event, preview)
            case Done() | Failed() | Cancelled():
                await self._job_ended(worker, message)
            case Exited(exitcode=exitcode):
                await self._exited(worker, exitcode)
            case _:
                logger.error("%s sent an unknown message %r", worker.name, message)

    async def _job_ended(self, worker: Worker, message: JobEnd) -> None:
        assert self._sink is not None
        job_id = message.job_id
        elapsed = time.monotonic() - worker.job_started
        if worker.job_id == job_id:
            worker.job_id = None
            if worker.state == WorkerState.BUSY:
                worker.state = WorkerState.READY  # free before the sink runs: on_done may dispatch the next job
        match message:
            case Done(result=result):
                logger.info("job %s done in %.1f s on %s", job_id, elapsed, worker.name,
                            extra=job_fields(job_id, duration=elapsed))
                await self._sink.on_done(job_id, result)
            case Failed(reason=reason):
                logger.warning("job %s failed after %.1f s: %s", job_id, elapsed, reason,
                               extra=job_fields(job_id, duration=elapsed))
                await self._sink.on_failed(job_id, reason, retry=False)
            case Cancelled():
                logger.info("job %s cancelled after %.1f s", job_id, elapsed,
                            extra=job_fields(job_id, duration=elapsed))
                await self._sink.on_cancelled(job_id)

    async def _exited(self, worker: Worker, exitcode: int | None) -> None:
        assert self._sink is not None
        job_id, worker.job_id = worker.job_id, None
        killed_for_cancel = worker.kill_reason == "cancel"
        previous = worker.state
        if worker.life is not None:
            worker.life.close_inbox()
        if previous == WorkerState.BROKEN:
            return  # the fatal message said it all
        worker.state = WorkerState.DEAD
        code = f"exit code {exitcode}" if exitcode is not None else "the worker thread ended"
        if previous == WorkerState.STARTING:
            worker.start_failures += 1
        if worker.start_failures >= MAX_START_FAILURES:
            worker.state = WorkerState.BROKEN
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
            logger.info("job %s cancelled (worker killed)", job_id, extra=job_fields(job_id))
            await self._sink.on_cancelled(job_id)
        else:
            logger.error("job %s: worker crashed (%s); it may run again", job_id, code, extra=job_fields(job_id))
            await self._sink.on_failed(job_id, f"worker crashed ({code})", retry=True)

    # -- cancel and close helpers --------------------------------------------------------------------------------------
    async def _enforce_cancel(self, worker: Worker, generation: int, job_id: str) -> None:
        grace = self.config.cancel_grace_seconds
        await asyncio.sleep(grace)
        if worker.generation != generation or worker.job_id != job_id or worker.state != WorkerState.BUSY:
            return  # it stopped (or finished) in time
        handle = worker.life.handle if worker.life is not None else None
        if not isinstance(handle, BaseProcess):
            logger.warning("job %s did not stop within %.1f s of its cancel; a thread worker cannot be killed, so it "
                           "is left to notice the cancel", job_id, grace)
            return
        logger.warning("job %s did not stop within %.1f s of its cancel; killing %s (pid %s)", job_id, grace,
                       worker.name, handle.pid)
        worker.kill_reason = "cancel"
        worker.state = WorkerState.DYING  # not free even if a last message clears its job before the exit is seen
        handle.kill()  # the reader sees EOF; `_exited` reports on_cancelled and starts a new worker

    def _stop_workers(self) -> None:
        """Wait up to CLOSE_TIMEOUT in all for the workers to stop; kill the processes still running."""
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for worker in self._workers:
            if worker.life is not None:
                worker.life.stop(worker.name, deadline)

    def _running(self, job_id: str) -> Worker | None:
        return next((w for w in self._workers if w.job_id == job_id), None)

    def _track(self, coro: Coroutine[Any, Any, None], *, name: str,
               into: set[asyncio.Task[None]] | None = None) -> None:
        tasks = self._tasks if into is None else into
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
