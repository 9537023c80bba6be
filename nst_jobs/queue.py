"""The job queue a front end talks to: submit, position, cancel, subscribe, results.

It keeps the job table (`store.JobStore`) as the system of record, decides who runs next (`fairness.fair_order`),
hands jobs to a backend (embedded executor or Celery, `backend.Backend`) and turns what the backend reports into
table updates and `JobUpdate`s for subscribers. Running jobs hold a lease renewed by a heartbeat; a lease that
expires (the process holding it died) puts the job back in line, up to `max_attempts` starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nst_core.encoding import extension_for
from nst_core.progress import ProgressEvent
from nst_core.result import JobResult
from nst_jobs.backend import Backend, make_backend
from nst_jobs.config import QueueConfig
from nst_jobs.errors import JobFinishedError, NotAllowedError
from nst_jobs.fairness import Waiting, fair_order
from nst_jobs.leases import lease_owner_name, owner_is_gone
from nst_jobs.log_format import job_fields
from nst_jobs.metrics import JobMetrics
from nst_jobs.models import Job, JobRequest, JobState, JobUpdate
from nst_jobs.store import JobStore
from nst_jobs.work import WorkFunction, WorkPayload, perform

__all__ = ["JobInputs", "JobQueue"]

log = logging.getLogger(__name__)

#: The last progress snapshot is written to the table at most this often per job.
PROGRESS_SAVE_INTERVAL = 2.0
#: How often expired leases are looked for, and old jobs purged.
REAPER_INTERVAL = 1.0
PURGE_INTERVAL = 3600.0

#: The file, in a job's folder, that holds a still's timelapse GIF.
TIMELAPSE_FILE = "timelapse.gif"


@dataclass(frozen=True)
class JobInputs:
    """What a job was given, read back so a front end can start a follow-up job from the same images."""

    job_id: str
    params: dict[str, Any]  # as submitted (`StyleParams.to_dict()`)
    seed: int | None  # the seed the finished run used (it draws one when params has none); None before that
    content: bytes
    styles: tuple[bytes, ...]
    continue_from: bytes | None = None  # the picture it started from (an upscale's earlier result), if any


class JobQueue:
    """Use as `async with JobQueue(config) as queue:` (or `await queue.start()` / `await queue.close()`).

    `backend`: the one to use instead of `make_backend(config, work=work)`; `work`: the job function of the embedded
    executor (default `nst_jobs.work.perform`, the real engine); `metrics`: where the job table's state changes are
    counted (a fresh registry of its own when None).
    """

    def __init__(self, config: QueueConfig, backend: Backend | None = None, *, work: WorkFunction = perform,
                 metrics: JobMetrics | None = None) -> None:
        if backend is not None and work is not perform:
            raise ValueError("pass either a backend or a work function (give the work function to that backend)")
        self.config = config
        self.backend = backend if backend is not None else make_backend(config, work=work)
        self.metrics = metrics if metrics is not None else JobMetrics()
        self.owner = lease_owner_name()
        self.store: JobStore
        self._owned: set[str] = set()  # running jobs this process handed to its backend
        self._subscribers: dict[str, set[asyncio.Queue[JobUpdate]]] = defaultdict(set)
        self._positions: dict[str, int] = {}
        self._progress_saved: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._paused = False

    # -- lifecycle -------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.store = await JobStore.open(self.config.data_dir, observer=self.metrics)
        await self.backend.start(self)
        running = await self.store.list(JobState.RUNNING)
        if running:
            kept = await self.backend.adopt([job.id for job in running])
            self._owned.update(kept)
            await self.store.renew(kept, self.owner, self.config.lease_seconds)
            orphans = [job for job in running if job.id not in kept and owner_is_gone(job.lease_owner)]
            for job in orphans:  # a previous process on this machine died: no need to wait for its lease
                await self.store.requeue(job.id, "the process running it stopped", self.config.max_attempts)
            log.info("restart: %d job(s) were running: %d still running on workers, %d back in the queue now, the "
                     "rest when their lease expires", len(running), len(kept), len(orphans))
        self._tasks = [asyncio.create_task(self._dispatch_loop(), name="nst-dispatch"),
                       asyncio.create_task(self._heartbeat_loop(), name="nst-heartbeat"),
                       asyncio.create_task(self._reaper_loop(), name="nst-reaper")]
        self._wake.set()

    async def close(self) -> None:
        """Stop. A job this process was running on a backend that stops with it (the embedded executor) goes back
        in line at once, its start given back (`JobStore.release`): the next start runs it again from the
        beginning. Celery's jobs go on on their workers and are adopted on the next start."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backend.close()
        if not self.backend.keeps_running_jobs:
            for job_id in sorted(self._owned):
                if await self.store.release(job_id) is not None:
                    log.info("job %s stopped by the shutdown: back in the queue (this start is not counted)",
                             job_id)
            self._owned.clear()
        await self.store.close()

    async def __aenter__(self) -> JobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the API a front end uses --------------------------------------------------------------------------------
    async def submit(self, request: JobRequest) -> Job:
        """Queue a job (its inputs go to disk first). Raises UserCapError / QueueFullError at the caps."""
        request.params.check_styles(len(request.styles))
        job = await self.store.insert(request, per_user_cap=self.config.per_user_cap,
                                      global_cap=self.config.global_cap)
        log.info("job %s queued for user %s", job.id, job.requester, extra=job_fields(job))
        await self._publish_positions()
        self._wake.set()
        return job

    async def get(self, job_id: str) -> Job:
        return await self.store.get(job_id)

    def pause(self) -> None:
        """Start no more jobs (a front end that is stopping): waiting jobs stay queued, running ones go on, new
        ones may still be submitted and wait."""
        if not self._paused:
            self._paused = True
            log.info("no more jobs start in this process (%d running)", len(self._owned))

    def running_here(self) -> list[str]:
        """The jobs this process handed to its backend that have not ended yet."""
        return sorted(self._owned)

    async def inputs(self, job: str | Job) -> JobInputs:
        """The stored inputs of a job (a job id or the job itself). Raises JobNotFoundError for an unknown id and
        OSError when its files are gone (the retention purge removed them)."""
        if isinstance(job, str):
            job = await self.store.get(job)
        files = await asyncio.to_thread(self.store.read_inputs, job)
        ran = (job.result or {}).get("params") or {}
        seed = ran.get("seed")
        return JobInputs(job_id=job.id, params=dict(job.params), seed=int(seed) if seed is not None else None,
                         content=files.content, styles=files.styles, continue_from=files.continue_from)

    async def jobs(self, *states: JobState, requester: str | None = None) -> list[Job]:
        return await self.store.list(*states, requester=requester)

    async def positions(self) -> dict[str, int]:
        """1-based place in line of every waiting job, in the order they will start."""
        waiting = await self.store.list(JobState.QUEUED)
        last = await self.store.last_served(sorted({j.requester for j in waiting}))
        order = fair_order([Waiting(j.id, j.requester, j.seq) for j in waiting], last)
        return {job_id: index + 1 for index, job_id in enumerate(order)}

    async def position(self, job_id: str) -> int | None:
        """Place in line as the user sees it (1 = next to start), or None when not waiting."""
        return (await self.positions()).get(job_id)

    async def cancel(self, job_id: str, by: str, *, privileged: bool = False) -> Job:
        """Cancel a job: a waiting one leaves the queue at once; a running one is stopped (the returned job may
        still say running: its subscribers see the final state). Only the requester, or a privileged caller
        (a moderator), may cancel."""
        job = await self.store.get(job_id)
        if by != job.requester and not privileged:
            raise NotAllowedError(job_id)
        if job.finished:
            raise JobFinishedError(job_id, job.state.value)
        await self.store.request_cancel(job_id, by)
        if job.state == JobState.QUEUED:
            ended = await self.store.finish(job_id, JobState.CANCELLED, failure=f"cancelled by {by}")
            if ended is not None:
                log.info("job %s cancelled while waiting (by %s)", job_id, by, extra=job_fields(ended))
                await self._publish(JobUpdate("state", ended))
                await self._publish_positions()
                return ended
            job = await self.store.get(job_id)  # it started meanwhile: stop it below
        if job.state == JobState.RUNNING:
            log.info("job %s: cancel requested by %s", job_id, by, extra=job_fields(job))
            task = asyncio.create_task(self.backend.cancel(job_id))
            self._tasks.append(task)  # keep a reference; exceptions are logged by the loop
        return job

    async def subscribe(self, job_id: str) -> AsyncIterator[JobUpdate]:
        """Updates for one job, starting with its current state; ends after the job's final state."""
        inbox: asyncio.Queue[JobUpdate] = asyncio.Queue()
        self._subscribers[job_id].add(inbox)
        try:
            job = await self.store.get(job_id)
            yield JobUpdate("state", job, position=await self.position(job_id))
            if job.finished:
                return
            while True:
                update = await inbox.get()
                yield update
                if update.kind == "state" and update.job.finished:
                    return
        finally:
            self._subscribers[job_id].discard(inbox)
            if not self._subscribers[job_id]:
                del self._subscribers[job_id]

    async def health(self) -> dict[str, Any]:
        """For a health check: is the backend able to run jobs, and how many jobs wait and run."""
        healthy, detail = self.backend.health()
        counts = await self.store.counts()
        return {"ok": healthy and not self._closed, "backend": detail, "waiting": counts[JobState.QUEUED],
                "running": counts[JobState.RUNNING]}

    async def refresh_metrics(self) -> None:
        """Read the gauges of `metrics` (jobs waiting and running, workers up) now, for a scrape."""
        self.metrics.set_queue(await self.store.counts())
        self.metrics.set_workers(self.backend.workers_up())

    def result_bytes(self, job: Job) -> bytes:
        if job.state != JobState.DONE or job.result_path is None:
            raise JobFinishedError(job.id, job.state.value)
        with open(job.result_path, "rb") as fh:
            return fh.read()

    async def timelapse(self, job: Job) -> bytes | None:
        """A finished still's timelapse GIF, or None when it has none (not asked for, or its files were cleaned)."""
        if job.state != JobState.DONE or not (job.result or {}).get("timelapse"):
            return None
        path = self.store.job_dir(job.id) / TIMELAPSE_FILE
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def mark_delivered(self, job_id: str) -> bool:
        """Record that the front end delivered the outcome; False if it was delivered before (do not repeat)."""
        return await self.store.mark_delivered(job_id)

    async def undelivered(self) -> list[Job]:
        """Finished jobs whose outcome was not delivered yet (deliver them after a restart)."""
        return await self.store.undelivered()

    # -- BackendSink: what the backend reports ----------------------------------------------------------------------
    async def on_started(self, job_id: str) -> None:
        await self.store.renew([job_id], self.owner, self.config.lease_seconds)

    async def on_progress(self, job_id: str, event: dict[str, Any], preview: bytes | None) -> None:
        now = time.monotonic()
        if now - self._progress_saved.get(job_id, 0.0) >= PROGRESS_SAVE_INTERVAL or event.get("kind") != "iteration":
            self._progress_saved[job_id] = now
            await self.store.save_progress(job_id, event)
        if job_id in self._subscribers:
            job = await self.store.get(job_id)
            await self._publish(JobUpdate("progress", job, event=ProgressEvent.from_dict(event), preview=preview))

    async def on_done(self, job_id: str, result: JobResult) -> None:
        path = self.store.write_result(job_id, result.image, extension_for(result.format))
        if result.timelapse is not None:
            self.store.write_file(job_id, TIMELAPSE_FILE, result.timelapse)
        meta = result.to_dict()
        meta.pop("image")
        meta["timelapse"] = meta.pop("timelapse", None) is not None
        await self._end(job_id, JobState.DONE, result=meta, result_path=str(path))

    async def on_failed(self, job_id: str, reason: str, *, retry: bool) -> None:
        self._owned.discard(job_id)
        if retry:
            job = await self.store.requeue(job_id, reason, self.config.max_attempts)
            if job is not None:
                log.warning("job %s: %s; %s", job_id, reason,
                            "back in the queue" if job.state == JobState.QUEUED else job.failure,
                            extra=job_fields(job))
                await self._publish(JobUpdate("state", job))
                await self._publish_positions()
            self._wake.set()
            return
        await self._end(job_id, JobState.FAILED, failure=reason)

    async def on_cancelled(self, job_id: str) -> None:
        job = await self.store.get(job_id)
        await self._end(job_id, JobState.CANCELLED, failure=f"cancelled by {job.cancel_requested_by or 'the system'}")

    async def _end(self, job_id: str, state: JobState, **fields: Any) -> None:
        self._progress_saved.pop(job_id, None)
        job = await self.store.finish(job_id, state, **fields)
        self._owned.discard(job_id)  # after the table says it ended: a job is always running here or finished
        if job is None:
            return  # already ended (e.g. cancelled while the result was on its way)
        log.info("job %s %s%s", job_id, state.value, f": {job.failure}" if job.failure else "",
                 extra=job_fields(job))
        await self._publish(JobUpdate("state", job))
        self._wake.set()

    # -- internals ---------------------------------------------------------------------------------------------------
    async def _publish(self, update: JobUpdate) -> None:
        for inbox in list(self._subscribers.get(update.job.id, ())):
            inbox.put_nowait(update)

    async def _publish_positions(self) -> None:
        positions = await self.positions()
        changed = {job_id: pos for job_id, pos in positions.items() if self._positions.get(job_id) != pos}
        self._positions = positions
        for job_id, pos in changed.items():
            if job_id in self._subscribers:
                await self._publish(JobUpdate("position", await self.store.get(job_id), position=pos))

    async def _dispatch_loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation close() sends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch_ready()
            except Exception:
                log.exception("dispatching failed; retrying in a second")

    async def _dispatch_ready(self) -> None:
        started = False
        while not self._paused and self.backend.free_slots() > 0:
            positions = await self.positions()
            if not positions:
                break
            job_id = min(positions, key=positions.__getitem__)
            job = await self.store.claim(job_id, self.owner, self.config.lease_seconds)
            if job is None:
                continue  # cancelled or taken meanwhile
            self._owned.add(job.id)
            try:
                files = self.store.read_inputs(job)
            except OSError as exc:
                await self._end(job.id, JobState.FAILED, failure=f"the job's input files are gone ({exc})")
                continue
            payload = WorkPayload(job_id=job.id, params=job.params, content=files.content, styles=files.styles,
                                  continue_from=files.continue_from, output_format=job.output_format,
                                  max_output_bytes=job.max_output_bytes,
                                  preview_interval=self.config.preview_interval_seconds, **job.options)
            log.info("job %s started (attempt %d)", job.id, job.attempts, extra=job_fields(job))
            await self._publish(JobUpdate("state", job))
            await self.backend.dispatch(payload)
            started = True
        if started:
            await self._publish_positions()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            try:
                await self.store.renew(sorted(self._owned), self.owner, self.config.lease_seconds)
            except Exception:
                log.exception("lease renewal failed")

    async def _reaper_loop(self) -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(REAPER_INTERVAL)
            try:
                for job_id in await self.store.expired_leases(time.time()):
                    if job_id in self._owned:
                        continue  # ours: the heartbeat renews it
                    job = await self.store.requeue(job_id, "its worker stopped responding", self.config.max_attempts)
                    if job is not None:
                        log.warning("job %s: lease expired; %s", job_id,
                                    "back in the queue" if job.state == JobState.QUEUED else job.failure,
                                    extra=job_fields(job))
                        await self._publish(JobUpdate("state", job))
                        self._wake.set()
                if time.monotonic() - last_purge > PURGE_INTERVAL:
                    last_purge = time.monotonic()
                    removed = await self.store.purge(time.time() - self.config.retention_hours * 3600)
                    if removed:
                        log.info("retention: removed %d finished job(s) and their files", removed)
            except Exception:
                log.exception("lease check failed")
