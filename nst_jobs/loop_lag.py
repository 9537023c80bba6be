"""Measuring how late the event loop runs: the figure that says whether jobs stall the bot.

A probe coroutine sleeps `period` seconds over and over and records how much later than asked it woke up. Used by
the tests and `bench/loop_lag.py` (and available to a health check).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

__all__ = ["measure_loop_lag", "percentile"]


@contextlib.asynccontextmanager
async def measure_loop_lag(lags: list[float], period: float = 0.010) -> AsyncIterator[None]:
    """Append the wake-up lag (seconds) of a `period`-second sleep to `lags` for as long as the body runs."""

    async def probe() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(period)
            lags.append(time.perf_counter() - before - period)

    task = asyncio.create_task(probe(), name="nst-loop-lag-probe")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values` by the nearest-rank rule."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
