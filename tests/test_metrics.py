"""The job metrics move as jobs are submitted, wait, run, finish, fail and are cancelled: the real queue on a real
SQLite table with the embedded executor (a thread worker, the real engine at test sizes), jobs held at a gate so the
waiting and running gauges are read mid-flight; and the job table's own transitions (a retried job, a job that used
up its attempts, a job done on a GPU) counted on the store alone. Each queue has its own registry: nothing carries
over from one test to the next.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from gates import Gate
from prometheus_client import CollectorRegistry, generate_latest

from nst_core import StyleParams
from nst_jobs import JobRequest, JobState, QueueConfig
from nst_jobs.log_format import LogFormat, make_formatter
from nst_jobs.metrics import DURATION_BUCKETS, JobMetrics, worker_registry
from nst_jobs.queue import JobQueue
from nst_jobs.store import JobStore

pytestmark = pytest.mark.timeout(120)

QUICK = StyleParams(size=64, iterations=6, scales=1, device="cpu", seed=1)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def outcomes(registry: CollectorRegistry) -> dict[str, float | None]:
    return {o: value(registry, "nst_jobs_finished_total", outcome=o) for o in ("done", "failed", "cancelled")}


def request(user: str, content: bytes, style: bytes, params: StyleParams = QUICK) -> JobRequest:
    return JobRequest(params=params, content=content, styles=(style,), requester=user, guild_id="555")


async def wait_for(predicate, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


class Lines(logging.Handler):
    """The JSON lines the bot's formatter writes, parsed back."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(make_formatter(LogFormat.JSON))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def config(tmp_path: Path) -> QueueConfig:
    return QueueConfig(data_dir=tmp_path / "data", executor="thread", devices=("cpu",), per_user_cap=10,
                       lease_seconds=5.0, heartbeat_seconds=1.0, cancel_grace_seconds=5.0)


@pytest.mark.asyncio
async def test_counts_and_gauges_follow_jobs_through_the_queue(config, tmp_path, caplog, content_bytes,
                                                               style_bytes):
    gate = Gate(tmp_path / "gate")
    lines = Lines()
    caplog.set_level(logging.INFO, logger="nst_jobs")
    logging.getLogger("nst_jobs").addHandler(lines)
    metrics = JobMetrics()
    reg = metrics.registry
    try:
        async with JobQueue(config, work=gate.work(), metrics=metrics) as queue:
            await queue.refresh_metrics()
            assert value(reg, "nst_jobs_submitted_total") == 0
            assert outcomes(reg) == {"done": 0, "failed": 0, "cancelled": 0}
            assert value(reg, "nst_queue_jobs", state="waiting") == 0
            assert value(reg, "nst_worker_up", device="cpu") == 1

            gate.close()
            running = await queue.submit(request("A", content_bytes, style_bytes))
            await gate.wait_held()  # running, held after its first iteration
            waiting = [await queue.submit(request(u, content_bytes, style_bytes)) for u in ("B", "C")]
            await queue.refresh_metrics()
            assert value(reg, "nst_jobs_submitted_total") == 3
            assert value(reg, "nst_queue_jobs", state="running") == 1
            assert value(reg, "nst_queue_jobs", state="waiting") == 2
            assert value(reg, "nst_queue_wait_seconds_count") == 1  # only the running one has left the line

            await queue.cancel(waiting[1].id, by="C")  # a waiting job: it never ran
            await queue.refresh_metrics()
            assert outcomes(reg) == {"done": 0, "failed": 0, "cancelled": 1}
            assert value(reg, "nst_queue_jobs", state="waiting") == 1

            await queue.cancel(running.id, by="A")  # a running one: the next starts, and is held too

            async def next_one_held() -> bool:
                return waiting[0].id in gate.held()

            await wait_for(next_one_held)
            await queue.refresh_metrics()
            assert outcomes(reg) == {"done": 0, "failed": 0, "cancelled": 2}
            assert value(reg, "nst_queue_jobs", state="running") == 1
            assert value(reg, "nst_queue_jobs", state="waiting") == 0
            assert value(reg, "nst_queue_wait_seconds_count") == 2
            assert value(reg, "nst_job_duration_seconds_count") == 0  # cancelled runs are not run times

            gate.open()
            bad = await queue.submit(request("D", b"definitely not a picture", style_bytes))

            async def both_ended() -> bool:
                return all([(await queue.get(j.id)).finished for j in (waiting[0], bad)])

            await wait_for(both_ended, 60)
            await queue.refresh_metrics()
            assert outcomes(reg) == {"done": 1, "failed": 1, "cancelled": 2}
            assert value(reg, "nst_jobs_submitted_total") == 4
            assert value(reg, "nst_queue_jobs", state="running") == 0
            done = await queue.get(waiting[0].id)
            assert value(reg, "nst_job_duration_seconds_count") == 1
            assert value(reg, "nst_job_duration_seconds_sum") == pytest.approx(done.run_seconds)
            assert value(reg, "nst_job_duration_seconds_bucket", le="1800.0") == 1
            assert value(reg, "nst_gpu_memory_peak_bytes", device="cpu") is None  # a CPU job reports no peak
            text = generate_latest(reg).decode()
            assert "555" not in text and "requester" not in text  # no guild or user ids as labels
    finally:
        logging.getLogger("nst_jobs").removeHandler(lines)
        gate.open()

    # the log lines about a job carry its id (and its guild); the one saying it is done carries its run time
    ended = [line for line in lines.lines if line.get("job_id") == done.id]
    assert {"time", "level", "logger", "message"} <= set(ended[0])
    assert any("queued" in line["message"] for line in ended)
    assert all(line["guild_id"] == "555" for line in ended if line["logger"] == "nst_jobs.queue")
    finished = next(line for line in ended if line["message"] == f"job {done.id} done")
    assert finished["duration_seconds"] == pytest.approx(done.run_seconds, abs=0.001)


def test_store_transitions_count_retries_and_exhausted_attempts_once(tmp_path: Path):
    """A job back in line after its worker died is neither a new submission nor a new wait; one whose attempts are
    used up is a failure. And a job done on CUDA sets its device's peak memory (CUDA is simulated here by a result
    that carries a peak, as run_job's does on a GPU)."""

    async def run() -> JobMetrics:
        metrics = JobMetrics()
        store = await JobStore.open(tmp_path, observer=metrics)
        try:
            params = StyleParams(size=64, iterations=5, scales=1, device="cpu")
            first = await store.insert(JobRequest(params=params, content=b"c", styles=(b"s",), requester="A"),
                                       per_user_cap=5, global_cap=10)
            await store.claim(first.id, "me", 60)
            again = await store.requeue(first.id, "its worker stopped responding", max_attempts=2)
            assert again is not None and again.state == JobState.QUEUED
            await store.claim(first.id, "me", 60)
            failed = await store.requeue(first.id, "its worker stopped responding", max_attempts=2)
            assert failed is not None and failed.state == JobState.FAILED

            gpu = await store.insert(JobRequest(params=params, content=b"c", styles=(b"s",), requester="B"),
                                     per_user_cap=5, global_cap=10)
            await store.claim(gpu.id, "me", 60)
            await store.finish(gpu.id, JobState.DONE, result={"device": "cuda:0", "peak_memory_bytes": 3_221_225_472})
            assert await store.finish(gpu.id, JobState.FAILED) is None  # no double finish, no double count
        finally:
            await store.close()
        return metrics

    reg = asyncio.run(run()).registry
    assert value(reg, "nst_jobs_submitted_total") == 2
    assert value(reg, "nst_queue_wait_seconds_count") == 2  # each job's first start only
    assert outcomes(reg) == {"done": 1, "failed": 1, "cancelled": 0}
    assert value(reg, "nst_gpu_memory_peak_bytes", device="cuda:0") == 3_221_225_472
    assert value(reg, "nst_job_duration_seconds_count") == 1


def test_duration_buckets_reach_half_an_hour_and_the_worker_registry_says_it_is_up():
    assert DURATION_BUCKETS[-1] == 1800 and DURATION_BUCKETS[0] <= 10
    reg = worker_registry("cuda:1")
    assert value(reg, "nst_worker_up", device="cuda:1") == 1
    assert value(reg, "process_resident_memory_bytes") > 0  # the worker process's own figures
