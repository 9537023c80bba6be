"""Where an unexpected error in a command, a button or a menu ends: a log line with the traceback, and a short
ephemeral apology to the member. The bot itself carries on."""

from __future__ import annotations

import logging
from typing import Any

import discord

__all__ = ["apologise"]

log = logging.getLogger(__name__)

APOLOGY = "⚠️ Something went wrong on the bot's side (it was logged); please try again."


async def apologise(interaction: discord.Interaction[Any], where: str, error: BaseException) -> None:
    log.error("%s failed for user %s", where, interaction.user.id, exc_info=error)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(APOLOGY, ephemeral=True)
        else:
            await interaction.response.send_message(APOLOGY, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell user %s about it (%s %s)", interaction.user.id, exc.status, exc.code)
