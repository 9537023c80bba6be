"""How much does a running job stall the bot's event loop? One CPU job in the embedded executor, per mode.

For each executor mode (process, then thread) this starts a `LocalExecutor` with one worker, runs one job
(default: size 192, 90 iterations, one scale, no early stop: about 20 s on a 2-core CPU) and meanwhile wakes a
coroutine every 10 ms, recording how late it wakes. It prints p50 / p99 / max lag in ms with nothing running
(the baseline), during the worker's start (warm-up) and during the job, and the job's time. Torch keeps its default
number of threads, as the bot would.

Usage:
    .venv/bin/python bench/loop_lag.py [--size 192] [--iterations 90] [--modes process,thread] [--device cpu]
        [--content tests/data/chelsea_128.png] [--style tests/data/starry_night_128.jpg]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from nst_core.params import StyleParams
from nst_core.result import JobResult
from nst_jobs.config import QueueConfig
from nst_jobs.local import LocalExecutor
from nst_jobs.loop_lag import measure_loop_lag, percentile
from nst_jobs.work import WorkPayload

ROOT = Path(__file__).resolve().parent.parent


class Sink:
    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.outcome = ""
        self.result: JobResult | None = None
        self.progress_events = 0

    async def on_started(self, job_id: str) -> None:
        pass

    async def on_progress(self, job_id: str, event: dict[str, Any], preview: bytes | None) -> None:
        self.progress_events += 1

    async def on_done(self, job_id: str, result: JobResult) -> None:
        self.outcome, self.result = "done", result
        self.ended.set()

    async def on_failed(self, job_id: str, reason: str, *, retry: bool) -> None:
        self.outcome = f"failed: {reason}"
        self.ended.set()

    async def on_cancelled(self, job_id: str) -> None:
        self.outcome = "cancelled"
        self.ended.set()


def summary(lags: list[float]) -> str:
    if not lags:
        return "no samples"
    p50, p99, worst = (percentile(lags, q) * 1000 for q in (0.5, 0.99, 1.0))
    return f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {worst:6.1f} ms  ({len(lags)} samples)"


async def run_mode(mode: str, args: argparse.Namespace, content: bytes, style: bytes) -> None:
    params = StyleParams(size=args.size, iterations=args.iterations, scales=1, device=args.device, seed=1,
                         early_stop=0.0)
    payload = WorkPayload(job_id=f"bench-{mode}", params=params.to_dict(), content=content, styles=(style,))
    sink = Sink()
    with tempfile.TemporaryDirectory() as tmp:
        executor = LocalExecutor(QueueConfig(data_dir=Path(tmp), executor=mode, devices=(args.device,)))
        start_lags: list[float] = []
        started = time.perf_counter()
        async with measure_loop_lag(start_lags):
            await executor.start(sink)
        start_time = time.perf_counter() - started
        job_lags: list[float] = []
        try:
            began = time.perf_counter()
            async with measure_loop_lag(job_lags):
                await executor.dispatch(payload)
                await sink.ended.wait()
            job_time = time.perf_counter() - began
        finally:
            await executor.close()
    print(f"[{mode}] start (warm-up) {start_time:5.1f} s   loop lag: {summary(start_lags)}")
    print(f"[{mode}] job {sink.outcome}: {job_time:5.1f} s ({args.size} px, {args.iterations} iterations, "
          f"{sink.progress_events} progress reports)   loop lag: {summary(job_lags)}")
    if sink.result is not None:
        timings = ", ".join(f"{k} {v:.2f}" for k, v in sink.result.timings.items())
        print(f"[{mode}] engine timings (s): {timings}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--iterations", type=int, default=90)
    parser.add_argument("--modes", default="process,thread")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--content", type=Path, default=ROOT / "tests/data/chelsea_128.png")
    parser.add_argument("--style", type=Path, default=ROOT / "tests/data/starry_night_128.jpg")
    args = parser.parse_args()
    content, style = args.content.read_bytes(), args.style.read_bytes()
    idle: list[float] = []
    async with measure_loop_lag(idle):
        await asyncio.sleep(1.0)
    print(f"[idle] nothing running, 1 s       loop lag: {summary(idle)}")
    for mode in args.modes.split(","):
        await run_mode(mode.strip(), args, content, style)


if __name__ == "__main__":
    asyncio.run(main())
