"""The embedded executor with real workers (spawned processes and threads) running tiny real jobs.

Spawned workers import torch and warm up (a few seconds each), so every test starts one executor and reuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing
import os
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gates import Gate
from PIL import Image

from nst_core.params import StyleParams
from nst_core.result import JobResult
from nst_jobs.config import QueueConfig
from nst_jobs.local import LocalExecutor
from nst_jobs.loop_lag import measure_loop_lag, percentile
from nst_jobs.work import WorkFunction, WorkPayload, perform

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]

SMALL = {"size": 64, "iterations": 20}
#: A few seconds of work, to watch the event loop while it runs.
MEDIUM = {"size": 96, "iterations": 30, "early_stop": 0.0}


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    """Workers given `gate.work()` run the real engine through it: a job to cancel or kill in the middle is held
    there (closed gate) instead of being made long."""
    return Gate(tmp_path / "gate")


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """One intra-op thread per job: on a small CPU shared with other work, two torch threads wait on each other at
    every operation and a tiny job's time varies 4x from run to run. Spawned workers read OMP_NUM_THREADS when they
    import torch; thread workers share this process's setting. (bench/loop_lag.py measures with torch's defaults.)"""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RecordingSink:
    """A `BackendSink` that writes down everything and lets a test wait for a job's end."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.progress: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.done: dict[str, JobResult] = {}
        self.failed: dict[str, tuple[str, bool]] = {}
        self.cancelled: list[str] = []
        self.ended_at: dict[str, float] = {}
        self._ended: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._progressed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def on_started(self, job_id: str) -> None:
        self.started[job_id] = time.monotonic()

    async def on_progress(self, job_id: str, event: dict[str, Any], preview: bytes | None) -> None:
        self.progress[job_id].append(event)
        if event["kind"] == "iteration":
            self._progressed[job_id].set()

    async def on_done(self, job_id: str, result: JobResult) -> None:
        self.done[job_id] = result
        self._end(job_id)

    async def on_failed(self, job_id: str, reason: str, *, retry: bool) -> None:
        self.failed[job_id] = (reason, retry)
        self._end(job_id)

    async def on_cancelled(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self._end(job_id)

    def _end(self, job_id: str) -> None:
        self.ended_at[job_id] = time.monotonic()
        self._ended[job_id].set()

    def outcomes(self, job_id: str) -> list[str]:
        return ([name for name, seen in (("done", job_id in self.done), ("failed", job_id in self.failed))
                 if seen] + ["cancelled"] * self.cancelled.count(job_id))

    async def wait_end(self, job_id: str, timeout: float = 90.0) -> None:
        await asyncio.wait_for(self._ended[job_id].wait(), timeout)

    async def wait_progress(self, job_id: str, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self._progressed[job_id].wait(), timeout)


def make_payload(job_id: str, content: bytes, style: bytes, **params: Any) -> WorkPayload:
    values = {"scales": 1, "device": "cpu", "seed": 1, **params}
    return WorkPayload(job_id=job_id, params=StyleParams(**values).to_dict(), content=content, styles=(style,))


@contextlib.asynccontextmanager
async def running(kind: str, sink: RecordingSink, tmp_path: Path, *, work: WorkFunction = perform,
                  **config: Any) -> AsyncIterator[LocalExecutor]:
    executor = LocalExecutor(QueueConfig(data_dir=tmp_path, executor=kind, devices=("cpu",), **config), work=work)
    await executor.start(sink)
    try:
        yield executor
    finally:
        await executor.close()


def worker_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("nst-worker")]


async def wait_for_free_slot(executor: LocalExecutor, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while executor.free_slots() < 1:
        assert time.monotonic() < deadline, "no worker became free"
        await asyncio.sleep(0.05)


def check_small_result(result: JobResult, content_bytes: bytes) -> None:
    width, height = Image.open(io.BytesIO(content_bytes)).size
    png = Image.open(io.BytesIO(result.image))
    assert png.format == "PNG"
    assert png.size == (result.width, result.height)
    assert result.width == 64  # the long edge
    assert abs(result.height - height * 64 / width) <= 1
    assert result.iterations == 20


async def test_process_worker_runs_jobs_and_loads_the_model_once(tmp_path, content_bytes, style_bytes):
    sink = RecordingSink()
    async with running("process", sink, tmp_path) as executor:
        assert executor.free_slots() == 1
        [worker] = worker_processes()
        for job_id in ("first", "second"):
            dispatched = time.monotonic()
            await executor.dispatch(make_payload(job_id, content_bytes, style_bytes, **SMALL))
            assert executor.free_slots() == 0
            await sink.wait_end(job_id)
            assert sink.outcomes(job_id) == ["done"]
            # The worker warmed up at start: a job starts at once (importing torch alone takes longer than this).
            assert sink.started[job_id] - dispatched < 1.0
            check_small_result(sink.done[job_id], content_bytes)
            iterations = [e["iteration"] for e in sink.progress[job_id] if e["kind"] == "iteration"]
            assert iterations and iterations[-1] == 20  # the last iteration is always reported
            assert executor.free_slots() == 1
        assert worker_processes() == [worker]  # the same process ran both: the model was loaded once
    assert not worker.is_alive()  # close() stops the worker process


async def test_thread_worker_runs_jobs(tmp_path, content_bytes, style_bytes):
    sink = RecordingSink()
    async with running("thread", sink, tmp_path) as executor:
        assert executor.free_slots() == 1
        await executor.dispatch(make_payload("t1", content_bytes, style_bytes, **SMALL))
        assert executor.free_slots() == 0
        await sink.wait_end("t1")
        assert sink.outcomes("t1") == ["done"]
        check_small_result(sink.done["t1"], content_bytes)
        assert any(e["kind"] == "iteration" for e in sink.progress["t1"])
        assert executor.free_slots() == 1
        assert worker_processes() == []  # no subprocess in thread mode


@pytest.mark.parametrize("kind", ["process", "thread"])
async def test_event_loop_stays_responsive_while_a_job_runs(kind, tmp_path, content_bytes, style_bytes):
    sink = RecordingSink()
    async with running(kind, sink, tmp_path) as executor:
        lags: list[float] = []
        runs = ["busy"]
        async with measure_loop_lag(lags):
            while True:  # as many jobs as it takes to watch the loop at least 50 times while one computes
                await executor.dispatch(make_payload(runs[-1], content_bytes, style_bytes, **MEDIUM))
                await sink.wait_end(runs[-1])
                if len(lags) > 50:
                    break
                runs.append(f"busy-{len(runs) + 1}")
        assert sink.outcomes("busy") == ["done"]
        assert all(sink.outcomes(job_id) == ["done"] for job_id in runs)
        assert len(lags) > 50
        p99 = percentile(lags, 0.99)
        assert p99 < 0.100, f"p99 event-loop lag {p99 * 1000:.0f} ms in {kind} mode"


async def test_cancel_stops_a_running_job_and_the_worker_goes_on(tmp_path, gate, content_bytes, style_bytes):
    sink = RecordingSink()
    async with running("process", sink, tmp_path, work=gate.work(), cancel_grace_seconds=30.0) as executor:
        [worker] = worker_processes()
        gate.close()  # the job stays running (held after its first iteration) until it is cancelled
        await executor.dispatch(make_payload("long", content_bytes, style_bytes, **SMALL))
        await sink.wait_progress("long")
        asked = time.monotonic()
        await executor.cancel("long")
        await sink.wait_end("long", timeout=20)
        assert sink.outcomes("long") == ["cancelled"]
        assert sink.ended_at["long"] - asked < 1.5
        assert worker_processes() == [worker]  # stopped cooperatively, not killed
        assert executor.free_slots() == 1
        gate.open()
        await executor.dispatch(make_payload("next", content_bytes, style_bytes, **SMALL))
        await sink.wait_end("next")
        assert sink.outcomes("next") == ["done"]


async def test_crashed_worker_is_replaced_and_the_job_may_retry(tmp_path, gate, content_bytes, style_bytes):
    sink = RecordingSink()
    async with running("process", sink, tmp_path, work=gate.work(), cancel_grace_seconds=0.0) as executor:
        [worker] = worker_processes()
        gate.close()  # the job is held, running, when its worker is killed
        await executor.dispatch(make_payload("doomed", content_bytes, style_bytes, **SMALL))
        await sink.wait_progress("doomed")
        os.kill(worker.pid, signal.SIGKILL)
        await sink.wait_end("doomed", timeout=20)
        assert sink.failed["doomed"] == ("worker crashed (exit code -9)", True)
        assert sink.outcomes("doomed") == ["failed"]

        await wait_for_free_slot(executor)  # a fresh worker, warmed up again
        [respawned] = worker_processes()
        assert respawned.pid != worker.pid

        # A job that does not stop within the grace period (0 s here) is stopped by killing its worker. This one is
        # held at a gate that does not heed its cancel, like a job stuck in a long GPU kernel.
        gate.close(heed_cancel=False)
        await executor.dispatch(make_payload("stuck", content_bytes, style_bytes, **SMALL))
        await sink.wait_progress("stuck")
        await executor.cancel("stuck")
        await sink.wait_end("stuck", timeout=20)
        assert sink.outcomes("stuck") == ["cancelled"]
        await wait_for_free_slot(executor)
        [third] = worker_processes()
        assert third.pid != respawned.pid

        gate.open()
        await executor.dispatch(make_payload("after", content_bytes, style_bytes, **SMALL))
        await sink.wait_end("after")
        assert sink.outcomes("after") == ["done"]
        check_small_result(sink.done["after"], content_bytes)


async def test_a_bad_image_fails_with_the_engine_message_and_no_retry(tmp_path, style_bytes):
    sink = RecordingSink()
    async with running("thread", sink, tmp_path) as executor:
        await executor.dispatch(make_payload("bad", b"this is not an image at all", style_bytes, **SMALL))
        await sink.wait_end("bad")
        reason, retry = sink.failed["bad"]
        assert reason.startswith("content image is not an image")
        assert retry is False
        assert executor.free_slots() == 1


async def test_a_bug_in_the_job_is_an_internal_error_without_retry(tmp_path, content_bytes, style_bytes):
    def perform_with_a_bug(payload: WorkPayload, **kwargs: Any) -> JobResult:
        if payload.job_id == "bug":
            raise ZeroDivisionError("division by zero")
        return perform(payload, **kwargs)

    sink = RecordingSink()
    async with running("thread", sink, tmp_path, work=perform_with_a_bug) as executor:
        await executor.dispatch(make_payload("bug", content_bytes, style_bytes, **SMALL))
        await sink.wait_end("bug")
        assert sink.failed["bug"] == ("internal error: ZeroDivisionError: division by zero", False)
        # The worker survives its job's bug.
        await executor.dispatch(make_payload("fine", content_bytes, style_bytes, **SMALL))
        await sink.wait_end("fine")
        assert sink.outcomes("fine") == ["done"]


async def test_a_device_that_does_not_exist_stops_the_start(tmp_path):
    executor = LocalExecutor(QueueConfig(data_dir=tmp_path, executor="thread", devices=("cuda:7",)))
    with pytest.raises(RuntimeError, match=r"device 'cuda:7'.*no CUDA GPU is usable"):
        await executor.start(RecordingSink())
    assert executor.free_slots() == 0


_ORPHAN_SCRIPT = """
import asyncio, sys
from nst_jobs.config import QueueConfig
from nst_jobs.local import LocalExecutor
from nst_jobs.loop_lag import measure_loop_lag, percentile

class Sink:
    async def on_started(self, job_id): pass
    async def on_progress(self, job_id, event, preview): pass
    async def on_done(self, job_id, result): pass
    async def on_failed(self, job_id, reason, *, retry): pass
    async def on_cancelled(self, job_id): pass

async def main():
    executor = LocalExecutor(QueueConfig(data_dir=sys.argv[1], executor="process", devices=("cpu",)))
    await executor.start(Sink())
    print("ready", flush=True)
    await asyncio.sleep(120)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def test_worker_process_exits_when_the_bot_process_is_killed(tmp_path: Path):
    """A bot killed with SIGKILL must not leave a worker behind holding the GPU (and the model in memory)."""
    import subprocess
    import sys

    script = tmp_path / "bot.py"
    script.write_text(_ORPHAN_SCRIPT)
    bot = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(bot.stdout.readline), 120)
        assert line.strip() == "ready"
        workers = _children(bot.pid)
        assert workers, "the executor started no worker process"
        os.kill(bot.pid, signal.SIGKILL)
        bot.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
            await asyncio.sleep(0.2)
        alive = [pid for pid in workers if Path(f"/proc/{pid}/stat").exists()
                 and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        assert not alive, f"worker processes {alive} outlived the killed bot"
    finally:
        if bot.poll() is None:
            bot.kill()
