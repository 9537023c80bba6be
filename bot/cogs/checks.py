"""Permission checks the commands share, answered the same way: an ephemeral line and a log line."""

from __future__ import annotations

import logging
from typing import Any

import discord

log = logging.getLogger(__name__)


async def require_manage_guild(interaction: discord.Interaction[Any], what: str) -> bool:
    """True when the member may manage the server; otherwise tell them (`what` needs it) and return False."""
    if interaction.permissions.manage_guild:
        return True
    log.info("refused %s for user %s: no Manage Server permission", what, interaction.user.id)
    await interaction.response.send_message(f"⚠️ {what} needs the Manage Server permission.", ephemeral=True)
    return False
