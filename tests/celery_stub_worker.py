"""A test-side Celery worker app for `nst.stylize` whose worker process dies on purpose, so Celery records a lost
worker (FAILURE with WorkerLostError) for the client to decode.

    STUB_BROKER_URL=redis://... celery -A celery_stub_worker worker --pool prefork --concurrency 1 -Q nst

Our own worker app requeues a job whose worker process died (`task_reject_on_worker_lost`); Celery records
WorkerLostError when the message is not requeued (a worker set up without it), which is the case this stub plays.
What a job does is decided by its seed, counted per job id in Redis, never by timing:

    seed 1: the first run kills its worker process, the second returns a small PNG (a "done" answer)
    seed 2: every run kills its worker process
    seed 3: like 2, but run N first waits until the test opened it (INCR `gate_key(job_id)` to N)

No torch here: the stub answers in milliseconds. It does not track STARTED, so a task's state stays what it was
until the run ends (a stale FAILURE would stay visible while a gated run waits).
"""

from __future__ import annotations

import base64
import io
import os
import time
from typing import Any

import redis
from celery import Celery, Task
from PIL import Image

BROKER = os.environ.get("STUB_BROKER_URL", "redis://127.0.0.1:6379/5")

app = Celery("nst-stub", broker=BROKER, backend=BROKER, set_as_current=False)
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=False, worker_prefetch_multiplier=1,
                task_track_started=False, task_serializer="json", result_serializer="json", accept_content=["json"],
                task_default_queue="nst", broker_connection_retry_on_startup=True)


def runs_key(job_id: str) -> str:
    return f"stub:runs:{job_id}"


def gate_key(job_id: str) -> str:
    return f"stub:gate:{job_id}"


def _wait_for_gate(client: redis.Redis, job_id: str, run: int) -> None:
    deadline = time.monotonic() + 60
    while int(client.get(gate_key(job_id)) or 0) < run and time.monotonic() < deadline:
        time.sleep(0.05)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


@app.task(bind=True, name="nst.stylize")
def stylize(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    job_id = payload["job_id"]
    client = redis.Redis.from_url(BROKER)
    runs = client.incr(runs_key(job_id))
    seed = payload["params"].get("seed")
    if seed == 3:
        _wait_for_gate(client, job_id, runs)
    if seed in (2, 3) or (seed == 1 and runs == 1):
        os._exit(1)  # the worker process dies mid-job
    result = {"image": base64.b64encode(_png()).decode("ascii"), "format": "png", "width": 8, "height": 6,
              "iterations": runs, "losses": {}, "timings": {"total": 0.0}, "params": {"seed": seed},
              "device": "stub", "precision": "fp32", "notes": []}
    return {"status": "done", "result": result}
