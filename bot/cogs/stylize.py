"""/stylize and the "Stylize this image" message menu: turn what the member picked into a job.

The content may be a moving picture (an animated GIF, WebP or PNG, or an MP4, WebM or MOV clip): the starter
tells by its bytes and makes an animation of it (`bot.shared.animation`); the style is always a still (a GIF style
gives its first frame). A second style (`style2` or `saved_style2`) is blended with the first: `blend` is its share,
and the job gets both images with `style_blend` (1 - blend, blend). The option ranges come from the engine's
parameter model (`bot.shared.options`); `typing.Optional[...]` is used on purpose below, because discord.py's Range
annotations are objects, which the `X | None` syntax does not accept.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

import discord
from discord import app_commands
from discord.ext import commands

from bot.records import style_key
from bot.shared.animation import VIDEO_EXTENSIONS, is_video_type
from bot.shared.options import (
    COLOR_CHOICES,
    DEFAULT_BLEND,
    PRESET_CHOICES,
    StylizeOptions,
    blend_option,
    blend_weights,
    build_params,
    describe_params,
    describe_styles,
    option_help,
    option_range,
    saved_style_choices,
)
from bot.shared.refusals import UserFacingError, apologise, refuse
from bot.shared.starter import CONTENT, ImageSource
from nst_core.errors import NSTError
from nst_core.images import style_role

if TYPE_CHECKING:
    from bot.app import StyleBot

log = logging.getLogger(__name__)

SizeOption = option_range("size", int)
IterationsOption = option_range("iterations", int)
ContentWeightOption = option_range("content_weight", float)
StyleWeightOption = option_range("style_weight", float)
TvWeightOption = option_range("tv_weight", float)
SeedOption = option_range("seed", int)
BlendOption = blend_option()

PICKER_TIMEOUT_S = 300.0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
NO_CONTENT = ("that message has no image attached (PNG, JPEG, WebP, GIF, BMP or TIFF, an animated GIF, WebP or "
              "PNG, or an MP4, WebM or MOV clip)")


class StylizeCog(commands.Cog):
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Stylize this image", callback=self.stylize_message)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="stylize", description="Repaint a photo in the style of a painting")
    @app_commands.guild_only()
    @app_commands.describe(
        content="the photo to repaint, or an animated GIF / WebP / PNG or a short MP4, WebM or MOV clip",
        style="the painting whose style to copy (or pick a saved_style)",
        saved_style="a style saved on this server, instead of a style image",
        style2="a second painting to blend with the first (or pick a saved_style2)",
        saved_style2="a second saved style to blend with the first, instead of a style2 image",
        blend=f"the second style's share, 0 to 1 (default {DEFAULT_BLEND:g}); the first style gets the rest",
        preset="quality: fast, balanced (default) or best",
        content_weight=option_help("content_weight"),
        style_weight=option_help("style_weight"),
        tv_weight=option_help("tv_weight"),
        size=option_help("size"),
        iterations=option_help("iterations"),
        preserve_colors="keep the photo's colours (luminance) or match the style's colours to the photo (histogram)",
        seed=option_help("seed"),
    )
    @app_commands.choices(preset=PRESET_CHOICES, preserve_colors=COLOR_CHOICES)
    async def stylize(
        self,
        interaction: discord.Interaction[Any],
        content: discord.Attachment,
        style: Optional[discord.Attachment] = None,  # noqa: UP045
        saved_style: Optional[str] = None,  # noqa: UP045
        style2: Optional[discord.Attachment] = None,  # noqa: UP045
        saved_style2: Optional[str] = None,  # noqa: UP045
        blend: Optional[BlendOption] = None,  # noqa: UP045
        preset: Optional[str] = None,  # noqa: UP045
        content_weight: Optional[ContentWeightOption] = None,  # noqa: UP045
        style_weight: Optional[StyleWeightOption] = None,  # noqa: UP045
        tv_weight: Optional[TvWeightOption] = None,  # noqa: UP045
        size: Optional[SizeOption] = None,  # noqa: UP045
        iterations: Optional[IterationsOption] = None,  # noqa: UP045
        preserve_colors: Optional[str] = None,  # noqa: UP045
        seed: Optional[SeedOption] = None,  # noqa: UP045
    ) -> None:
        starter = self.bot.starter
        options = StylizeOptions(preset=preset, content_weight=content_weight, style_weight=style_weight,
                                 tv_weight=tv_weight, size=size, iterations=iterations,
                                 preserve_colors=preserve_colors, seed=seed)
        second = style2 is not None or bool(saved_style2)
        count = 2 if second else 1
        try:
            params, notes = build_params(options, await starter.limits_for(interaction.guild_id))
            if second:
                params = params.replace(style_blend=blend_weights(blend))
            elif blend is not None:
                raise UserFacingError("blend needs a second style: add style2 or saved_style2")
            sources = [await self._style_source(interaction, style, saved_style, slot=0, count=count)]
            if second:
                sources.append(await self._style_source(interaction, style2, saved_style2, slot=1, count=count))
        except NSTError as exc:
            await refuse(interaction, str(exc), "/stylize")
            return
        summary = describe_params(params, options.preset or self.bot.config.limits.default_preset)
        if second:
            assert params.style_blend is not None
            names = [_style_name(style, saved_style), _style_name(style2, saved_style2)]
            summary += f" · {describe_styles(params.style_blend, names)}"
        elif saved_style and style is None:
            summary += f" · style “{style_key(saved_style)}”"  # as saved, however it was typed
        await starter.start(interaction, params=params, content=ImageSource(attachment=content, name=CONTENT),
                            styles=sources, summary=summary, notes=notes, origin="/stylize")

    @stylize.autocomplete("saved_style")
    @stylize.autocomplete("saved_style2")
    async def _saved_style_autocomplete(self, interaction: discord.Interaction[Any],
                                        current: str) -> list[app_commands.Choice[str]]:
        return await saved_style_choices(self.bot.store, interaction.guild_id, current)

    async def _style_source(self, interaction: discord.Interaction[Any], style: discord.Attachment | None,
                            saved_style: str | None, *, slot: int = 0, count: int = 1) -> ImageSource:
        """Style `slot` (0: `style` / `saved_style`, 1: `style2` / `saved_style2`) of `count`: exactly one source."""
        role = style_role(slot, count)
        suffix = "" if slot == 0 else str(slot + 1)
        if style is not None and saved_style:
            raise UserFacingError(f"give either a style{suffix} image or a saved_style{suffix}, not both")
        if style is not None:
            return ImageSource(attachment=style, name=role)
        if not saved_style:
            raise UserFacingError("attach a style image (the painting), or pick one of this server's saved styles "
                                  "in saved_style")
        saved = await self.bot.store.style(interaction.guild_id or 0, saved_style)
        if saved is None:
            raise UserFacingError(f"there is no saved style named “{saved_style}” on this server; /style list "
                                  "shows them")
        try:
            data = saved.path.read_bytes()
        except OSError:
            raise UserFacingError(f"the saved style “{saved.name}” lost its image file; ask an admin to save it "
                                  "again") from None
        return ImageSource(data=data, name=role)

    # -- the message menu ------------------------------------------------------------------------------------------
    async def stylize_message(self, interaction: discord.Interaction[Any], message: discord.Message) -> None:
        image = next((a for a in message.attachments if _looks_like_content(a)), None)
        if image is None:
            await refuse(interaction, NO_CONTENT, "menu")
            return
        styles = await self.bot.store.styles(interaction.guild_id or 0)
        if not styles:
            await refuse(interaction, "this server has no saved styles yet; someone with Manage Server can "
                                 "add one with /style save", "menu")
            return
        view = StylePicker(self, image, [s.name for s in styles[:25]], interaction)
        await interaction.response.send_message(f"Pick a style for **{image.filename}**:", view=view,
                                                ephemeral=True)

    async def start_from_picker(self, interaction: discord.Interaction[Any], image: discord.Attachment,
                                style_name: str) -> None:
        starter = self.bot.starter
        try:
            params, notes = build_params(StylizeOptions(), await starter.limits_for(interaction.guild_id))
            source = await self._style_source(interaction, None, style_name)
        except NSTError as exc:
            await refuse(interaction, str(exc), "menu")
            return
        summary = describe_params(params, self.bot.config.limits.default_preset) + f" · style “{style_name}”"
        await starter.start(interaction, params=params, content=ImageSource(attachment=image, name=CONTENT),
                            styles=[source], summary=summary, notes=notes, origin="menu")


def _style_name(style: discord.Attachment | None, saved_style: str | None) -> str:
    """How the headline names a style: the attachment's file name, or the saved style's name as saved."""
    return style.filename if style is not None else style_key(saved_style or "")


def _looks_like_content(att: discord.Attachment) -> bool:
    """An image or a video clip, as the message's attachment says (its bytes are checked after the download)."""
    if att.content_type:
        return att.content_type.lower().startswith("image/") or is_video_type(att.content_type)
    return att.filename.lower().endswith((*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS))


class StylePicker(discord.ui.View):
    """The ephemeral select of saved styles shown by the message menu (it lives only as long as that message)."""

    def __init__(self, cog: StylizeCog, image: discord.Attachment, names: list[str],
                 origin: discord.Interaction[Any]) -> None:
        super().__init__(timeout=PICKER_TIMEOUT_S)
        self.cog = cog
        self.image = image
        self.origin = origin
        self.select: discord.ui.Select[StylePicker] = discord.ui.Select(
            placeholder="Saved style", options=[discord.SelectOption(label=n, value=n) for n in names])
        self.select.callback = self._picked  # type: ignore[method-assign]
        self.add_item(self.select)

    async def _picked(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.user.id != self.origin.user.id:
            await interaction.response.send_message("This menu is someone else's.", ephemeral=True)
            return
        name = self.select.values[0]
        self.stop()
        await self.cog.start_from_picker(interaction, self.image, name)
        try:
            await self.origin.edit_original_response(content=f"Style “{name}” picked for **{self.image.filename}**.",
                                                     view=None)
        except discord.HTTPException as exc:
            log.debug("could not update the style picker (%s)", exc.code)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception,
                       item: discord.ui.Item[Any]) -> None:
        await apologise(interaction, "the saved-style picker", error)

    async def on_timeout(self) -> None:
        try:
            await self.origin.edit_original_response(content="This menu expired; use “Stylize this image” again.",
                                                     view=None)
        except discord.HTTPException as exc:
            log.debug("could not expire the style picker (%s)", exc.code)


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(StylizeCog(bot))
