"""The job table on real SQLite, and the fairness rule: what survives a restart, caps, claims, retries, retention."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from nst_core import StyleParams
from nst_jobs import JobRequest, JobState, QueueFullError, UserCapError
from nst_jobs.fairness import Waiting, fair_order
from nst_jobs.store import JobStore

PARAMS = StyleParams(size=64, iterations=5, scales=1, device="cpu")


def _request(user: str, content: bytes = b"c", styles: tuple[bytes, ...] = (b"s",)) -> JobRequest:
    return JobRequest(params=PARAMS, content=content, styles=styles, requester=user, channel_id="42",
                      meta={"token": "abc"})


def test_round_robin_between_users_fifo_within_one():
    waiting = [Waiting(f"A{i}", "A", i) for i in range(1, 6)] + [Waiting("B1", "B", 6)]
    # A's first job already started (dispatch 1): B is next, then A and B alternate while both wait.
    assert fair_order(waiting[1:], {"A": 1}) == ["B1", "A2", "A3", "A4", "A5"]
    # nobody started yet: the earliest submission first, then the other user
    assert fair_order(waiting, {}) == ["A1", "B1", "A2", "A3", "A4", "A5"]
    three = [Waiting("A1", "A", 1), Waiting("A2", "A", 2), Waiting("B1", "B", 3), Waiting("C1", "C", 4)]
    assert fair_order(three, {"C": 7, "A": 3}) == ["B1", "A1", "C1", "A2"]


def _run(coro):
    return asyncio.run(coro)


def test_jobs_and_inputs_survive_reopening(tmp_path: Path):
    async def first() -> list[str]:
        store = await JobStore.open(tmp_path)
        ids = [(await store.insert(_request(u, content=u.encode()), per_user_cap=5, global_cap=10)).id
               for u in ("A", "B", "A")]
        await store.close()
        return ids

    async def second(ids: list[str]) -> None:
        store = await JobStore.open(tmp_path)
        jobs = await store.list(JobState.QUEUED)
        assert [j.id for j in jobs] == ids  # same order
        assert [j.seq for j in jobs] == [1, 2, 3]
        files = store.read_inputs(jobs[1])
        assert files.content == b"B" and files.styles == (b"s",) and files.continue_from is None
        assert jobs[0].params == PARAMS.to_dict() and jobs[0].meta == {"token": "abc"}
        await store.close()

    ids = _run(first())
    _run(second(ids))


def test_caps_give_their_specific_errors_and_leave_nothing_behind(tmp_path: Path):
    async def go() -> None:
        store = await JobStore.open(tmp_path)
        for _ in range(2):
            await store.insert(_request("A"), per_user_cap=2, global_cap=3)
        with pytest.raises(UserCapError, match="you already have 2 jobs waiting or running"):
            await store.insert(_request("A"), per_user_cap=2, global_cap=3)
        await store.insert(_request("B"), per_user_cap=2, global_cap=3)
        with pytest.raises(QueueFullError, match=r"the queue is full \(3 jobs"):
            await store.insert(_request("C"), per_user_cap=2, global_cap=3)
        assert len(await store.list()) == 3
        assert len(list((tmp_path / "jobs").iterdir())) == 3  # refused jobs left no files
        await store.close()

    _run(go())


def test_a_job_is_claimed_once_and_requeued_until_attempts_run_out(tmp_path: Path):
    async def go() -> None:
        store = await JobStore.open(tmp_path)
        other = await JobStore.open(tmp_path)  # a second process on the same data directory
        job = await store.insert(_request("A"), per_user_cap=5, global_cap=5)
        first, second = await asyncio.gather(store.claim(job.id, "p1", 30), other.claim(job.id, "p2", 30))
        assert (first is None) != (second is None)  # exactly one winner
        for attempt in (1, 2):
            back = await store.requeue(job.id, "worker died", max_attempts=3)
            assert back is not None and back.state == JobState.QUEUED and back.attempts == attempt
            assert await store.claim(job.id, "p1", 30) is not None
        failed = await store.requeue(job.id, "worker died", max_attempts=3)
        assert failed is not None and failed.state == JobState.FAILED
        assert failed.failure == "failed after 3 attempts: worker died"
        await other.close()
        await store.close()

    _run(go())


def test_a_job_stopped_for_restarts_goes_back_in_line_without_using_up_its_attempts(tmp_path: Path):
    async def go() -> None:
        store = await JobStore.open(tmp_path)
        job = await store.insert(_request("A"), per_user_cap=5, global_cap=5)
        for _ in range(5):  # more restarts than max_attempts: each stop gives its start back
            assert await store.claim(job.id, "p1", 30) is not None
            back = await store.release(job.id)
            assert back is not None and back.state == JobState.QUEUED and back.attempts == 0
            assert back.lease_owner is None
        assert await store.release(job.id) is None  # only a running job can be released
        await store.close()

    _run(go())


def test_expired_leases_are_found_and_delivery_is_recorded_once(tmp_path: Path):
    async def go() -> None:
        store = await JobStore.open(tmp_path)
        job = await store.insert(_request("A"), per_user_cap=5, global_cap=5)
        await store.claim(job.id, "p1", lease_seconds=0.05)
        await asyncio.sleep(0.1)
        assert await store.expired_leases(time.time()) == [job.id]
        path = store.write_result(job.id, b"PNG...", "png")
        done = await store.finish(job.id, JobState.DONE, result={"width": 64}, result_path=str(path))
        assert done is not None and done.result == {"width": 64}
        assert await store.finish(job.id, JobState.FAILED) is None  # no double finish
        assert [j.id for j in await store.undelivered()] == [job.id]
        assert await store.mark_delivered(job.id) is True
        assert await store.mark_delivered(job.id) is False
        assert await store.undelivered() == []
        await store.close()

    _run(go())


def test_retention_deletes_old_finished_jobs_and_their_files(tmp_path: Path):
    async def go() -> None:
        store = await JobStore.open(tmp_path)
        upscale = dataclasses.replace(_request("A"), continue_from=b"an earlier result")
        old = await store.insert(upscale, per_user_cap=5, global_cap=5)
        waiting = await store.insert(_request("A"), per_user_cap=5, global_cap=5)
        assert store.read_inputs(old).continue_from == b"an earlier result"  # kept beside the content and style
        await store.finish(old.id, JobState.CANCELLED)
        assert await store.purge(time.time() + 1) == 1
        assert not (tmp_path / "jobs" / old.id).exists()  # the picture it continued from went with the rest
        assert [j.id for j in await store.list()] == [waiting.id]  # waiting jobs are never purged
        await store.close()

    _run(go())
