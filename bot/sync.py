"""Registering the slash commands with Discord, only when they changed.

Syncing on every start is rate-limited by Discord and pointless; the bot stores a hash of the command set it last
registered (per target: global, or the development guild) and syncs at start-up only when that hash differs, or
always on `nst-bot sync` / `discord.sync_commands = "always"`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

import discord

if TYPE_CHECKING:
    from bot.app import StyleBot

__all__ = ["commands_hash", "sync_commands"]

log = logging.getLogger(__name__)


def _target(bot: StyleBot) -> discord.Object | None:
    guild_id = bot.config.discord.dev_guild_id
    return discord.Object(guild_id) if guild_id else None


def commands_hash(bot: StyleBot) -> str:
    """A hash of what would be registered: every command's payload, and where."""
    guild = _target(bot)
    commands = bot.tree.get_commands() if guild is None else [*bot.tree.get_commands(), *bot.tree.get_commands(
        guild=guild)]
    payload = sorted(json.dumps(c.to_dict(bot.tree), sort_keys=True) for c in commands)
    target = f"guild:{guild.id}" if guild is not None else "global"
    return hashlib.sha256(json.dumps([target, payload]).encode()).hexdigest()


async def sync_commands(bot: StyleBot, *, force: bool = False) -> bool:
    """Register the commands if they changed since the last sync (or `force`). Returns True if it synced."""
    digest = commands_hash(bot)
    key = "commands_hash"
    if not force and await bot.store.get_value(key) == digest:
        log.info("slash commands unchanged since the last sync; not syncing")
        return False
    guild = _target(bot)
    if guild is not None:
        bot.tree.copy_global_to(guild=guild)
    synced = await bot.tree.sync(guild=guild)
    await bot.store.set_value(key, digest)
    log.info("synced %d command(s) %s", len(synced), f"to guild {guild.id}" if guild else "globally")
    return True
