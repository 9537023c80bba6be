"""Saved styles per server: `/style save`, `/style list`, `/style delete`.

Anyone may list them and use them (`/stylize saved_style:`, the "Stylize this image" menu); saving and deleting
need the Manage Server permission, checked here on the server side as well (Discord cannot restrict one subcommand
of a group).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.records import style_key
from bot.shared.options import saved_style_choices
from bot.shared.refusals import refuse, require_manage_guild
from bot.shared.starter import ImageSource
from nst_core.errors import NSTError

if TYPE_CHECKING:
    from bot.app import StyleBot

log = logging.getLogger(__name__)

NAME_MAX = 40


def checked_name(name: str) -> str:
    """The key a new style is saved under (`style_key`), refused when empty or longer than NAME_MAX."""
    cleaned = style_key(name)
    if not cleaned:
        raise ValueError("give the style a name")
    if len(cleaned) > NAME_MAX:
        raise ValueError(f"a style name has at most {NAME_MAX} characters")
    return cleaned


class StylesCog(commands.GroupCog, group_name="style", group_description="Styles saved on this server"):
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="save", description="Save a style image under a name (Manage Server)")
    @app_commands.guild_only()
    @app_commands.describe(name="what members will pick it by", image="the painting")
    async def save(self, interaction: discord.Interaction[Any], name: str, image: discord.Attachment) -> None:
        if not await require_manage_guild(interaction, "Saving a style"):
            return
        starter = self.bot.starter
        guild_id = interaction.guild_id or 0
        try:
            key = checked_name(name)
        except ValueError as exc:
            await refuse(interaction, str(exc), "/style save")
            return
        existing = await self.bot.store.styles(guild_id)
        if len(existing) >= self.bot.config.limits.max_saved_styles and key not in {s.name for s in existing}:
            await refuse(interaction, f"this server has {len(existing)} saved styles, the most allowed; "
                                 "delete one first", "/style save")
            return
        source = ImageSource(attachment=image, name="style")
        try:
            starter.check_metadata(source)
        except NSTError as exc:
            await refuse(interaction, str(exc), "/style save")
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            checked = await starter.load(source)
        except NSTError as exc:
            await refuse(interaction, str(exc), "/style save")
            return
        await self.bot.store.save_style(guild_id, key, checked.data, interaction.user.id)
        log.info("guild %s: style %r saved by %s", guild_id, key, interaction.user.id)
        await interaction.followup.send(f"Saved style “{key}” ({checked.width}x{checked.height}). Use it with "
                                        f"`/stylize saved_style:{key}` or “Stylize this image”.", ephemeral=True)

    @app_commands.command(name="list", description="The styles saved on this server")
    @app_commands.guild_only()
    async def list(self, interaction: discord.Interaction[Any]) -> None:
        styles = await self.bot.store.styles(interaction.guild_id or 0)
        if not styles:
            text = "No saved styles yet. Someone with Manage Server can add one with `/style save`."
        else:
            lines = [f"• **{s.name}** (by <@{s.created_by}>)" for s in styles]
            text = f"{len(styles)} saved style{'s' if len(styles) != 1 else ''}:\n" + "\n".join(lines)
        await interaction.response.send_message(text[:2000], ephemeral=True)

    @app_commands.command(name="delete", description="Delete a saved style (Manage Server)")
    @app_commands.guild_only()
    @app_commands.describe(name="the saved style to delete")
    async def delete(self, interaction: discord.Interaction[Any], name: str) -> None:
        if not await require_manage_guild(interaction, "Deleting a style"):
            return
        key = style_key(name)
        if await self.bot.store.delete_style(interaction.guild_id or 0, key):
            log.info("guild %s: style %r deleted by %s", interaction.guild_id, key, interaction.user.id)
            await interaction.response.send_message(f"Deleted style “{key}”.", ephemeral=True)
        else:
            await refuse(interaction, f"there is no saved style named “{key}”", "/style delete")

    @delete.autocomplete("name")
    async def _name_autocomplete(self, interaction: discord.Interaction[Any],
                                 current: str) -> list[app_commands.Choice[str]]:
        return await saved_style_choices(self.bot.store, interaction.guild_id, current)


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(StylesCog(bot))
