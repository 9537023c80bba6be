"""The bot itself: one `commands.Bot` subclass that owns the queue, its own store and the HTTP session.

`setup_hook` (after login, before the gateway connects) opens the bot's store, loads one extension per feature
(`initial_extensions`, as in discord.py's author's own bot: the `results` cog registers the reply buttons there),
opens the job queue and the HTTP session, syncs the commands only if they changed, starts the health endpoint, and
picks up every job whose reply was not finished before a restart. `follow` keeps one job's reply current.
`run_bot` is the process: SIGTERM or Ctrl-C drains the bot before it closes (`bot.drain`), a second one closes it
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.config import BotConfig
from bot.drain import Drain
from bot.endpoints import apply_endpoints
from bot.health import HealthServer
from bot.metrics import BotMetrics
from bot.records import BotStore, Reply
from bot.reporter import Reporter
from bot.shared.refusals import apologise
from bot.shared.starter import JobStarter
from bot.sync import sync_commands
from nst_jobs.models import JobState
from nst_jobs.queue import JobQueue
from nst_jobs.work import WorkFunction, perform

__all__ = ["StyleBot", "create_bot", "initial_extensions", "run_bot"]

log = logging.getLogger(__name__)

#: One cog per feature, each a module ending in `async def setup(bot)`; a new command is one new file named here.
initial_extensions = (
    "bot.cogs.stylize",  # /stylize and the "Stylize this image" message menu
    "bot.cogs.styles",  # /style save, list, delete
    "bot.cogs.jobs",  # /queue, /cancel
    "bot.cogs.results",  # the buttons under a reply: cancel, re-roll, more / less style
    "bot.cogs.admin",  # /nst-admin settings, stats
)


class StyleTree(app_commands.CommandTree["StyleBot"]):
    """The command tree: a refused check has answered the member already; anything else gets an apology."""

    async def on_error(self, interaction: discord.Interaction[StyleBot],
                       error: app_commands.AppCommandError) -> None:
        name = interaction.command.qualified_name if interaction.command else "?"
        if isinstance(error, app_commands.CheckFailure):
            log.info("command %s refused for user %s by a check", name, interaction.user.id)
            return
        await apologise(interaction, f"command {name}", error)


class StyleBot(commands.Bot):
    """The Discord front end; see the module docstring."""

    config: BotConfig
    queue: JobQueue
    store: BotStore
    http_session: aiohttp.ClientSession
    starter: JobStarter

    def __init__(self, config: BotConfig, *, serve: bool = True, work: WorkFunction = perform,
                 **client_options: Any) -> None:
        """`serve=False`: only what `nst-bot sync` needs (the store and the commands; no queue, no workers).
        `work`: the job function of the embedded executor's workers (`JobQueue`'s `work`)."""
        intents = discord.Intents.none()
        intents.guilds = True  # channels and permissions; no privileged intents
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None,
                         allowed_mentions=discord.AllowedMentions.none(), tree_cls=StyleTree, **client_options)
        self.config = config
        self.serve = serve
        self.work = work
        self.starter = JobStarter(self)
        self.reporters: dict[str, Reporter] = {}
        self.drain = Drain(self)
        self.health: HealthServer | None = None
        self.metrics = BotMetrics()
        self._opened: list[str] = []
        self._close_task: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    async def setup_hook(self) -> None:
        data_dir = self.config.queue.data_dir
        self.store = await BotStore.open(data_dir)
        self._opened.append("store")
        for extension in initial_extensions:
            await self.load_extension(extension)
        if not self.serve:
            return
        self.queue = JobQueue(self.config.queue, work=self.work, metrics=self.metrics.jobs)
        await self.queue.start()
        self._opened.append("queue")
        self.http_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        self._opened.append("session")
        if self.config.discord.sync_commands != "never":
            await sync_commands(self, force=self.config.discord.sync_commands == "always")
        if self.config.health.port:
            self.health = HealthServer(self, self.config.health.host, self.config.health.port)
            await self.health.start()
        await self._resume_replies()

    async def _resume_replies(self) -> None:
        """After a restart: follow every job whose outcome was not delivered. A job the bot submitted but whose reply
        was never saved (a crash in between) is followed too: its updates go to its channel, mentioning the member."""
        replies = await self.store.replies()
        for reply in replies:
            self.follow(reply)
        known = {reply.job_id for reply in replies}
        pending = [*await self.queue.jobs(JobState.QUEUED, JobState.RUNNING), *await self.queue.undelivered()]
        for job in pending:
            if job.id in known or not job.meta.get("origin") or not job.requester.isdigit() or not job.channel_id:
                continue  # followed already, or not a job from Discord
            self.follow(Reply(job_id=job.id, application_id=self.application_id or 0, token="", message_id=0,
                              channel_id=int(job.channel_id), guild_id=int(job.guild_id) if job.guild_id else None,
                              user_id=int(job.requester), token_deadline=0.0))
        if self.reporters:
            log.info("picked up %d job(s) whose outcome was not delivered yet", len(self.reporters))

    async def close(self) -> None:
        """Close once, however many callers ask (a signal handler and `async with` both do): each waits for the
        same shutdown, so the queue and its workers are always stopped before the process exits."""
        await asyncio.shield(self.request_close())

    def request_close(self, *, drain: bool = False) -> asyncio.Future[None]:
        """Start shutting down (from a signal handler); the future ends when everything is closed. `drain`: first
        let the running jobs finish and be delivered (`bot.drain`); a close already under way is not changed."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close_everything(drain=drain))
        return self._close_task

    @property
    def draining(self) -> bool:
        """True from the start of a drain: no new job is taken."""
        return self.drain.started

    async def _close_everything(self, *, drain: bool) -> None:
        if drain and "queue" in self._opened:
            try:
                await self.drain.run()
            except Exception:
                log.exception("draining failed; stopping now")
        tasks = [reporter.task for reporter in self.reporters.values() if reporter.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await super().close()
        if self.health is not None:
            await self.health.close()
        if "session" in self._opened:
            await self.http_session.close()
        if "queue" in self._opened:
            await self.queue.close()
        if "store" in self._opened:
            await self.store.close()
        self._opened.clear()

    @property
    def gateway_connected(self) -> bool:
        """Ready and connected to the gateway now (the health check and the metrics say so)."""
        return self.is_ready() and not self.is_closed() and self.ws is not None and bool(self.ws.open)

    async def on_ready(self) -> None:
        log.info("connected as %s (id %s) to %d server(s)", self.user, self.user.id if self.user else "?",
                 len(self.guilds))

    # -- jobs --------------------------------------------------------------------------------------------------------
    def follow(self, reply: Reply) -> None:
        """Keep the reply of job `reply.job_id` current until its outcome is delivered."""
        if reply.job_id in self.reporters:
            return
        reporter = self.reporters[reply.job_id] = Reporter(self, reply)
        reporter.start().add_done_callback(lambda _t, job_id=reply.job_id: self.reporters.pop(job_id, None))


def create_bot(config: BotConfig, **client_options: Any) -> StyleBot:
    """The bot, with discord.py pointed at the configured endpoints (Discord's own unless set)."""
    apply_endpoints(config.discord)
    return StyleBot(config, **client_options)


async def run_bot(config: BotConfig, token: str, *, work: WorkFunction = perform) -> int:
    """Run until the process is stopped; returns the exit status. SIGTERM or SIGINT (Ctrl-C) drains the bot
    (`bot.drain`), then closes it cleanly, the queue and its workers too: 0. A second signal ends the drain at once:
    128 + its number (143 for SIGTERM, 130 for SIGINT), nothing lost either way."""
    bot = create_bot(config, work=work)
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) == 1:
            log.info("%s received: draining (no new jobs; waiting jobs stay queued; running ones have up to %g s "
                     "to finish; a second signal stops at once)", sig.name, config.queue.drain_seconds)
            bot.request_close(drain=True)
        else:
            log.warning("%s received again: stopping now (a running job goes back in the queue)", sig.name)
            bot.drain.hurry()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop, sig)
    try:
        await bot.start(token)
    finally:
        # start() returns as soon as the gateway closes; wait here until the whole shutdown is over (discord.py's
        # own `async with` would skip it, the client being already marked closed).
        await bot.close()
    return 128 + received[1] if len(received) > 1 else 0
