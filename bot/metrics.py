"""The bot's Prometheus metrics, served as `GET /metrics` beside `/healthz` (bot/health.py).

One registry per bot (never the process-wide default, so two bots in one test process keep their own counts): the
job metrics of its queue (`nst_jobs.metrics.JobMetrics`, counted at the job table's state changes, whichever
backend runs the jobs), the gateway's state, and the process's own figures. The gauges are read when Prometheus
scrapes. Nothing here carries the token, a user id or a guild id.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from nst_jobs.metrics import JobMetrics, process_collectors

if TYPE_CHECKING:
    from bot.app import StyleBot

__all__ = ["CONTENT_TYPE", "BotMetrics"]

#: The exposition format's media type, as Prometheus expects it.
CONTENT_TYPE = CONTENT_TYPE_LATEST


class BotMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        process_collectors(self.registry)
        self.jobs = JobMetrics(self.registry)
        self.connected = Gauge("nst_discord_connected", "1 while the bot is connected to Discord's gateway, else 0",
                               registry=self.registry)
        self.latency = Gauge("nst_discord_latency_seconds", "Gateway heartbeat round trip (NaN while disconnected)",
                             registry=self.registry)

    async def scrape(self, bot: StyleBot) -> bytes:
        """Read the gauges now and render every metric in Prometheus's text format."""
        connected = bot.gateway_connected
        latency = bot.latency
        self.connected.set(1 if connected else 0)
        self.latency.set(latency if connected and math.isfinite(latency) else math.nan)
        await bot.queue.refresh_metrics()
        return generate_latest(self.registry)
