"""The bot's own store across an upgrade: a server's settings saved by an older bot keep working (and take the
limits added since: animations, upscale)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.records import BotStore, GuildSettings

pytestmark = pytest.mark.asyncio

#: guild_settings as the bot before animations wrote it.
OLD_GUILD_SETTINGS = """
CREATE TABLE guild_settings (
    guild_id INTEGER PRIMARY KEY,
    max_size INTEGER,
    max_iterations INTEGER,
    per_user_cap INTEGER,
    channels TEXT NOT NULL DEFAULT '[]'
);
INSERT INTO guild_settings VALUES (7, 256, 100, 2, '[42]');
"""


async def test_settings_saved_before_animations_survive_and_gain_animation_and_upscale_limits(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "bot.sqlite3") as old:
        old.executescript(OLD_GUILD_SETTINGS)
    store = await BotStore.open(tmp_path)
    try:
        kept = await store.guild_settings(7)
        assert kept == GuildSettings(max_size=256, max_iterations=100, per_user_cap=2, channels=(42,))
        changed = GuildSettings(max_size=256, max_iterations=100, per_user_cap=2, channels=(42,),
                                max_clip_frames=12, max_clip_seconds=2.5, max_clip_size=128, max_upscale_size=512)
        await store.save_guild_settings(7, changed)
        assert await store.guild_settings(7) == changed
    finally:
        await store.close()
    store = await BotStore.open(tmp_path)  # and opening it again changes nothing
    try:
        assert await store.guild_settings(7) == changed
    finally:
        await store.close()
