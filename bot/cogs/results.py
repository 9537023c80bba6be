"""The buttons under a job's reply, understood: Cancel stops the job; Re-roll, More style and Less style start a
follow-up job from the same images (a still or an animation alike; every style image, with its blend); Upscale x2
starts one from the delivered picture at twice its size (`bot.shared.upscale`); Timelapse shows how a still took
shape.

A follow-up reads the earlier job's stored inputs back from the queue (`JobQueue.inputs`), keeps the seed that job
drew so only what the button says changes, holds the result to the server's current limits (they may have been
lowered since), and starts like any other job (`JobStarter.start`), as a new reply with its own progress. A
follow-up of an upscale continues from the same picture as that upscale did. Anyone who sees a result may press its
buttons (a follow-up is the presser's own job, held to their queue limit and cooldown); only Cancel is the
requester's (or a moderator's). The clicks arrive through a
`discord.ui.DynamicItem` registered when this cog loads, so buttons on replies sent before a restart keep working.

The timelapse (a small GIF the engine recorded while it painted the still, kept beside the result) is posted as an
ephemeral reply to whoever pressed the button: anyone in the channel may be curious, and a public post per press
would fill the channel with copies of the same GIF; the result itself stays the one public message.
"""

from __future__ import annotations

import asyncio
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
from bot.shared.upscale import UPSCALE_FACTOR, continued_limits, plan_upscale
from nst_core.errors import NSTError
from nst_core.images import style_role
from nst_core.params import StyleParams
from nst_jobs.errors import JobNotFoundError
from nst_jobs.log_format import job_fields
from nst_jobs.models import JobState
from nst_jobs.queue import JobInputs

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
        if action == ButtonAction.UPSCALE:
            await self.upscale(interaction, job_id)
            return
        origin = f"button {action}"
        try:
            inputs = await self.bot.queue.inputs(job_id)
        except NSTError as exc:
            await refuse(interaction, str(exc), origin)
            return
        except OSError:
            await refuse(interaction, self._deleted(job_id), origin)
            return
        try:
            params = _as_run(inputs)
            if action == ButtonAction.REROLL:
                params = params.replace(seed=None)
                change = "re-roll (new seed)"
            else:
                params = params.replace(style_weight=params.style_weight * STYLE_FACTORS[action])
                change = f"{action} style (style {params.style_weight:g})"
        except NSTError as exc:
            await refuse(interaction, str(exc), origin)
            return
        # a follow-up of an upscale continues from the same picture again
        await self._follow_up(interaction, inputs, params, change=change, notes=[], origin=origin,
                              continue_from=inputs.continue_from)

    async def upscale(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """Start job `job_id`'s delivered picture again at twice its size (`bot.shared.upscale`)."""
        origin = "button upscale"
        queue = self.bot.queue
        try:
            job = await queue.get(job_id)
        except JobNotFoundError:
            await refuse(interaction, self._deleted(job_id), origin)
            return
        result = job.result or {}
        if job.state != JobState.DONE:
            await refuse(interaction, f"job {job_id} did not finish ({job.state.value}): only a finished picture can "
                         "be upscaled", origin)
            return
        if int(result.get("frames") or 1) > 1:
            await refuse(interaction, f"job {job_id} is an animation: Upscale x2 makes photos larger, not "
                         "animations", origin)
            return
        try:
            inputs = await queue.inputs(job)
            plan = plan_upscale(_as_run(inputs), int(result["width"]), int(result["height"]),
                                (await self.bot.starter.limits_for(interaction.guild_id)).max_upscale_size)
            delivered = await asyncio.to_thread(queue.result_bytes, job)
        except NSTError as exc:
            await refuse(interaction, str(exc), origin)
            return
        except OSError:
            await refuse(interaction, self._deleted(job_id), origin)
            return
        sizes = f" ({result['width']}x{result['height']} → {plan.params.size} px)"
        await self._follow_up(interaction, inputs, plan.params, change=f"upscale x{UPSCALE_FACTOR}", detail=sizes,
                              notes=list(plan.notes), origin=origin, continue_from=delivered)

    async def _follow_up(self, interaction: discord.Interaction[Any], inputs: JobInputs, params: StyleParams, *,
                         change: str, detail: str = "", notes: list[str], origin: str,
                         continue_from: bytes | None) -> None:
        """Start a job from `inputs`' images with `params`, held to the server's current limits (they may have been
        lowered since that job ran; one that continues a picture is held to the upscale size)."""
        starter = self.bot.starter
        limits = await starter.limits_for(interaction.guild_id)
        params, capped = apply_limits(params, limits if continue_from is None else continued_limits(limits),
                                      origin=f"job {inputs.job_id}'s")
        count = len(inputs.styles)
        styles = [ImageSource(data=data, name=style_role(i, count)) for i, data in enumerate(inputs.styles)]
        summary = f"{change} of `{inputs.job_id}`{detail}"
        if count > 1:  # every style image and the blend go on as they were
            summary += f" · {describe_styles(params.style_blend or (1.0,) * count)}"
        await starter.start(interaction, params=params, content=ImageSource(data=inputs.content, name=CONTENT),
                            styles=styles, summary=summary, notes=[*notes, *capped], origin=origin,
                            continue_from=continue_from)

    def _deleted(self, job_id: str) -> str:
        return f"the images of job {job_id} were deleted ({self._kept()}); run /stylize again"

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


def _as_run(inputs: JobInputs) -> StyleParams:
    """The earlier job's parameters with the seed it drew: a follow-up keeps the look and changes only what its
    button says (raises ParameterError for a row the engine no longer accepts)."""
    used = dict(inputs.params)
    if inputs.seed is not None:
        used["seed"] = inputs.seed
    return StyleParams.from_dict(used)


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(ResultsCog(bot))
