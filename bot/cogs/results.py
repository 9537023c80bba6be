"""The buttons under a job's reply, understood: Cancel stops the job; Re-roll, More style and Less style start a
follow-up job from the same images (a still or an animation alike; every style image, with its blend); Timelapse
shows how a still took shape.

A follow-up reads the earlier job's stored inputs back from the queue (`JobQueue.inputs`), keeps the seed that job
drew so only what the button says changes, holds the result to the server's current limits (they may have been
lowered since), and starts like any other job (`JobStarter.start`). The clicks arrive through a
`discord.ui.DynamicItem` registered when this cog loads, so buttons on replies sent before a restart keep working.

The timelapse (a small GIF the engine recorded while it painted the still, kept beside the result) is posted as an
ephemeral reply to whoever pressed the button: anyone in the channel may be curious, and a public post per press
would fill the channel with copies of the same GIF; the result itself stays the one public message.
"""

from __future__ import annotations

import io
import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.reporter import UPLOAD_TOO_LARGE
from bot.shared.buttons import TEMPLATE, ButtonAction, job_button
from bot.shared.cancel import cancel_job
from bot.shared.options import apply_limits, describe_styles
from bot.shared.refusals import apologise, refuse, sentence
from bot.shared.render import timelapse_text
from bot.shared.starter import CONTENT, ImageSource
from nst_core.errors import NSTError
from nst_core.images import style_role
from nst_core.params import StyleParams
from nst_jobs.errors import JobNotFoundError
from nst_jobs.log_format import job_fields

if TYPE_CHECKING:
    from bot.app import StyleBot

__all__ = ["STYLE_FACTORS", "JobButton", "ResultsCog", "setup"]

log = logging.getLogger(__name__)

#: What More style / Less style do to the style weight (Re-roll draws a fresh seed instead).
STYLE_FACTORS: dict[ButtonAction, float] = {ButtonAction.MORE: 2.0, ButtonAction.LESS: 0.5}


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    """A click on any job button, in any reply, however old: handed to the `ResultsCog`."""

    def __init__(self, action: ButtonAction, job_id: str) -> None:
        super().__init__(job_button(action, job_id))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> JobButton:
        try:
            action = ButtonAction(match["action"])
        except ValueError:
            raise ValueError(f"unknown button action {match['action']!r}") from None
        return cls(action, match["job_id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            cog = interaction.client.get_cog(ResultsCog.__cog_name__)
            if not isinstance(cog, ResultsCog):
                raise RuntimeError("the results cog is not loaded")
            await cog.on_button(interaction, self.action, self.job_id)
        except Exception as exc:
            await apologise(interaction, f"button {self.action} of job {self.job_id}", exc)


class ResultsCog(commands.Cog, name="Results"):
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(JobButton)

    async def on_button(self, interaction: discord.Interaction[Any], action: ButtonAction, job_id: str) -> None:
        """Cancel, or start a follow-up job from the same images."""
        if action == ButtonAction.CANCEL:
            await cancel_job(self.bot.queue, interaction, job_id)
            return
        if action == ButtonAction.TIMELAPSE:
            await self.show_timelapse(interaction, job_id)
            return
        origin = f"button {action}"
        try:
            inputs = await self.bot.queue.inputs(job_id)
        except NSTError as exc:
            await refuse(interaction, str(exc), origin)
            return
        except OSError:
            await refuse(interaction, f"the images of job {job_id} were deleted ({self._kept()}); run /stylize "
                         "again", origin)
            return
        used = dict(inputs.params)
        if inputs.seed is not None:
            used["seed"] = inputs.seed  # keep the look, change only what the button says
        try:
            params = StyleParams.from_dict(used)
            if action == ButtonAction.REROLL:
                params = params.replace(seed=None)
                change = "re-roll (new seed)"
            else:
                params = params.replace(style_weight=params.style_weight * STYLE_FACTORS[action])
                change = f"{action} style (style {params.style_weight:g})"
        except NSTError as exc:
            await refuse(interaction, str(exc), origin)
            return
        starter = self.bot.starter
        # the server's limits may have been lowered since that job ran
        params, notes = apply_limits(params, await starter.limits_for(interaction.guild_id),
                                     origin=f"job {inputs.job_id}'s")
        count = len(inputs.styles)
        styles = [ImageSource(data=data, name=style_role(i, count)) for i, data in enumerate(inputs.styles)]
        summary = f"{change} of `{inputs.job_id}`"
        if count > 1:  # every style image and the blend go on as they were
            summary += f" · {describe_styles(params.style_blend or (1.0,) * count)}"
        await starter.start(interaction, params=params, content=ImageSource(data=inputs.content, name=CONTENT),
                            styles=styles, summary=summary, notes=notes, origin=origin)

    def _kept(self) -> str:
        return f"a job's files are kept {self.bot.config.queue.retention_hours:g} hours"

    async def show_timelapse(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """Post job `job_id`'s timelapse GIF to whoever pressed the button, ephemerally (see the module docstring)."""
        origin = "button timelapse"
        gone = f"the timelapse of job {job_id} was deleted ({self._kept()}); run /stylize again to make a new one"
        try:
            job = await self.bot.queue.get(job_id)
        except JobNotFoundError:
            await refuse(interaction, gone, origin)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # the private "thinking" becomes the GIF
        try:
            data = await self.bot.queue.timelapse(job)
        except OSError:
            data = None
        if data is None:
            await self._say(interaction, gone, origin)
            return
        file = discord.File(io.BytesIO(data), filename=f"nst-{job.id}-timelapse.gif")
        try:
            await interaction.edit_original_response(content=timelapse_text(job.id, len(data)), attachments=[file])
        except discord.HTTPException as exc:
            if exc.code != UPLOAD_TOO_LARGE:
                raise
            await self._say(interaction, f"the timelapse of job {job_id} is larger than this server's upload limit",
                            origin)
            return
        log.info("job %s: timelapse shown to user %s", job.id, interaction.user.id, extra=job_fields(job))

    async def _say(self, interaction: discord.Interaction[Any], message: str, origin: str) -> None:
        """A refusal in the deferred ephemeral reply itself (only the member sees it)."""
        log.info("refused %s for user %s: %s", origin, interaction.user.id, message)
        await interaction.edit_original_response(content=sentence(message))


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(ResultsCog(bot))
