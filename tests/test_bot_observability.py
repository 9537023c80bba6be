"""What an operator watches: `/metrics` scraped over HTTP from the running bot under the fake Discord, as jobs are
submitted, run, wait, are cancelled and finish and as the gateway goes away; and `/nst-admin stats` with its chart,
whose numbers come from the bot's tally of finished jobs (a real SQLite file).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import math
import socket
from collections.abc import Iterable

import aiohttp
import pytest
from bot_harness import BotEnv
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bot.records import JobTally
from bot.stats_chart import daily_stats, period_start, render_chart
from nst_jobs.models import JobState

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

TINY = {"size": 64, "iterations": 6}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scrape:
    """One scrape of /metrics: its body, and each sample's value by name and labels."""

    def __init__(self, text: str, content_type: str) -> None:
        self.text = text
        self.content_type = content_type
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, frozenset(labels.items())))

    def outcomes(self) -> dict[str, float | None]:
        return {o: self("nst_jobs_finished_total", outcome=o) for o in ("done", "failed", "cancelled")}


async def scrape(port: int) -> Scrape:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200, await response.text()
        return Scrape(await response.text(), response.headers["Content-Type"])


def sub(name: str, options: list | None = None) -> list:
    return [{"type": 1, "name": name, "options": options or []}]


def job_id_of(message: dict) -> str:
    return message["content"].split("`")[1]


async def test_metrics_follow_jobs_and_the_gateway(bot_env_factory, content_bytes, style_bytes) -> None:
    port = free_port()
    env: BotEnv = await bot_env_factory(health={"port": port})
    first = await scrape(port)
    assert first.content_type.startswith("text/plain") and "version=" in first.content_type
    assert first("nst_discord_connected") == 1
    assert 0 <= first("nst_discord_latency_seconds") < 5
    assert first("nst_jobs_submitted_total") == 0 and first.outcomes() == {"done": 0, "failed": 0, "cancelled": 0}
    assert first("nst_worker_up", device="cpu") == 1
    assert first("nst_queue_jobs", state="waiting") == 0 and first("nst_queue_jobs", state="running") == 0

    env.gate.close()  # the first job runs and stays running; the second waits behind it
    style = env.attachment(style_bytes, "s.jpg", "image/jpeg")
    running = await env.stylize(env.attachment(content_bytes), style, **TINY)
    await env.response(running)
    running_id = job_id_of(await env.wait_message(env.original_id(running), lambda m: "🎨" in m["content"]))
    waiting = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                **TINY)
    await env.response(waiting)
    waiting_id = job_id_of(await env.wait_message(env.original_id(waiting), lambda m: "⏳" in m["content"]))
    mid = await scrape(port)
    assert mid("nst_jobs_submitted_total") == 2
    assert mid("nst_queue_jobs", state="running") == 1 and mid("nst_queue_jobs", state="waiting") == 1
    assert mid("nst_queue_wait_seconds_count") == 1

    cancel = await env.fake.send_interaction("cancel", [{"name": "job", "type": 3, "value": waiting_id}])
    assert f"Cancelled job `{waiting_id}`" in await env.ephemeral_text(cancel)
    after_cancel = await scrape(port)
    assert after_cancel.outcomes() == {"done": 0, "failed": 0, "cancelled": 1}
    assert after_cancel("nst_queue_jobs", state="waiting") == 0

    env.gate.open()
    assert "✅ Done" in (await env.wait_final(running))["content"]
    done = await scrape(port)
    assert done.outcomes() == {"done": 1, "failed": 0, "cancelled": 1}
    assert done("nst_queue_jobs", state="running") == 0
    job = await env.bot.queue.get(running_id)
    assert done("nst_job_duration_seconds_count") == 1
    assert done("nst_job_duration_seconds_sum") == pytest.approx(job.run_seconds)
    for secret in (env.fake.token, env.fake.user["id"], env.fake.guild_id, env.fake.channel_id):
        assert secret not in done.text  # no token, no user, guild or channel ids

    await env.fake.drop_gateway()  # Discord out of reach: the bot keeps trying, and says so
    await health_becomes(port, 503)
    lost = await scrape(port)
    assert lost("nst_discord_connected") == 0 and math.isnan(lost("nst_discord_latency_seconds"))
    assert lost.outcomes() == done.outcomes()  # the counts stay
    env.fake.gateway_refused = False  # back: the bot reconnects by itself
    await health_becomes(port, 200)
    assert (await scrape(port))("nst_discord_connected") == 1
    drop_reconnect_errors(env.errors.records)


async def health_becomes(port: int, status: int, timeout: float = 30.0) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        while True:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                if response.status == status:
                    return
            await asyncio.sleep(0.05)


def drop_reconnect_errors(records: list) -> None:
    """discord.py logs each failed reconnect as an error; here the test cut the gateway off on purpose."""
    records[:] = [r for r in records if not r.getMessage().startswith("Attempting a reconnect")]


def tallies_of(records: Iterable[tuple[JobState, float, float | None]]) -> list[JobTally]:
    return [JobTally(state, finished - 60, finished, run) for state, finished, run in records]


async def test_stats_chart_counts_the_tallied_jobs_per_day(bot_env_factory) -> None:
    env: BotEnv = await bot_env_factory()
    guild = int(env.fake.guild_id)
    now = dt.datetime.now(dt.UTC)
    today = period_start(1, now)  # midnight UTC
    known = [  # (days ago, outcome, run seconds)
        (0, JobState.DONE, 30.0), (0, JobState.DONE, 90.0), (0, JobState.FAILED, 5.0),
        (2, JobState.DONE, 600.0), (2, JobState.CANCELLED, None),
        (10, JobState.DONE, 120.0), (10, JobState.DONE, 240.0), (10, JobState.DONE, 60.0),
        (40, JobState.DONE, 50.0),  # outside both periods
    ]
    for n, (ago, state, run) in enumerate(known):
        finished = (today - dt.timedelta(days=ago) + dt.timedelta(hours=1, minutes=n)).timestamp()
        await env.bot.store.tally(f"job{n}", guild, 42, state, finished - 100, finished, run)
    await env.bot.store.tally("elsewhere", guild + 1, 42, JobState.DONE, 0, today.timestamp() + 60, 1.0)

    week = daily_stats(await env.bot.store.tallies(guild, period_start(7, now).timestamp()), 7, now)
    assert week.days[-1] == today.date() and len(week.days) == 7
    assert week.counts[JobState.DONE][-1] == 2 and week.counts[JobState.FAILED][-1] == 1
    assert week.counts[JobState.DONE][-3] == 1 and week.counts[JobState.CANCELLED][-3] == 1
    assert week.medians[-1] == 60.0 and week.medians[-3] == 600.0 and week.medians[-2] is None
    assert sum(map(week.total, range(7))) == 5  # the 10-day-old jobs are outside the week
    month = daily_stats(await env.bot.store.tallies(guild, period_start(30, now).timestamp()), 30, now)
    assert month.counts[JobState.DONE][-11] == 3 and month.medians[-11] == 120.0
    assert sum(map(month.total, range(30))) == 8
    chart = Image.open(io.BytesIO(render_chart(month, "test")))
    assert chart.format == "PNG" and chart.size == (900, 420)

    answer = await env.fake.send_interaction("nst-admin", sub("stats", [{"name": "days", "type": 4, "value": 30}]))
    request = await env.fake.wait_for_request("POST", rf"/webhooks/\d+/{answer['token']}$", timeout=30)
    text = request.payload["content"]
    assert "**Last 30 days**: 8 jobs · 6 done · 1 failed · 1 cancelled" in text
    assert "Median run time: 1 min 45 s" in text  # of 30, 60, 90, 120, 240 and 600 s
    assert f"• {today:%Y-%m-%d}: 3" in text and f"• {today - dt.timedelta(days=10):%Y-%m-%d}: 3" in text
    assert request.payload["flags"] & 64  # only the admin sees it
    [file] = request.files
    assert file.filename == "nst-stats.png"
    with Image.open(io.BytesIO(file.data)) as image:
        assert image.format == "PNG" and image.size == (900, 420)

    week_answer = await env.fake.send_interaction("nst-admin", sub("stats"))
    week_request = await env.fake.wait_for_request("POST", rf"/webhooks/\d+/{week_answer['token']}$", timeout=30)
    assert "**Last 7 days**: 5 jobs · 3 done · 1 failed · 1 cancelled" in week_request.payload["content"]
    assert Image.open(io.BytesIO(week_request.files[0].data)).format == "PNG"
