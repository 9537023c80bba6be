"""`nst-worker` as an operator runs it beside Prometheus and a log collector: `--metrics-port` serves the worker's own
metrics over HTTP, and `--log-format json` makes its log lines (the main process's and its pool process's) JSON.

The worker is the installed console script against a real redis-server, on a Redis database of its own (no other
test's jobs reach it); it runs no job here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from redis_server import free_port, redis_url  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(180)

NST_WORKER = Path(sys.executable).with_name("nst-worker")


def test_metrics_port_and_json_logs(redis_url, tmp_path):  # noqa: F811
    port = free_port()
    broker = redis_url.rsplit("/", 1)[0] + "/15"
    log = tmp_path / "worker.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as err:
        proc = subprocess.Popen([str(NST_WORKER), "--broker", broker, "--device", "cpu", "--hostname", "ops@%h",
                                 "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--log-format", "json"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        lines: list[dict] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            if any(line["message"].startswith("worker process ready on device 'cpu'") for line in lines):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the worker's pool process never said it was ready:\n{log.read_text()[-3000:]}")
        ready = next(line for line in lines if line["message"].endswith(" ready."))  # the main process
        assert ready["level"] == "INFO" and ready["logger"] == "celery.apps.worker" and "time" in ready
        pool = next(line for line in lines if line["logger"] == "nst_jobs.celery_app")  # the pool process
        assert pool["level"] == "INFO"

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert 'nst_worker_up{device="cpu"} 1.0' in body.splitlines()
        assert "process_resident_memory_bytes" in body
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # a warm shutdown: nothing runs
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_a_metrics_port_out_of_range_is_refused_with_one_line():
    proc = subprocess.run([str(NST_WORKER), "--broker", "redis://127.0.0.1:1/0", "--metrics-port", "70000"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("nst-worker: error: --metrics-port 70000 is not a port; give 1 to 65535, or 0 "
                                   "for none")
