"""Cancelling a job, the one way `/cancel` and the Cancel button under a reply both do it: the requester may
cancel their own job, a moderator (Manage Messages) anyone's; the job's reply then says it was cancelled."""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.shared.refusals import refuse
from nst_jobs.errors import QueueError
from nst_jobs.log_format import job_fields
from nst_jobs.models import JobState
from nst_jobs.queue import JobQueue

__all__ = ["cancel_job"]

log = logging.getLogger(__name__)


async def cancel_job(queue: JobQueue, interaction: discord.Interaction[Any], job_id: str | None) -> None:
    """Cancel `job_id` (or the member's latest active job) for whoever clicked or typed; moderators (Manage
    Messages) may cancel anyone's."""
    user_id = str(interaction.user.id)
    if job_id is None:
        mine = await queue.jobs(JobState.QUEUED, JobState.RUNNING, requester=user_id)
        if not mine:
            await refuse(interaction, "you have no jobs waiting or running", "/cancel")
            return
        job_id = mine[-1].id
    privileged = bool(interaction.permissions.manage_messages)
    try:
        job = await queue.cancel(job_id.strip(), by=user_id, privileged=privileged)
    except QueueError as exc:
        await refuse(interaction, str(exc), "cancel")
        return
    log.info("job %s: cancelled by user %s%s", job.id, user_id, " (moderator)" if job.requester != user_id else "",
             extra=job_fields(job))
    text = (f"Cancelled job `{job.id}`." if job.state == JobState.CANCELLED
            else f"Stopping job `{job.id}`; its reply will say when it has stopped.")
    await interaction.response.send_message(text, ephemeral=True)
