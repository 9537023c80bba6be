"""`GET /healthz` and `GET /metrics` on a local port, for the Docker healthcheck and for monitoring.

`/healthz`: 200 with a JSON body when the gateway is connected and the queue's backend can run jobs; 503 with the
same body saying what is wrong otherwise. `/metrics`: Prometheus's text format (bot/metrics.py). Both on
`health.host` (127.0.0.1 by default: the healthcheck runs inside the container; a Prometheus in another container
needs `0.0.0.0`) and `health.port`.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from bot.app import StyleBot

__all__ = ["HealthServer"]

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, bot: StyleBot, host: str, port: int) -> None:
        self.bot = bot
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        log.info("health endpoint on http://%s:%d/healthz, metrics on /metrics", self.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def report(self) -> dict[str, Any]:
        bot = self.bot
        gateway = bot.gateway_connected
        try:
            queue = await bot.queue.health()
        except Exception as exc:  # the store itself is unusable
            queue = {"ok": False, "backend": f"queue unavailable ({type(exc).__name__})"}
        latency = bot.latency
        return {"ok": bool(gateway and queue["ok"]), "gateway": "connected" if gateway else "disconnected",
                "latency_ms": round(latency * 1000) if gateway and math.isfinite(latency) else None,
                "executor_ok": queue["ok"], "queue_backend": queue["backend"],
                "queue_waiting": queue.get("waiting"), "queue_running": queue.get("running")}

    async def _healthz(self, request: web.Request) -> web.Response:
        body = await self.report()
        return web.Response(text=json.dumps(body), status=200 if body["ok"] else 503,
                            content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            body = await self.bot.metrics.scrape(self.bot)
        except Exception:  # the job table cannot be read: say so to Prometheus (a failed scrape), and in the log
            log.exception("metrics: cannot read the job table")
            return web.Response(text="cannot read the job table\n", status=503)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
