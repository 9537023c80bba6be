"""The job queue end to end with the embedded executor (thread workers, real engine at test sizes, real SQLite):
fairness, positions, cancellation, failures, and a SIGKILLed process whose work a new process finishes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gates import Gate
from PIL import Image

from nst_core import StyleParams
from nst_jobs import JobFinishedError, JobNotFoundError, JobRequest, JobState, NotAllowedError, QueueConfig
from nst_jobs.queue import JobQueue

QUICK = StyleParams(size=64, iterations=6, scales=1, device="cpu", seed=1)


@pytest.fixture
def config(tmp_path: Path) -> QueueConfig:
    return QueueConfig(data_dir=tmp_path / "data", executor="thread", devices=("cpu",), per_user_cap=10,
                       lease_seconds=5.0, heartbeat_seconds=1.0, cancel_grace_seconds=5.0)


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    """The queues' workers run the real engine through this gate: a job that must still be running when the test
    looks is held at it (closed) until the test opens it."""
    return Gate(tmp_path / "gate")


def _request(user: str, params: StyleParams, content: bytes, style: bytes) -> JobRequest:
    return JobRequest(params=params, content=content, styles=(style,), requester=user, channel_id="7")


async def _wait_finished(queue: JobQueue, job_id: str, timeout: float = 60.0):
    async def until_done():
        async for update in queue.subscribe(job_id):
            if update.kind == "state" and update.job.finished:
                return update.job
        return await queue.get(job_id)

    return await asyncio.wait_for(until_done(), timeout)


@pytest.mark.asyncio
async def test_a_user_with_one_job_is_not_starved_by_a_user_with_five(config, gate, content_bytes, style_bytes):
    async with JobQueue(config, work=gate.work()) as queue:
        gate.close()
        first = await queue.submit(_request("A", QUICK, content_bytes, style_bytes))
        await gate.wait_held()  # A's first job runs (and stays running until the gate opens)
        a_jobs = [await queue.submit(_request("A", QUICK, content_bytes, style_bytes)) for _ in range(4)]
        b_job = await queue.submit(_request("B", QUICK, content_bytes, style_bytes))
        # while A's first job runs, B is next in line and A's others wait behind it, in their order
        positions = await queue.positions()
        assert positions[b_job.id] == 1
        assert [positions[j.id] for j in a_jobs] == [2, 3, 4, 5]
        gate.open()
        for job in [first, *a_jobs, b_job]:
            assert (await _wait_finished(queue, job.id)).state == JobState.DONE
        started = sorted(await queue.jobs(), key=lambda j: j.dispatch_seq)
        assert [j.id for j in started][:2] == [first.id, b_job.id]


@pytest.mark.asyncio
async def test_subscriber_sees_position_progress_and_a_decodable_result(config, gate, content_bytes, style_bytes):
    async with JobQueue(config, work=gate.work()) as queue:
        gate.close()
        blocker = await queue.submit(_request("A", QUICK, content_bytes, style_bytes))
        await gate.wait_held()  # the blocker runs, and stays running until the gate opens
        job = await queue.submit(_request("B", QUICK.replace(iterations=20), content_bytes, style_bytes))
        updates = []
        async for update in queue.subscribe(job.id):
            updates.append(update)
            if len(updates) == 1:
                gate.open()  # the subscriber has seen its place in line: the blocker may finish
        kinds = [u.kind for u in updates]
        assert updates[0].kind == "state" and updates[0].position == 1  # waiting behind the blocker
        assert [u.job.state for u in updates if u.kind == "state"][-2:] == [JobState.RUNNING, JobState.DONE]
        progress = [u.event for u in updates if u.kind == "progress"]
        assert progress and progress[-1].iteration == 20 and "total" in progress[-1].losses
        assert kinds[-1] == "state"
        done = updates[-1].job
        image = Image.open(io.BytesIO(queue.result_bytes(done)))
        assert image.format == "PNG" and image.size == (64, 42)
        assert done.result["iterations"] == 20 and done.result["params"]["seed"] == 1
        assert (await _wait_finished(queue, blocker.id)).state == JobState.DONE


@pytest.mark.asyncio
async def test_cancel_waiting_and_running_jobs(config, gate, content_bytes, style_bytes):
    async with JobQueue(config, work=gate.work()) as queue:
        gate.close()  # the running job stays running (held after its first iteration) until it is cancelled
        running = await queue.submit(_request("A", QUICK, content_bytes, style_bytes))
        waiting = await queue.submit(_request("A", QUICK, content_bytes, style_bytes))
        with pytest.raises(NotAllowedError, match="not yours to cancel"):
            await queue.cancel(waiting.id, by="B")
        cancelled = await queue.cancel(waiting.id, by="A")
        assert cancelled.state == JobState.CANCELLED and await queue.position(waiting.id) is None

        await gate.wait_held()  # it runs: it has reported progress, and waits at the gate
        asked = time.monotonic()
        await queue.cancel(running.id, by="moderator", privileged=True)
        final = await _wait_finished(queue, running.id, timeout=10)
        assert final.state == JobState.CANCELLED and final.failure == "cancelled by moderator"
        assert time.monotonic() - asked < 1.5  # stops within an iteration or so at test sizes
        with pytest.raises(JobFinishedError, match="already cancelled"):
            await queue.cancel(running.id, by="A")
        # the worker is free again
        gate.open()
        after = await queue.submit(_request("A", QUICK, content_bytes, style_bytes))
        assert (await _wait_finished(queue, after.id)).state == JobState.DONE


@pytest.mark.asyncio
async def test_a_bad_image_fails_once_with_a_message_for_the_user(config, style_bytes):
    async with JobQueue(config) as queue:
        job = await queue.submit(_request("A", QUICK, b"definitely not a picture", style_bytes))
        final = await _wait_finished(queue, job.id)
        assert final.state == JobState.FAILED and final.attempts == 1
        assert final.failure.startswith("content image is not an image")


@pytest.mark.asyncio
async def test_inputs_reads_back_what_a_job_was_given_and_the_seed_it_drew(config, content_bytes, style_bytes):
    async with JobQueue(config) as queue:
        job = await queue.submit(_request("A", QUICK.replace(seed=None), content_bytes, style_bytes))
        done = await _wait_finished(queue, job.id)
        inputs = await queue.inputs(job.id)
        assert inputs == await queue.inputs(done)  # by id or by the job itself
        assert inputs.job_id == job.id and inputs.content == content_bytes and inputs.styles == (style_bytes,)
        assert inputs.params == QUICK.replace(seed=None).to_dict()  # as submitted
        assert inputs.seed is not None and inputs.seed == done.result["params"]["seed"]
        with pytest.raises(JobNotFoundError):
            await queue.inputs("0123456789abcdef")
        shutil.rmtree(queue.store.job_dir(job.id))  # what the retention purge does
        with pytest.raises(OSError):
            await queue.inputs(job.id)


@pytest.mark.asyncio
async def test_a_job_continued_from_an_earlier_result_runs_from_it_at_the_larger_size(config, content_bytes,
                                                                                      style_bytes):
    # the job half of an Upscale: the earlier result travels with the job, reaches the engine, and is purged with it
    async with JobQueue(config) as queue:
        small = await _wait_finished(queue, (await queue.submit(_request("A", QUICK, content_bytes, style_bytes))).id)
        earlier = queue.result_bytes(small)
        bigger = QUICK.replace(size=128, scales=2, iterations=4)
        request = JobRequest(params=bigger, content=content_bytes, styles=(style_bytes,), requester="A",
                             continue_from=earlier)
        job = await queue.submit(request)
        sizes = set()
        async for update in queue.subscribe(job.id):
            if update.kind == "progress" and update.event is not None and update.event.kind == "iteration":
                sizes.add((update.event.width, update.event.height))
        done = await queue.get(job.id)
        assert done.state == JobState.DONE and done.result["iterations"] == 4
        assert sizes == {(128, 85)}  # only the top level ran (a fresh run at 2 scales starts at 64 px)
        with Image.open(io.BytesIO(queue.result_bytes(done))) as image:
            assert image.size == (128, 85)
        assert (await queue.inputs(job.id)).continue_from == earlier  # kept for a follow-up (a Re-roll of it)
        assert (await queue.inputs(small.id)).continue_from is None
        removed = await queue.store.purge(time.time() + 1)
        assert removed == 2 and not queue.store.job_dir(job.id).exists()
        with pytest.raises(JobNotFoundError):
            await queue.inputs(job.id)


def _db_state(data_dir: Path) -> list[tuple[str, str, int, str | None]]:
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        return db.execute("SELECT id, state, attempts, progress FROM jobs ORDER BY seq").fetchall()


def test_sigkill_mid_job_loses_nothing_and_delivers_each_result_once(tmp_path: Path, gate: Gate):
    data_dir, deliveries = tmp_path / "data", tmp_path / "deliveries.txt"
    runner = [sys.executable, str(Path(__file__).parent / "queue_runner.py"), str(data_dir), str(deliveries)]
    env = {**os.environ, **gate.env(), "OMP_NUM_THREADS": "1"}
    specs = [{"user": "A", "params": QUICK.to_dict()} for _ in range(4)]
    gate.close()  # the first job is held, running, until the runner is killed
    first = subprocess.Popen([*runner, json.dumps(specs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the first job is running and has reported progress
            rows = _db_state(data_dir) if (data_dir / "jobs.sqlite3").exists() else []
            if len(rows) == 4 and rows[0][1] == "running" and rows[0][3] is not None:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first job never started: " + first.stdout.read() if first.stdout else "")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    ids = [row[0] for row in _db_state(data_dir)]
    assert _db_state(data_dir)[0][1] == "running"  # killed mid-job: the row still says running

    gate.open()
    second = subprocess.run(runner, capture_output=True, text=True, timeout=180, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = _db_state(data_dir)
    assert [row[1] for row in rows] == ["done"] * 4
    assert rows[0][2] == 2  # the interrupted job ran a second time, counted as an attempt
    delivered = deliveries.read_text().split("\n")[:-1]
    assert delivered == [f"{job_id} done" for job_id in ids]  # each once, in submission order
