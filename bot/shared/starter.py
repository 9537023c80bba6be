"""Starting a job from an interaction, the one way /stylize, the "Stylize this image" menu and the result buttons
all do it.

Checks that need no download come first and are answered at once, ephemerally (the bot is not restarting, channel
allowed, cooldown, the member's and the queue's caps, the declared attachment metadata). Then the interaction is
deferred (Discord allows 3 s), the images are downloaded and decoded, and the job goes to the queue; a failure after
the deferral replaces the public "thinking" reply by an ephemeral message. Each refusal is logged in one line.

A content that turns out to be an animation (an animated GIF, WebP or PNG, a video clip; told by its bytes) is
held to the server's animation limits before it is queued and made at the server's animation size
(`bot.shared.animation`); a still asks the engine for the frames behind the Timelapse button.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.records import Reply
from bot.shared import animation
from bot.shared.attachments import (
    ImageLimits,
    InputImage,
    check_attachment_metadata,
    check_image_bytes,
    fetch_bytes,
    fetch_image,
)
from bot.shared.options import Limits
from bot.shared.refusals import UserFacingError, refuse, refuse_after_defer
from nst_core.clips import ClipInfo
from nst_core.errors import NSTError
from nst_core.params import StyleParams, check_content_shape
from nst_jobs.errors import QueueFullError
from nst_jobs.log_format import job_fields
from nst_jobs.models import JobRequest, JobState

if TYPE_CHECKING:
    from bot.app import StyleBot

__all__ = ["CONTENT", "RESTARTING_REFUSAL", "ImageSource", "JobStarter"]

log = logging.getLogger(__name__)

#: The role (`ImageSource.name`) of the image to repaint: the one that may be an animation.
CONTENT = "content"
#: What a member who asks for a job while the bot is stopping to restart is told (`StyleBot.draining`).
RESTARTING_REFUSAL = "the bot is restarting right now: please try again in a minute (nothing was queued)"


@dataclass(frozen=True)
class ImageSource:
    """An image to use: a Discord attachment (downloaded when the job starts) or bytes we already hold."""

    attachment: discord.Attachment | None = None
    data: bytes | None = None
    name: str = "image"


class JobStarter:
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        self._last_start: dict[int, float] = {}  # user id -> monotonic time of their last job start

    @property
    def image_limits(self) -> ImageLimits:
        limits = self.bot.config.limits
        return ImageLimits(limits.max_attachment_bytes, limits.max_input_pixels, self.bot.config.discord.cdn_hosts)

    async def limits_for(self, guild_id: int | None) -> Limits:
        """The bot's size and iteration limits, lowered by the server's own settings."""
        settings = await self.bot.store.guild_settings(guild_id)
        cfg = self.bot.config.limits
        return Limits(max_size=min(cfg.max_size, settings.max_size or cfg.max_size),
                      max_iterations=min(cfg.max_iterations, settings.max_iterations or cfg.max_iterations),
                      default_preset=cfg.default_preset, clip=animation.clip_limits(cfg, settings),
                      max_clip_size=animation.max_clip_size(cfg, settings),
                      max_upscale_size=min(cfg.max_upscale_size, settings.max_upscale_size or cfg.max_upscale_size))

    # -- checks that need no download -----------------------------------------------------------------------------
    async def precheck(self, interaction: discord.Interaction[Any], sources: Sequence[ImageSource]) -> None:
        """Raise UserFacingError / NSTError for what can be refused before deferring."""
        if self.bot.draining:
            raise UserFacingError(RESTARTING_REFUSAL)
        user_id = interaction.user.id
        settings = await self.bot.store.guild_settings(interaction.guild_id)
        if settings.channels and interaction.channel_id not in settings.channels:
            places = ", ".join(f"<#{c}>" for c in settings.channels)
            raise UserFacingError(f"style transfer is not enabled in this channel; use {places}")
        cooldown = self.bot.config.limits.cooldown_seconds
        since = time.monotonic() - self._last_start.get(user_id, -1e9)
        if since < cooldown:
            raise UserFacingError(f"you can start another job in {cooldown - since:.0f} s (cooldown)")
        mine = await self.bot.queue.jobs(JobState.QUEUED, JobState.RUNNING, requester=str(user_id))
        cap = min(self.bot.config.queue.per_user_cap, settings.per_user_cap or self.bot.config.queue.per_user_cap)
        if len(mine) >= cap:
            raise UserFacingError(f"you already have {len(mine)} job{'s' if len(mine) != 1 else ''} waiting or "
                                  f"running (this server allows {cap}); wait for one to finish or /cancel one")
        everyone = await self.bot.queue.jobs(JobState.QUEUED, JobState.RUNNING)
        if len(everyone) >= self.bot.config.queue.global_cap:
            raise QueueFullError(self.bot.config.queue.global_cap)
        for source in sources:
            self.check_metadata(source)

    def check_metadata(self, source: ImageSource) -> None:
        """Refuse an attachment whose declared type, size or dimensions are already unusable (no download)."""
        att = source.attachment
        if att is not None:
            check_attachment_metadata(role=source.name, filename=att.filename, size=att.size,
                                      content_type=att.content_type, width=att.width, height=att.height,
                                      limits=self.image_limits, accept_video=source.name == CONTENT)

    # -- the whole flow --------------------------------------------------------------------------------------------
    async def start(self, interaction: discord.Interaction[Any], *, params: StyleParams, content: ImageSource,
                    styles: Sequence[ImageSource], summary: str, notes: Sequence[str] = (), origin: str,
                    continue_from: bytes | None = None) -> None:
        """Check, defer, download, submit and start reporting; every refusal reaches the member ephemerally.
        `continue_from`: an earlier result the still starts from (Upscale x2; the bot's own output, so the worker's
        decoder is the only check it needs)."""
        user = interaction.user
        try:
            params.check_styles(len(styles))
            await self.precheck(interaction, [content, *styles])
        except NSTError as exc:
            await refuse(interaction, str(exc), origin)
            return
        deferred = await interaction.response.defer(thinking=True)
        message_id = getattr(deferred, "message_id", None) or (await interaction.original_response()).id
        received = time.time()
        notes = list(notes)
        try:
            limits = await self.limits_for(interaction.guild_id)
            content_image, clip = await self.load_content(content)
            if clip is not None:
                animation.check_content_clip(clip, limits.clip)
                params, capped = animation.cap_clip_size(params, limits.max_clip_size)
                notes += capped
                summary = f"{summary} · {animation.describe_clip(clip)}"
            check_content_shape(content_image.width, content_image.height, params.size)
            style_images = [await self.load(s) for s in styles]
            job = await self.bot.queue.submit(JobRequest(
                params=params, content=content_image.data, styles=tuple(s.data for s in style_images),
                requester=str(user.id), guild_id=str(interaction.guild_id) if interaction.guild_id else None,
                channel_id=str(interaction.channel_id) if interaction.channel_id else None,
                output_format=self.bot.config.limits.output_format,
                max_output_bytes=interaction.filesize_limit, clip_limits=limits.clip,
                timelapse_frames=0 if clip is not None else self.bot.config.limits.timelapse_frames,
                continue_from=continue_from, meta={"summary": summary, "notes": notes, "origin": origin}))
        except NSTError as exc:
            await refuse_after_defer(interaction, str(exc), origin)
            return
        self._last_start[user.id] = time.monotonic()
        reply = Reply(job_id=job.id, application_id=interaction.application_id, token=interaction.token,
                      message_id=message_id, channel_id=interaction.channel_id, guild_id=interaction.guild_id,
                      user_id=user.id, token_deadline=received + self.bot.config.progress.token_fallback_seconds)
        await self.bot.store.save_reply(reply)
        log.info("job %s submitted by user %s from %s (%s)", job.id, user.id, origin, summary,
                 extra=job_fields(job))
        self.bot.follow(reply)

    async def load_content(self, source: ImageSource) -> tuple[InputImage, ClipInfo | None]:
        """The content's checked bytes and, for an animation or a video, what the clip is (None for a still).
        The bytes decide, not the file name or the content type: a one-frame GIF is a still."""
        if source.attachment is None:
            assert source.data is not None
            data, filename = source.data, source.name
        else:
            att = source.attachment
            data = await fetch_bytes(self.bot.http_session, url=att.url, role=source.name, filename=att.filename,
                                     size=att.size, content_type=att.content_type, width=att.width,
                                     height=att.height, limits=self.image_limits, accept_video=True)
            filename = att.filename
        clip = await animation.probe_content(data)
        if clip is None:
            return await check_image_bytes(data, role=source.name, filename=filename, limits=self.image_limits), None
        return InputImage(data, clip.width, clip.height, filename), clip

    async def load(self, source: ImageSource) -> InputImage:
        """The checked bytes of an image: an attachment downloaded (allowed hosts, byte cap) and decoded, or bytes
        we hold decoded; raises NSTError subclasses with messages for the member."""
        if source.attachment is not None:
            att = source.attachment
            return await fetch_image(self.bot.http_session, url=att.url, role=source.name, filename=att.filename,
                                     size=att.size, content_type=att.content_type, width=att.width,
                                     height=att.height, limits=self.image_limits)
        assert source.data is not None
        return await check_image_bytes(source.data, role=source.name, filename=source.name, limits=self.image_limits)
