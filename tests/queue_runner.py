"""A stand-alone process that runs the job queue on a data directory, for the durability test.

    python tests/queue_runner.py DATA_DIR DELIVERIES [JOBS_JSON]

JOBS_JSON (optional) is a list of {"user": ..., "params": {...}} to submit first. The process then runs jobs and
"delivers" each finished one by appending its id to DELIVERIES, guarded by `mark_delivered` exactly as a front end
would, and exits once nothing is waiting, running or undelivered. Killing it with SIGKILL at any point must lose
nothing: a new runner on the same DATA_DIR finishes the work. With NST_TEST_GATE set (tests/gates.py), its worker
runs the engine through that gate, so the test can hold a job mid-run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from gates import GATE_ENV, GatedWork

from nst_core import StyleParams
from nst_jobs import JobRequest, JobState, QueueConfig
from nst_jobs.queue import JobQueue
from nst_jobs.work import WorkFunction, perform

DATA = Path(__file__).parent / "data"


async def main(data_dir: Path, deliveries: Path, jobs: list[dict[str, object]]) -> int:
    config = QueueConfig(data_dir=data_dir, executor="thread", devices=("cpu",), lease_seconds=2.0,
                         heartbeat_seconds=0.5, per_user_cap=20, global_cap=50)
    content = (DATA / "chelsea_128.png").read_bytes()
    style = (DATA / "starry_night_128.jpg").read_bytes()
    work: WorkFunction = GatedWork.from_env() if GATE_ENV in os.environ else perform
    async with JobQueue(config, work=work) as queue:
        for spec in jobs:
            job = await queue.submit(JobRequest(params=StyleParams.from_dict(spec["params"]), content=content,
                                                styles=(style,), requester=str(spec["user"])))
            print(f"submitted {job.id}", flush=True)
        while True:
            for job in await queue.undelivered():
                if await queue.mark_delivered(job.id):
                    with deliveries.open("a") as fh:
                        fh.write(f"{job.id} {job.state.value}\n")
                        fh.flush()
                        os.fsync(fh.fileno())
            if not await queue.jobs(JobState.QUEUED, JobState.RUNNING) and not await queue.undelivered():
                return 0
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    specs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
    sys.exit(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), specs)))
