"""How a "no" reaches the member, the same way from every command, button and menu.

A refusal (a check failed, an input is unusable) is an ephemeral line with the reason, and one log line; an
unexpected error is an apology to the member and the traceback in the log. The bot itself carries on either way.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from nst_core.errors import NSTError

__all__ = ["APOLOGY", "UserFacingError", "apologise", "refuse", "refuse_after_defer", "require_manage_guild",
           "sentence"]

log = logging.getLogger(__name__)

APOLOGY = "⚠️ Something went wrong on the bot's side (it was logged); please try again."


class UserFacingError(NSTError):
    """A refusal whose message is shown to the member as it is."""


async def refuse(interaction: discord.Interaction[Any], message: str, origin: str) -> None:
    """Answer the interaction with an ephemeral error (a follow-up if it was answered already)."""
    log.info("refused %s for user %s: %s", origin, interaction.user.id, message)
    text = sentence(message)
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def refuse_after_defer(interaction: discord.Interaction[Any], message: str, origin: str) -> None:
    """Replace the public "thinking" reply of a deferred interaction by an ephemeral error."""
    log.info("refused %s for user %s after download: %s", origin, interaction.user.id, message)
    try:
        await interaction.delete_original_response()
    except discord.HTTPException as exc:
        log.warning("could not delete the deferred reply (%s %s)", exc.status, exc.code)
    await interaction.followup.send(sentence(message), ephemeral=True)


async def require_manage_guild(interaction: discord.Interaction[Any], what: str) -> bool:
    """True when the member may manage the server; otherwise tell them (`what` needs it) and return False."""
    if interaction.permissions.manage_guild:
        return True
    log.info("refused %s for user %s: no Manage Server permission", what, interaction.user.id)
    await interaction.response.send_message(f"⚠️ {what} needs the Manage Server permission.", ephemeral=True)
    return False


async def apologise(interaction: discord.Interaction[Any], where: str, error: BaseException) -> None:
    """An unexpected error in `where`: the traceback to the log, a short ephemeral apology to the member."""
    log.error("%s failed for user %s", where, interaction.user.id, exc_info=error)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(APOLOGY, ephemeral=True)
        else:
            await interaction.response.send_message(APOLOGY, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell user %s about it (%s %s)", interaction.user.id, exc.status, exc.code)


def sentence(message: str) -> str:
    """How every refusal reads: '⚠️ Content image is ...' (the engine's messages start in lower case, mid-sentence
    style). A message that starts with a parameter name ('size=5000 is not allowed') keeps it as it is spelt."""
    first = message.split(" ", 1)[0]
    if first.isalpha():
        message = message[:1].upper() + message[1:]
    return "⚠️ " + message
