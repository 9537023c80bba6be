"""/queue (your jobs and their places, what runs now, how long the line is) and /cancel."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.shared.cancel import cancel_job
from bot.shared.render import progress_bar
from nst_core.progress import ProgressEvent
from nst_jobs.models import JobState

if TYPE_CHECKING:
    from bot.app import StyleBot

log = logging.getLogger(__name__)


class JobsCog(commands.Cog):
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="Your jobs, what is running, and how long the line is")
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        queue = self.bot.queue
        positions = await queue.positions()
        running = await queue.jobs(JobState.RUNNING)
        mine = await queue.jobs(JobState.QUEUED, JobState.RUNNING, requester=str(interaction.user.id))
        lines = []
        if mine:
            lines.append("**Your jobs**")
            for job in mine:
                if job.state == JobState.QUEUED:
                    where = f"#{positions.get(job.id, '?')} in line"
                else:
                    where = "running" + _percent(job.progress)
                lines.append(f"• `{job.id}` {where} · {job.meta.get('summary', '')}")
        else:
            lines.append("You have no jobs waiting or running.")
        if running:
            lines.append("**Running now**")
            lines += [f"• `{job.id}` for <@{job.requester}>{_percent(job.progress)}" for job in running]
        lines.append(f"**Queue**: {len(positions)} waiting, {len(running)} running.")
        await interaction.response.send_message("\n".join(lines)[:2000], ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel one of your jobs (the latest if you name none)")
    @app_commands.describe(job="the job id shown in its reply (or pick from the list)")
    async def cancel(self, interaction: discord.Interaction[Any], job: str | None = None) -> None:
        await cancel_job(self.bot.queue, interaction, job)

    @cancel.autocomplete("job")
    async def _job_autocomplete(self, interaction: discord.Interaction[Any],
                                current: str) -> list[app_commands.Choice[str]]:
        mine = await self.bot.queue.jobs(JobState.QUEUED, JobState.RUNNING, requester=str(interaction.user.id))
        return [app_commands.Choice(name=f"{j.id} ({j.state.value}) {j.meta.get('summary', '')}"[:100], value=j.id)
                for j in reversed(mine) if current.strip().lower() in j.id][:25]


def _percent(progress: dict[str, Any] | None) -> str:
    if not progress:
        return ""
    fraction = ProgressEvent.from_dict(progress).fraction
    return f" `{progress_bar(fraction, 10)}` {round(fraction * 100)}%"


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(JobsCog(bot))
