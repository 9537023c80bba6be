"""The Celery backend against a real redis-server and real Celery worker processes, tiny CPU jobs.

What a user of the bot (or of `nst stylize --broker`) would notice: a job sent to a worker comes back with progress
and a picture; a worker killed mid-job does not lose the job (another worker finishes it, and the result arrives
once); cancel stops a running job within seconds and a queued one never runs; a result that arrived while the bot
was down is still delivered; a mistyped broker gives one clear line.

Workers get a 12 s visibility timeout (11 s time limit) so a killed worker's job comes back quickly, and one torch
thread each (2 cores shared by everything). They run the project's app through a gate (tests/gated_celery_worker.py,
tests/gates.py): a test that acts on a running job closes the gate, and the job waits, running, until it is opened.
A job that must finish stays small (at most 20 iterations at 64 px): each run has to end within that 11 s time
limit, on a loaded machine too (40 iterations took 7.5 s there, held time included). `nst stylize --broker` runs as
`python -m nst_jobs.cli`, the module the installed `nst` command runs (pyproject.toml); `python -m nst_core` is the
engine alone and refuses `--broker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from gates import Gate
from PIL import Image
from redis_server import free_port, redis_url  # noqa: F401 - the fixture

from nst_core.params import StyleParams
from nst_core.result import JobResult
from nst_jobs.celery_app import BrokerUnavailableError, cancel_key, make_celery
from nst_jobs.celery_backend import CeleryBackend
from nst_jobs.config import QueueConfig
from nst_jobs.work import WorkPayload

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
CONTENT = DATA / "chelsea_128.png"
STARRY = DATA / "starry_night_128.jpg"
VISIBILITY_TIMEOUT = 12
TIME_LIMIT = 11
#: The `nst` command as installed (pyproject.toml: nst = "nst_jobs.cli:main").
NST = [sys.executable, "-m", "nst_jobs.cli"]


# ---- workers ----------------------------------------------------------------------------------------------------


class Worker:
    """One worker process group (main process + one prefork child): by default `nst_jobs.celery_app` run through
    `gate` (`celery -A gated_celery_worker worker`); `app` and `env` run another app (the test-side stub) the same
    way."""

    def __init__(self, name: str, broker: str, log: Path, gate: Gate | None = None, *,
                 app: str = "gated_celery_worker", env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        pythonpath = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, **(gate.env() if gate else {}), "PYTHONPATH": pythonpath, "NST_BROKER_URL": broker,
               "NST_DEVICE": "cpu",
               "NST_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT), "NST_TIME_LIMIT": str(TIME_LIMIT),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "prefork",
                 "--concurrency", "1", "-Q", "nst", "--prefetch-multiplier", "1", "-n", f"{name}@%h",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            if " ready." in self.text():
                return
            time.sleep(0.1)
        pytest.fail(f"worker {self.name} not ready after {timeout} s:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and children), like a machine that dies."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


class Workers:
    def __init__(self, broker: str, folder: Path) -> None:
        self.broker = broker
        self.folder = folder
        self.gate = Gate(folder / "gate")
        self.all: list[Worker] = []
        self.current: Worker | None = None

    def start(self, name: str) -> Worker:
        worker = Worker(name, self.broker, self.folder / f"{name}.log", self.gate)
        self.all.append(worker)
        worker.wait_ready()
        self.current = worker
        return worker

    def ensure(self) -> Worker:
        if self.current is None or self.current.proc.poll() is not None:
            return self.start(f"w{len(self.all) + 1}")
        return self.current

    def stop_all(self) -> None:
        for worker in self.all:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def workers(redis_url, tmp_path_factory):  # noqa: F811
    redis.Redis.from_url(redis_url).flushdb()
    pool = Workers(redis_url, tmp_path_factory.mktemp("workers"))
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def worker(workers) -> Worker:
    return workers.ensure()


@pytest.fixture
def gate(workers) -> Iterator[Gate]:
    """The workers' gate, open again after each test (the workers outlive the test)."""
    workers.gate.open()
    yield workers.gate
    workers.gate.open()


# ---- helpers ----------------------------------------------------------------------------------------------------


def payload(size: int = 64, iterations: int = 40, *, content: bytes | None = None) -> WorkPayload:
    params = StyleParams(size=size, iterations=iterations, scales=1, device="cpu", seed=1).to_dict()
    return WorkPayload(job_id=uuid.uuid4().hex, params=params,
                       content=CONTENT.read_bytes() if content is None else content,
                       styles=(STARRY.read_bytes(),))


def config(broker: str, tmp_path: Path, **overrides: Any) -> QueueConfig:
    return QueueConfig(data_dir=tmp_path, backend="celery", broker_url=broker,
                       celery_visibility_timeout_seconds=VISIBILITY_TIMEOUT, celery_time_limit_seconds=TIME_LIMIT,
                       **overrides)


class RecordingSink:
    """Records every call the backend makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def on_started(self, job_id: str) -> None:
        self.calls.append(("started", job_id, None))

    async def on_progress(self, job_id: str, event: dict[str, Any], preview: bytes | None) -> None:
        self.calls.append(("progress", job_id, event))

    async def on_done(self, job_id: str, result: JobResult) -> None:
        self.calls.append(("done", job_id, result))

    async def on_failed(self, job_id: str, reason: str, *, retry: bool) -> None:
        self.calls.append(("failed", job_id, (reason, retry)))

    async def on_cancelled(self, job_id: str) -> None:
        self.calls.append(("cancelled", job_id, None))

    def of(self, kind: str, job_id: str) -> list[Any]:
        return [data for k, j, data in self.calls if k == kind and j == job_id]

    async def wait_for_iteration(self, job_id: str, iteration: int, timeout: float) -> None:
        """Until the backend has relayed the progress of `iteration`."""
        deadline = time.monotonic() + timeout
        while not any(e["kind"] == "iteration" and e["iteration"] == iteration for e in self.of("progress", job_id)):
            if time.monotonic() > deadline:
                pytest.fail(f"no progress for iteration {iteration} of {job_id} within {timeout} s")
            await asyncio.sleep(0.05)

    def ends(self, job_id: str) -> list[str]:
        return [k for k, j, _ in self.calls if j == job_id and k in ("done", "failed", "cancelled")]

    async def wait_for(self, kind: str, job_id: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not self.of(kind, job_id):
            ends = self.ends(job_id)
            if ends and kind not in ends:
                pytest.fail(f"waiting for {kind} of {job_id}, got {self.calls[-1]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {kind} for {job_id} within {timeout} s; calls: {[c[:2] for c in self.calls]}")
            await asyncio.sleep(0.05)
        return self.of(kind, job_id)


def assert_png(result: JobResult, longest: int) -> None:
    assert result.format == "png"
    with Image.open(io.BytesIO(result.image)) as image:
        assert image.format == "PNG"
        assert max(image.size) == longest
        assert image.size == (result.width, result.height)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---- a mistyped broker: one clear line, no password ---------------------------------------------------------------


def test_nst_worker_with_unreachable_broker_exits_2_with_one_line():
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    proc = subprocess.run([sys.executable, "-m", "nst_jobs.worker_cli", "--broker", url], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("nst-worker: error: cannot reach the broker at redis://127.0.0.1:")
    assert "hunter2" not in proc.stderr


def test_nst_stylize_with_unreachable_broker_exits_2_with_one_line(tmp_path):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    out = tmp_path / "out.png"
    proc = subprocess.run([*NST, "stylize", CONTENT, STARRY, "-o", out, "--broker", url],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc.stderr).startswith("nst: error: cannot reach the broker at redis://127.0.0.1:")
    assert "hunter2" not in proc.stderr
    assert not out.exists()


def test_celery_backend_with_unreachable_broker_fails_to_start_with_a_clear_message(tmp_path):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"

    async def scenario() -> None:
        backend = CeleryBackend(config(url, tmp_path))
        try:
            with pytest.raises(BrokerUnavailableError) as caught:
                await backend.start(RecordingSink())
        finally:
            await backend.close()
        assert str(caught.value).startswith("cannot reach the broker at redis://127.0.0.1:")
        assert "hunter2" not in str(caught.value)

    asyncio.run(scenario())


# ---- CeleryBackend with a worker -----------------------------------------------------------------------------------


def test_worker_runs_a_job_with_progress_and_returns_the_picture(worker, gate, redis_url, tmp_path):  # noqa: F811
    async def scenario() -> None:
        backend = CeleryBackend(config(redis_url, tmp_path), poll_interval=0.2)
        sink = RecordingSink()
        await backend.start(sink)
        try:
            job = payload(64, 12)
            assert backend.free_slots() == 2
            gate.close()  # the job goes on from an iteration report only once the backend has relayed it
            await backend.dispatch(job)
            assert backend.free_slots() == 1
            iteration = 0
            for _ in range(3):
                _, iteration = await gate.wait_held(beyond=iteration)
                await sink.wait_for_iteration(job.job_id, iteration, 30)
                gate.step()
            gate.open()
            (result,) = await sink.wait_for("done", job.job_id, 60)
            assert backend.free_slots() == 2
        finally:
            await backend.close()
        assert_png(result, 64)
        assert result.iterations == 12
        assert result.device == "cpu"
        assert len(sink.of("started", job.job_id)) == 1
        iterations = [e["iteration"] for e in sink.of("progress", job.job_id) if e["kind"] == "iteration"]
        assert len(set(iterations)) >= 3, iterations
        assert iterations == sorted(iterations)
        assert iterations[-1] <= 12  # the last one may be overtaken by the result
        assert sink.ends(job.job_id) == ["done"]
        kinds = [k for k, j, _ in sink.calls if j == job.job_id]
        assert kinds[0] == "started"

    asyncio.run(scenario())


def test_a_bad_image_fails_once_with_a_message_for_the_user(worker, redis_url, tmp_path):  # noqa: F811
    async def scenario() -> None:
        backend = CeleryBackend(config(redis_url, tmp_path), poll_interval=0.2)
        sink = RecordingSink()
        await backend.start(sink)
        try:
            job = payload(content=b"this is not an image at all")
            await backend.dispatch(job)
            ((reason, retry),) = await sink.wait_for("failed", job.job_id, 30)
        finally:
            await backend.close()
        assert retry is False
        assert "content" in reason
        assert sink.ends(job.job_id) == ["failed"]

    asyncio.run(scenario())


def test_cancel_stops_a_running_job_and_a_queued_one_never_runs(worker, gate, redis_url, tmp_path):  # noqa: F811
    app = make_celery(redis_url, time_limit=TIME_LIMIT, visibility_timeout=VISIBILITY_TIMEOUT)

    async def scenario() -> tuple[str, str]:
        backend = CeleryBackend(config(redis_url, tmp_path, cancel_grace_seconds=8), poll_interval=0.2)
        sink = RecordingSink()
        await backend.start(sink)
        try:
            running, queued = payload(64, 20), payload(64, 8)
            gate.close()  # the running job stays running (held after its first iteration) until it is cancelled
            await backend.dispatch(running)
            await backend.dispatch(queued)  # one worker process, prefetch 1: this one waits in Redis
            await sink.wait_for("progress", running.job_id, 60)

            await backend.cancel(queued.job_id)
            # usually at once (no worker had taken it); if a worker had just taken it, within an iteration
            await sink.wait_for("cancelled", queued.job_id, 5)
            assert sink.ends(queued.job_id) == ["cancelled"]
            started = time.monotonic()
            await backend.cancel(running.job_id)
            assert time.monotonic() - started < 2  # cancel() itself does not wait for the worker
            await sink.wait_for("cancelled", running.job_id, 5)
            took = time.monotonic() - started
            assert sink.ends(running.job_id) == ["cancelled"]
            assert took < 5, f"cancel took {took:.1f} s: the job did not stop cooperatively"
            assert backend.free_slots() == 2
            progress_seen = len(sink.of("progress", running.job_id))
            await asyncio.sleep(1)
            assert len(sink.of("progress", running.job_id)) == progress_seen
        finally:
            await backend.close()
        return running.job_id, queued.job_id

    running_id, queued_id = asyncio.run(scenario())
    # The worker is free again and drops the queued job when it reaches it (revoked, or stopped by its cancel key).
    deadline = time.monotonic() + 30
    while True:
        meta = app.backend.get_task_meta(queued_id)
        if meta["status"] in ("REVOKED", "SUCCESS", "FAILURE"):
            break
        assert time.monotonic() < deadline, f"queued job still {meta['status']}"
        time.sleep(0.2)
    assert meta["status"] == "REVOKED" or meta["result"] == {"status": "cancelled"}, meta
    assert app.backend.get_task_meta(running_id)["result"] == {"status": "cancelled"}
    assert redis.Redis.from_url(redis_url).ttl(cancel_key(running_id)) > 3600


def test_a_job_still_running_after_the_grace_period_is_killed_and_not_run_again(worker, gate, redis_url,  # noqa: F811
                                                                                  tmp_path):
    async def scenario() -> str:
        # No grace at all: the hard revoke (SIGKILL of the worker process) races the cooperative stop.
        backend = CeleryBackend(config(redis_url, tmp_path, cancel_grace_seconds=0), poll_interval=0.2)
        sink = RecordingSink()
        await backend.start(sink)
        try:
            job = payload(64, 20)
            gate.close()  # the job stays running (held after its first iteration) until it is cancelled
            await backend.dispatch(job)
            await sink.wait_for("progress", job.job_id, 60)
            await backend.cancel(job.job_id)
            await sink.wait_for("cancelled", job.job_id, 10)
            await asyncio.sleep(1)
            assert sink.ends(job.job_id) == ["cancelled"]
        finally:
            await backend.close()
        return job.job_id

    job_id = asyncio.run(scenario())
    client = redis.Redis.from_url(redis_url)
    # Acknowledged, not handed back: nothing in the queue or among the unacknowledged messages mentions it.
    assert not any(job_id.encode() in m for m in client.lrange("nst", 0, -1))
    assert not any(job_id.encode() in m for m in client.hvals("unacked"))


def test_a_new_worker_process_has_time_to_warm_up(redis_url):  # noqa: F811
    """After a hard revoke (or a crash) the worker starts a new process, which loads torch and the weights before it
    reports up: Celery's default 4 s would kill it again and again on a busy machine (then the next test here, which
    needs the restarted process, fails)."""
    app = make_celery(redis_url)
    assert app.conf.worker_proc_alive_timeout >= 120


def test_adopt_reports_a_result_that_arrived_while_nobody_was_watching(worker, redis_url, tmp_path):  # noqa: F811
    app = make_celery(redis_url, time_limit=TIME_LIMIT, visibility_timeout=VISIBILITY_TIMEOUT)
    job = payload(64, 10)
    app.tasks["nst.stylize"].apply_async(args=[job.to_dict()], task_id=job.job_id, queue="nst")
    async_result = app.AsyncResult(job.job_id)
    deadline = time.monotonic() + 60
    while async_result.state != "SUCCESS":  # the "bot" is down while the job finishes
        assert time.monotonic() < deadline, async_result.state
        time.sleep(0.2)
    unknown = uuid.uuid4().hex

    async def scenario() -> None:
        backend = CeleryBackend(config(redis_url, tmp_path), poll_interval=0.2)
        sink = RecordingSink()
        await backend.start(sink)
        try:
            started = time.monotonic()
            still_running = await backend.adopt([job.job_id, unknown])
            assert set(still_running) == {job.job_id, unknown}  # nothing is requeued behind Celery's back
            (result,) = await sink.wait_for("done", job.job_id, 5)
            assert time.monotonic() - started < 2
            assert_png(result, 64)
            assert backend.free_slots() == 1  # the unknown (PENDING) id is still watched
            assert sink.ends(unknown) == []
        finally:
            await backend.close()

    asyncio.run(scenario())


# ---- nst stylize --broker ------------------------------------------------------------------------------------------


def test_nst_stylize_with_broker_runs_on_the_worker_and_writes_the_file(worker, redis_url, tmp_path):  # noqa: F811
    out = tmp_path / "cat.png"
    proc = subprocess.run(
        [*NST, "stylize", CONTENT, STARRY, "-o", out, "--size", "64", "--iterations", "20",
         "--scales", "1", "--device", "cpu", "--seed", "5", "--broker", redis_url],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out} (") and "20 iterations" in proc.stdout and "seed 5" in proc.stdout
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert max(image.size) == 64
    assert "Traceback" not in proc.stderr
    assert "scale 1/1" in proc.stderr  # the same progress bar as a local run


def test_nst_stylize_continue_from_with_broker_starts_the_worker_from_that_picture(worker, redis_url,  # noqa: F811
                                                                                   tmp_path):
    base = [*NST, "stylize", CONTENT, STARRY, "--size", "128", "--scales", "2", "--iterations", "6", "--device",
            "cpu", "--seed", "5", "--broker", redis_url]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    proc = subprocess.run([*base, "-o", tmp_path / "x.png", "--continue-from", broken], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode != 0 and f"previous result image '{broken}' is not an image" in proc.stderr, proc.stderr
    start = tmp_path / "small.png"
    Image.open(CONTENT).resize((64, 42)).save(start)
    out = tmp_path / "big.png"
    proc = subprocess.run([*base, "-o", out, "--continue-from", start], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "(128x85, 6 iterations" in proc.stdout
    assert "scale 2/2 128x85" in proc.stderr and "scale 1/2" not in proc.stderr  # the top level only, from it
    with Image.open(out) as image:
        assert image.size == (128, 85)


def test_a_payload_keeps_every_field_through_celerys_json(tmp_path):
    """What the bot's queue hands to a Celery worker arrives whole, the picture a job continues from included; a
    payload sent by an older bot (without that field) still reads."""
    job = WorkPayload(job_id="abc", params=StyleParams(size=64).to_dict(), content=b"c", styles=(b"s1", b"s2"),
                      max_output_bytes=4096, timelapse_frames=24, continue_from=b"earlier result")
    wire = json.loads(json.dumps(job.to_dict()))
    assert WorkPayload.from_dict(wire) == job
    del wire["continue_from"]
    assert WorkPayload.from_dict(wire).continue_from is None


def test_ctrl_c_on_nst_stylize_with_broker_cancels_the_job_on_the_worker(worker, gate, redis_url,  # noqa: F811
                                                                           tmp_path):
    client = redis.Redis.from_url(redis_url)
    before = set(client.keys("celery-task-meta-*"))
    out = tmp_path / "cat.png"
    gate.close()  # the job stays running on the worker (held after its first iteration) until it is cancelled
    proc = subprocess.Popen(
        [*NST, "stylize", CONTENT, STARRY, "-o", out, "--size", "64", "--iterations",
         "20", "--scales", "1", "--broker", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        key = None
        while key is None:  # wait until the job runs on the worker
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the job never started"
            for candidate in set(client.keys("celery-task-meta-*")) - before:
                if b'"PROGRESS"' in (client.get(candidate) or b""):
                    key = candidate
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "nst: cancelled"
    assert stdout == ""
    assert not out.exists()
    job_id = key.decode().removeprefix("celery-task-meta-")
    assert client.exists(cancel_key(job_id))
    app = make_celery(redis_url, time_limit=TIME_LIMIT, visibility_timeout=VISIBILITY_TIMEOUT)
    deadline = time.monotonic() + 15
    while app.backend.get_task_meta(job_id)["status"] != "SUCCESS":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert app.backend.get_task_meta(job_id)["result"] == {"status": "cancelled"}


def test_the_installed_nst_command_is_the_job_systems_cli_and_loads_no_celery_for_help():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["nst"] == "nst_jobs.cli:main"
    script = "import sys\nfrom nst_jobs.cli import main\ncode = main(['stylize', '--help'])\n" \
             "print(code, 'celery' in sys.modules, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--broker URL" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "0 False False"


def test_nst_stylize_with_broker_fails_with_a_reason_when_no_worker_takes_the_job(redis_url, tmp_path):  # noqa: F811
    """Workers down: like the bot, the CLI gives up after inflight x time limit + visibility timeout (the workers'
    NST_TIME_LIMIT and NST_VISIBILITY_TIMEOUT: 2 x 1 + 2 = 4 s here) with the reason, instead of waiting for ever,
    and marks the job cancelled so a worker that appears later skips it."""
    broker = redis_url.rsplit("/", 1)[0] + "/7"  # a database no test worker listens on
    client = redis.Redis.from_url(broker)
    before = set(client.keys("nst:cancel:*"))
    out = tmp_path / "cat.png"
    env = {**os.environ, "NST_TIME_LIMIT": "1", "NST_VISIBILITY_TIMEOUT": "2"}
    started = time.monotonic()
    proc = subprocess.run([*NST, "stylize", CONTENT, STARRY, "-o", out, "--size", "64", "--broker", broker],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, check=False)
    assert time.monotonic() - started >= 4
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc.stderr) == ("nst: error: no worker took the job within 4 s (are the nst-worker processes "
                                     "running?); please try again")
    assert not out.exists()
    assert len(set(client.keys("nst:cancel:*")) - before) == 1


# ---- a worker process that dies (test-side stub worker: Celery records WorkerLostError) --------------------------


@pytest.fixture(scope="module")
def stub_broker(redis_url, tmp_path_factory):  # noqa: F811
    """The broker URL of a running tests/celery_stub_worker.py worker (its own Redis database)."""
    broker = redis_url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(broker).flushdb()
    worker = Worker("stub", broker, tmp_path_factory.mktemp("stub") / "stub.log", app="celery_stub_worker",
                    env={"STUB_BROKER_URL": broker})
    try:
        worker.wait_ready()
        yield broker
    finally:
        worker.kill()


def stub_runs(broker: str, job_id: str) -> int:
    """How often the stub ran the job (its `runs_key`; not imported: a second app here would register the task)."""
    return int(redis.Redis.from_url(broker).get(f"stub:runs:{job_id}") or 0)


def test_nst_stylize_with_broker_sends_a_job_whose_worker_died_again(stub_broker, tmp_path):
    """The CLI retries a lost worker as the bot's queue does (up to max_attempts runs): the stub's first run dies."""
    out = tmp_path / "cat.png"
    proc = subprocess.run([*NST, "stylize", CONTENT, STARRY, "-o", out, "--seed", "1", "--broker", stub_broker],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "the worker running the job died (" in proc.stderr
    assert "sending it again (attempt 2 of 3)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith(f"wrote {out} (8x6, 2 iterations")  # the stub's second run answered
    with Image.open(out) as image:
        assert image.size == (8, 6)


def test_nst_stylize_with_broker_gives_up_on_a_job_whose_worker_always_dies(stub_broker, tmp_path):
    out = tmp_path / "cat.png"
    proc = subprocess.run([*NST, "stylize", CONTENT, STARRY, "-o", out, "--seed", "2", "--broker", stub_broker],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nst: error: the worker running the job died (") and last.endswith(", 3 times; giving up")
    assert "sending it again (attempt 3 of 3)" in proc.stderr
    assert not out.exists()


def test_celery_backend_reports_a_lost_worker_for_a_retry_and_a_second_dispatch_runs_again(stub_broker,
                                                                                           tmp_path):
    """The backend decodes a lost worker like the CLI (on_failed with retry=True: the queue runs it again), and
    dispatching the same job id again really waits for the new run: the earlier FAILURE is not read as its end.
    The stub holds every run until the test opens its gate (seed 3)."""
    params = StyleParams(size=64, iterations=8, scales=1, device="cpu", seed=3).to_dict()
    job = WorkPayload(job_id=uuid.uuid4().hex, params=params, content=CONTENT.read_bytes(),
                      styles=(STARRY.read_bytes(),))
    client = redis.Redis.from_url(stub_broker)

    async def failures(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(sink.of("failed", job.job_id)) < count:
            assert time.monotonic() < deadline, sink.calls
            await asyncio.sleep(0.05)

    sink = RecordingSink()

    async def scenario() -> None:
        backend = CeleryBackend(config(stub_broker, tmp_path), poll_interval=0.1)
        await backend.start(sink)
        try:
            await backend.dispatch(job)
            client.incr(f"stub:gate:{job.job_id}")  # run 1 may go on (and die)
            await failures(1)
            await backend.dispatch(job)  # what the queue does for retry=True
            await asyncio.sleep(1)  # ten polls while run 2 is held at its gate
            assert len(sink.of("failed", job.job_id)) == 1, sink.calls
            client.incr(f"stub:gate:{job.job_id}")
            await failures(2)
        finally:
            await backend.close()
        assert stub_runs(stub_broker, job.job_id) == 2
        for reason, retry in sink.of("failed", job.job_id):
            assert retry is True and reason.startswith("the worker running the job died (")

    asyncio.run(scenario())


# ---- a worker dies mid-job -----------------------------------------------------------------------------------------


def test_a_job_whose_worker_is_killed_finishes_on_another_worker_once(workers, gate, redis_url,  # noqa: F811
                                                                     tmp_path):
    first = workers.ensure()
    app = make_celery(redis_url, time_limit=TIME_LIMIT, visibility_timeout=VISIBILITY_TIMEOUT)

    async def scenario() -> None:
        backend = CeleryBackend(config(redis_url, tmp_path), poll_interval=0.2)
        sink = RecordingSink()
        await backend.start(sink)
        try:
            job = payload(64, 12)
            gate.close()  # the job is held, running, when its worker is killed
            await backend.dispatch(job)
            await sink.wait_for("progress", job.job_id, 60)
            first.kill()
            # While no worker is alive, a job is sent and cancelled: the next worker never heard the revoke, the
            # cancel key alone must keep it from running.
            orphan = payload(64, 8)
            await backend.dispatch(orphan)
            await backend.cancel(orphan.job_id)
            assert sink.ends(orphan.job_id) == ["cancelled"]

            gate.open()  # the job runs through on the next worker
            second = await asyncio.to_thread(workers.start, f"w{len(workers.all) + 1}")
            (result,) = await sink.wait_for("done", job.job_id, VISIBILITY_TIMEOUT + 60)
            await asyncio.sleep(1.5)
        finally:
            await backend.close()
        assert app.backend.get_task_meta(orphan.job_id)["result"] == {"status": "cancelled"}
        assert_png(result, 64)
        assert result.iterations == 12
        assert sink.ends(job.job_id) == ["done"]  # once, and no failure for the lost worker
        assert len(sink.of("started", job.job_id)) == 1
        assert f"Task nst.stylize[{job.job_id}] succeeded" in second.text()  # the second worker ran it

    asyncio.run(scenario())
    assert first.proc.returncode == -signal.SIGKILL


def test_sigterm_lets_the_worker_finish_its_running_job_once_and_take_no_other(workers, gate, redis_url,  # noqa: F811
                                                                            tmp_path):
    """`docker stop` of an nst-worker: SIGTERM is Celery's warm shutdown. The running job finishes and is delivered
    once (acks_late: its message is acknowledged only then), the worker takes no other job and exits 0; a job sent
    meanwhile waits in Redis for the next worker (prefetch 1: the stopping worker holds no second message)."""
    first = workers.ensure()

    async def scenario() -> None:
        backend = CeleryBackend(config(redis_url, tmp_path), poll_interval=0.2)
        sink = RecordingSink()
        await backend.start(sink)
        try:
            job = payload(64, 12)
            gate.close()  # the job is held, running, when the worker is told to stop
            await backend.dispatch(job)
            await sink.wait_for("progress", job.job_id, 60)
            first.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while "Warm shutdown" not in first.text():
                assert time.monotonic() < deadline, first.text()[-3000:]
                await asyncio.sleep(0.05)
            later = payload(64, 8)
            await backend.dispatch(later)
            gate.open()
            (result,) = await sink.wait_for("done", job.job_id, 60)
            assert await asyncio.to_thread(first.proc.wait, 60) == 0
            assert not sink.of("started", later.job_id)  # nobody took it while the worker stopped
            second = await asyncio.to_thread(workers.start, f"w{len(workers.all) + 1}")
            await sink.wait_for("done", later.job_id, 60)
            await asyncio.sleep(1.5)  # a second report of either job would come within a few polls
        finally:
            await backend.close()
        assert_png(result, 64)
        assert sink.ends(job.job_id) == ["done"] and len(sink.of("started", job.job_id)) == 1
        assert sink.ends(later.job_id) == ["done"]
        assert f"Task nst.stylize[{job.job_id}] succeeded" in first.text()
        assert f"Task nst.stylize[{later.job_id}] succeeded" in second.text()
        assert later.job_id not in first.text()

    asyncio.run(scenario())


def test_the_job_queue_on_the_celery_backend_and_its_restart_reconciliation(worker, gate, redis_url,  # noqa: F811
                                                                            tmp_path):
    """The same JobQueue API a front end uses, on Celery: submit, progress, result; then a queue process that stops
    while a job runs and a new one on the same data directory that picks the job's result up from Celery. The job
    metrics count on the bot's side, at the job table's state changes, as with the embedded executor; each process
    counts what it saw (a restarted bot's counters start at 0, as Prometheus expects)."""
    from nst_jobs import JobRequest, JobState
    from nst_jobs.metrics import JobMetrics
    from nst_jobs.queue import JobQueue

    def value(metrics: JobMetrics, name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    cfg = config(redis_url, tmp_path, cancel_grace_seconds=5)
    request = JobRequest(params=StyleParams(size=64, iterations=12, scales=1, device="cpu", seed=1),
                         content=CONTENT.read_bytes(), styles=(STARRY.read_bytes(),), requester="A")

    async def first() -> tuple[str, str]:
        metrics = JobMetrics()
        async with JobQueue(cfg, metrics=metrics) as queue:
            job = await queue.submit(request)
            kinds = set()
            async for update in queue.subscribe(job.id):
                kinds.add(update.kind)
                if update.kind == "state" and update.job.finished:
                    break
            done = await queue.get(job.id)
            assert done.state == JobState.DONE and "progress" in kinds
            assert Image.open(io.BytesIO(queue.result_bytes(done))).size == (64, 42)
            assert value(metrics, "nst_jobs_submitted_total") == 1
            assert value(metrics, "nst_jobs_finished_total", outcome="done") == 1
            assert value(metrics, "nst_job_duration_seconds_sum") == pytest.approx(done.run_seconds)
            assert value(metrics, "nst_queue_wait_seconds_count") == 1
            # a second job, and the queue stops while it runs (the bot restarts): it is held at the gate meanwhile
            gate.close()
            second = await queue.submit(request)
            async for update in queue.subscribe(second.id):
                if update.kind == "progress":
                    break
            await queue.refresh_metrics()
            assert value(metrics, "nst_queue_jobs", state="running") == 1
            assert value(metrics, "nst_queue_jobs", state="waiting") == 0
            assert value(metrics, "nst_worker_up", device="cpu") is None  # nst-worker serves its own
            return job.id, second.id

    async def after_restart(second_id: str) -> None:
        metrics = JobMetrics()
        async with JobQueue(cfg, metrics=metrics) as queue:
            finished = await asyncio.wait_for(_finished(queue, second_id), 60)
            assert finished.state == JobState.DONE and finished.attempts == 1  # ran once, not re-dispatched
            assert Image.open(io.BytesIO(queue.result_bytes(finished))).size == (64, 42)
            assert value(metrics, "nst_jobs_finished_total", outcome="done") == 1
            assert value(metrics, "nst_jobs_submitted_total") == 0  # submitted before the restart

    async def _finished(queue, job_id):
        async for update in queue.subscribe(job_id):
            if update.kind == "state" and update.job.finished:
                return update.job
        return await queue.get(job_id)

    _, second_id = asyncio.run(first())
    gate.open()  # the job goes on on its worker, with no queue watching
    asyncio.run(after_restart(second_id))


def test_a_job_no_worker_takes_fails_with_a_reason_instead_of_waiting_for_ever(redis_url, tmp_path):  # noqa: F811
    """Workers down (or the broker's data lost): after celery_inflight x time limit + visibility timeout (3 s here)
    the job fails with a reason, and is marked cancelled so a worker that appears later skips it."""
    broker = redis_url.rsplit("/", 1)[0] + "/7"  # a database no test worker listens on

    async def scenario() -> None:
        sink = RecordingSink()
        backend = CeleryBackend(QueueConfig(data_dir=tmp_path, backend="celery", broker_url=broker,
                                            celery_inflight=1, celery_time_limit_seconds=1,
                                            celery_visibility_timeout_seconds=2), poll_interval=0.2)
        await backend.start(sink)
        try:
            job = payload()
            started = time.monotonic()
            await backend.dispatch(job)
            (reason, retry), = await sink.wait_for("failed", job.job_id, timeout=20)
            waited = time.monotonic() - started
        finally:
            await backend.close()
        assert 3 <= waited < 10
        assert retry is False and reason.startswith("no worker took the job within 3 s (are the nst-worker")
        assert redis.Redis.from_url(broker).get(cancel_key(job.job_id)) == b"1"
        assert backend.free_slots() == 1  # the slot is free for the next job

    asyncio.run(scenario())


def test_a_job_past_the_time_limit_fails_once_and_is_not_retried(worker, gate, redis_url, tmp_path):  # noqa: F811
    """Celery's hard time limit kills the job: it would only run out of time again, so the user is told why at once
    instead of waiting for max_attempts more runs. The job is held at the gate past the limit."""
    gate.close()
    params = StyleParams(size=64, iterations=20, scales=1, device="cpu", seed=1).to_dict()
    job = WorkPayload(job_id=uuid.uuid4().hex, params=params, content=CONTENT.read_bytes(),
                      styles=(STARRY.read_bytes(),))

    async def scenario() -> None:
        backend = CeleryBackend(config(redis_url, tmp_path), poll_interval=0.2)
        sink = RecordingSink()
        await backend.start(sink)
        try:
            await backend.dispatch(job)
            (failure,) = await sink.wait_for("failed", job.job_id, TIME_LIMIT + 40)
        finally:
            await backend.close()
        reason, retry = failure
        assert retry is False
        assert reason == (f"the job ran longer than the workers' time limit of {TIME_LIMIT} s; try a smaller size "
                          "or fewer iterations")
        assert sink.ends(job.job_id) == ["failed"]

    asyncio.run(scenario())
