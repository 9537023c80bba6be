"""/nst-admin settings and /nst-admin stats, for members with the Manage Server permission.

Settings lower the bot-wide limits for one server (never raise them) and can restrict /stylize to some channels.
Stats read the bot's own tally of finished jobs (kept after the job table's retention purge). `Optional[...]` below:
discord.py's Range annotations are objects, which the `X | None` syntax does not accept.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Optional

import discord
from discord import app_commands
from discord.ext import commands

from bot.records import GuildSettings
from bot.shared.refusals import refuse, require_manage_guild
from bot.shared.render import duration
from nst_jobs.models import JobState

if TYPE_CHECKING:
    from bot.app import StyleBot

log = logging.getLogger(__name__)

STATS_DAYS = 7


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
        allow_channel: discord.TextChannel | None = None,
        remove_channel: discord.TextChannel | None = None,
        all_channels: bool | None = None,
    ) -> None:
        guild_id = interaction.guild_id or 0
        cfg = self.bot.config
        current = await self.bot.store.guild_settings(guild_id)
        problems = []
        for name, value, ceiling in (("max_size", max_size, cfg.limits.max_size),
                                     ("max_iterations", max_iterations, cfg.limits.max_iterations),
                                     ("per_user_cap", per_user_cap, cfg.queue.per_user_cap)):
            if value is not None and value > ceiling:
                problems.append(f"{name}={value} is above the bot's limit of {ceiling}")
        if max_size is not None and 0 < max_size < 64:
            problems.append(f"max_size={max_size} is too small; at least 64 px")
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

        def pick(value: int | None, old: int | None) -> int | None:
            return old if value is None else (value or None)

        updated = GuildSettings(max_size=pick(max_size, current.max_size),
                                max_iterations=pick(max_iterations, current.max_iterations),
                                per_user_cap=pick(per_user_cap, current.per_user_cap), channels=tuple(channels))
        if updated != current:
            await self.bot.store.save_guild_settings(guild_id, updated)
            log.info("guild %s: settings changed by %s: %s", guild_id, interaction.user.id, updated)
        where = ", ".join(f"<#{c}>" for c in updated.channels) or "every channel"
        text = ("**Style transfer settings for this server**" + (" (updated)" if updated != current else "") + "\n"
                f"• max size: {updated.max_size or cfg.limits.max_size} px"
                f"{'' if updated.max_size else ' (bot limit)'}\n"
                f"• max iterations: {updated.max_iterations or cfg.limits.max_iterations}"
                f"{'' if updated.max_iterations else ' (bot limit)'}\n"
                f"• jobs per member: {updated.per_user_cap or cfg.queue.per_user_cap}"
                f"{'' if updated.per_user_cap else ' (bot limit)'}\n"
                f"• /stylize allowed in: {where}")
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="stats", description=f"Jobs per day, median time and failures ({STATS_DAYS} days)")
    async def stats(self, interaction: discord.Interaction[Any]) -> None:
        since = time.time() - STATS_DAYS * 86400
        tallies = await self.bot.store.tallies(interaction.guild_id or 0, since)
        if not tallies:
            await interaction.response.send_message(f"No finished jobs in the last {STATS_DAYS} days.",
                                                    ephemeral=True)
            return
        per_day = Counter(dt.datetime.fromtimestamp(t.finished_at, dt.UTC).strftime("%Y-%m-%d") for t in tallies)
        states = Counter(t.state for t in tallies)
        runs = [t.run_seconds for t in tallies if t.state == JobState.DONE and t.run_seconds is not None]
        median = f"{duration(statistics.median(runs))}" if runs else "n/a"
        lines = [f"**Last {STATS_DAYS} days**: {len(tallies)} jobs · {states[JobState.DONE]} done · "
                 f"{states[JobState.FAILED]} failed · {states[JobState.CANCELLED]} cancelled",
                 f"Median run time: {median}", "Jobs per day (UTC):"]
        lines += [f"• {day}: {count}" for day, count in sorted(per_day.items())]
        await interaction.response.send_message("\n".join(lines)[:2000], ephemeral=True)


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(AdminCog(bot))
