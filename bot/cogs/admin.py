"""/nst-admin settings and /nst-admin stats, for members with the Manage Server permission.

Settings lower the bot-wide limits for one server (never raise them), animations' among them (frames, seconds, the
size an animation is made at) and the largest Upscale x2 result, and can restrict /stylize to some channels.
Stats read the bot's own tally of finished jobs (kept after the job table's retention purge), over the last 7 or 30
days, and attach a chart of them (bot/stats_chart.py). `Optional[...]` below: discord.py's Range annotations are
objects, which the `X | None` syntax does not accept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import MAX_CLIP_FRAMES, MAX_CLIP_SECONDS
from bot.records import GuildSettings
from bot.shared.refusals import refuse, require_manage_guild
from bot.shared.render import duration
from bot.stats_chart import STATS_PERIODS, daily_stats, period_start, render_chart
from nst_jobs.models import JobState

if TYPE_CHECKING:
    from bot.app import StyleBot

log = logging.getLogger(__name__)

_N = TypeVar("_N", int, float)


@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
class AdminCog(commands.GroupCog, group_name="nst-admin", group_description="Style transfer settings for this server"):
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        return await require_manage_guild(interaction, "/nst-admin")

    @app_commands.command(name="settings", description="Show or change this server's limits and channels")
    @app_commands.describe(
        max_size="largest output (long edge, px) members may ask for; 0: the bot's limit",
        max_iterations="most iterations members may ask for; 0: the bot's limit",
        per_user_cap="waiting + running jobs per member; 0: the bot's limit",
        max_clip_frames="most frames an animation or clip may have; 0: the bot's limit",
        max_clip_seconds="longest animation or clip, in seconds; 0: the bot's limit",
        max_clip_size="long edge (px) animations are made at, at most (larger is lowered); 0: the bot's limit",
        max_upscale_size="largest long edge (px) the Upscale x2 button makes; 0: the bot's limit",
        allow_channel="allow /stylize in this channel (once any is allowed, only those are)",
        remove_channel="stop allowing this channel",
        all_channels="allow /stylize in every channel again",
    )
    async def settings(
        self,
        interaction: discord.Interaction[Any],
        max_size: Optional[app_commands.Range[int, 0, 4096]] = None,  # noqa: UP045
        max_iterations: Optional[app_commands.Range[int, 0, 10000]] = None,  # noqa: UP045
        per_user_cap: Optional[app_commands.Range[int, 0, 100]] = None,  # noqa: UP045
        max_clip_frames: Optional[app_commands.Range[int, 0, MAX_CLIP_FRAMES]] = None,  # noqa: UP045
        max_clip_seconds: Optional[app_commands.Range[float, 0.0, MAX_CLIP_SECONDS]] = None,  # noqa: UP045
        max_clip_size: Optional[app_commands.Range[int, 0, 4096]] = None,  # noqa: UP045
        max_upscale_size: Optional[app_commands.Range[int, 0, 4096]] = None,  # noqa: UP045
        allow_channel: discord.TextChannel | None = None,
        remove_channel: discord.TextChannel | None = None,
        all_channels: bool | None = None,
    ) -> None:
        guild_id = interaction.guild_id or 0
        cfg = self.bot.config
        current = await self.bot.store.guild_settings(guild_id)
        problems = []
        limits = cfg.limits
        for name, value, ceiling in (("max_size", max_size, limits.max_size),
                                     ("max_iterations", max_iterations, limits.max_iterations),
                                     ("per_user_cap", per_user_cap, cfg.queue.per_user_cap),
                                     ("max_clip_frames", max_clip_frames, limits.max_clip_frames),
                                     ("max_clip_seconds", max_clip_seconds, limits.max_clip_seconds),
                                     ("max_clip_size", max_clip_size, limits.max_clip_size),
                                     ("max_upscale_size", max_upscale_size, limits.max_upscale_size)):
            if value is not None and value > ceiling:
                problems.append(f"{name}={value:g} is above the bot's limit of {ceiling:g}")
        for name, value, floor, unit in (("max_size", max_size, 64, " px"), ("max_clip_size", max_clip_size, 32, " px"),
                                         ("max_clip_frames", max_clip_frames, 2, " frames"),
                                         ("max_upscale_size", max_upscale_size, 64, " px")):
            if value is not None and 0 < value < floor:
                problems.append(f"{name}={value} is too small; at least {floor}{unit}")
        if problems:
            await refuse(interaction, "; ".join(problems), "/nst-admin settings")
            return
        channels = list(current.channels)
        if all_channels:
            channels = []
        if allow_channel is not None and allow_channel.id not in channels:
            channels.append(allow_channel.id)
        if remove_channel is not None and remove_channel.id in channels:
            channels.remove(remove_channel.id)

        def pick(value: _N | None, old: _N | None) -> _N | None:
            return old if value is None else (value or None)

        updated = GuildSettings(max_size=pick(max_size, current.max_size),
                                max_iterations=pick(max_iterations, current.max_iterations),
                                per_user_cap=pick(per_user_cap, current.per_user_cap), channels=tuple(channels),
                                max_clip_frames=pick(max_clip_frames, current.max_clip_frames),
                                max_clip_seconds=pick(max_clip_seconds, current.max_clip_seconds),
                                max_clip_size=pick(max_clip_size, current.max_clip_size),
                                max_upscale_size=pick(max_upscale_size, current.max_upscale_size))
        if updated != current:
            await self.bot.store.save_guild_settings(guild_id, updated)
            log.info("guild %s: settings changed by %s: %s", guild_id, interaction.user.id, updated)
        where = ", ".join(f"<#{c}>" for c in updated.channels) or "every channel"

        def shown(own: float | None, bot_limit: float, unit: str = "") -> str:
            return f"{own or bot_limit:g}{unit}{'' if own else ' (bot limit)'}"

        text = ("**Style transfer settings for this server**" + (" (updated)" if updated != current else "") + "\n"
                f"• max size: {shown(updated.max_size, limits.max_size, ' px')}\n"
                f"• max iterations: {shown(updated.max_iterations, limits.max_iterations)}\n"
                f"• jobs per member: {shown(updated.per_user_cap, cfg.queue.per_user_cap)}\n"
                f"• animations: at most {shown(updated.max_clip_frames, limits.max_clip_frames, ' frames')} and "
                f"{shown(updated.max_clip_seconds, limits.max_clip_seconds, ' s')}, made at "
                f"{shown(updated.max_clip_size, limits.max_clip_size, ' px')}\n"
                f"• upscale x2 up to: {shown(updated.max_upscale_size, limits.max_upscale_size, ' px')}\n"
                f"• /stylize allowed in: {where}")
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="stats", description="Jobs per day, median time and failures, with a chart")
    @app_commands.describe(days="how far back: the last 7 days (default) or the last 30")
    @app_commands.choices(days=[app_commands.Choice(name=f"last {n} days", value=n) for n in STATS_PERIODS])
    async def stats(self, interaction: discord.Interaction[Any], days: int = STATS_PERIODS[0]) -> None:
        now = dt.datetime.now(dt.UTC)
        tallies = await self.bot.store.tallies(interaction.guild_id or 0, period_start(days, now).timestamp())
        if not tallies:
            await interaction.response.send_message(f"No finished jobs in the last {days} days.", ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # drawing the chart may take a second
        daily = daily_stats(tallies, days, now)
        states = Counter(t.state for t in tallies)
        runs = [t.run_seconds for t in tallies if t.state == JobState.DONE and t.run_seconds is not None]
        median = f"{duration(statistics.median(runs))}" if runs else "n/a"
        lines = [f"**Last {days} days**: {len(tallies)} jobs · {states[JobState.DONE]} done · "
                 f"{states[JobState.FAILED]} failed · {states[JobState.CANCELLED]} cancelled",
                 f"Median run time: {median}", "Jobs per day (UTC):"]
        lines += [f"• {day:%Y-%m-%d}: {daily.total(i)}" for i, day in enumerate(daily.days) if daily.total(i)]
        chart = await asyncio.to_thread(render_chart, daily, f"Jobs per day (UTC), last {days} days")
        log.info("guild %s: stats for %d days shown to %s", interaction.guild_id, days, interaction.user.id)
        await interaction.followup.send("\n".join(lines)[:2000], ephemeral=True,
                                        file=discord.File(io.BytesIO(chart), filename="nst-stats.png"))


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(AdminCog(bot))
