"""Keeps one job's reply current, from "waiting" to the delivered result, and delivers it exactly once.

A `Reporter` follows the job through `JobQueue.subscribe` and edits the reply at most once per
`progress.edit_interval_seconds`, only when the text changed (Discord has undocumented edit limits; discord.py
honours 429s itself). Every few edits a small preview image rides along. The interaction token that allows those
edits lives 15 minutes: past `progress.token_fallback_seconds`, or as soon as an edit is refused for an expired or
unknown token (50027 / 10015), updates move to a normal channel message that mentions the requester, or to a direct
message if the bot cannot post in the channel. Where updates go is kept in the bot's store (`records.Reply`), so a
restarted bot picks every unfinished job up again and keeps editing the same message.

Exactly once across crashes: edits repeat harmlessly, and every message the bot posts carries a nonce made from the
job (`bot.shared.nonces`), so a post repeated by a bot restarted between the post and its record gives the first
message back instead of a second copy. The private note on a failure (an ephemeral follow-up, which takes no nonce)
goes out after the delivery is recorded: at most once. While the bot drains for a restart (`bot.drain`) a waiting
job's reply says it stays queued, and a running job stopped at the end of the drain says it will start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from PIL import Image

from bot.records import Reply
from bot.shared import render
from bot.shared.animation import fit_animation
from bot.shared.buttons import job_view
from bot.shared.nonces import MessageRole, message_nonce
from nst_core.encoding import encode_to_fit, extension_for
from nst_core.errors import NSTError
from nst_jobs.log_format import job_fields
from nst_jobs.models import Job, JobState, JobUpdate

if TYPE_CHECKING:
    from bot.app import StyleBot

__all__ = ["Reporter"]

log = logging.getLogger(__name__)

#: Discord error codes that mean the interaction token cannot edit any more.
TOKEN_GONE_CODES = frozenset({10015, 50027})
UNKNOWN_MESSAGE = 10008
UPLOAD_TOO_LARGE = 40005
DELIVERY_TRIES = 3


@dataclass
class _Status:
    job: Job
    position: int | None = None
    event: Any = None  # the last ProgressEvent
    preview: bytes | None = None
    preview_shown: bool = True


class Reporter:
    """Follows one job for its reply; `run()` returns once the outcome is delivered (or the bot closes)."""

    def __init__(self, bot: StyleBot, reply: Reply) -> None:
        self.bot = bot
        self.reply = reply
        self.job_id = reply.job_id
        self._last_text: str | None = None
        self._edits = 0
        self._fields = job_fields(reply.job_id, guild_id=reply.guild_id)  # `extra=` of its log lines
        self._status: _Status | None = None
        self._lock = asyncio.Lock()  # one edit at a time: the loop's and the drain's notes never cross
        self._stopped = False  # the reply says the job was stopped for a restart: no more progress edits
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name=f"nst-reply-{self.job_id}")
        return self.task

    # -- the loop ------------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._follow()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: reporting failed; the result stays stored (delivered after a restart)",
                          self.job_id, extra=self._fields)

    async def _follow(self) -> None:
        inbox: asyncio.Queue[JobUpdate] = asyncio.Queue()

        async def pump() -> None:
            async for update in self.bot.queue.subscribe(self.job_id):
                inbox.put_nowait(update)

        pump_task = asyncio.create_task(pump(), name=f"nst-follow-{self.job_id}")
        interval = self.bot.config.progress.edit_interval_seconds
        dirty = False
        next_edit = 0.0
        try:
            while True:
                wait = max(0.0, next_edit - time.monotonic()) if dirty else None
                try:
                    async with asyncio.timeout(wait):
                        update = await inbox.get()
                except TimeoutError:
                    async with self._lock:
                        await self._show()
                    dirty = False
                    next_edit = time.monotonic() + interval
                    continue
                status = self._status = self._apply(self._status, update)
                if status.job.finished:
                    break
                dirty = True
                if pump_task.done() and inbox.empty():
                    pump_task.result()  # re-raise what stopped the subscription
            async with self._lock:
                await self._deliver(status.job)
        finally:
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump_task

    def _apply(self, status: _Status | None, update: JobUpdate) -> _Status:
        if status is None:
            status = _Status(update.job)
        status.job = update.job
        if update.kind in ("state", "position"):
            status.position = update.position if update.job.state == JobState.QUEUED else None
        if update.kind == "progress" and update.event is not None:
            status.event = update.event
            if update.preview is not None:
                status.preview, status.preview_shown = update.preview, False
        return status

    def _summary(self, job: Job) -> str:
        return str(job.meta.get("summary") or "")

    async def note_restart(self, *, stopped: bool) -> None:
        """The bot is restarting (`bot.drain`): a waiting job's reply says the job stays queued; with `stopped` (the
        drain is over), a running job's reply says it was stopped and starts again after the restart."""
        async with self._lock:
            status = self._status
            if status is None or status.job.finished:
                return
            try:
                if status.job.state == JobState.QUEUED:
                    await self._show()
                elif stopped and not self._stopped:
                    text = render.interrupted_text(self.job_id, self._summary(status.job))
                    await self._update(text, files=None, view=job_view(self.job_id, running=True))
                    self._last_text, self._stopped = text, True
            except discord.HTTPException as exc:
                log.warning("job %s: cannot say that the bot restarts (%s %s)", self.job_id, exc.status, exc.code)

    async def _show(self) -> None:
        """Edit the reply to show the job's status now (call with the lock held)."""
        status = self._status
        if status is None or self._stopped:
            return
        job = status.job
        if job.state == JobState.QUEUED:
            waiting = len(await self.bot.queue.positions())
            text = render.queued_text(job.id, self._summary(job), status.position, waiting,
                                      restarting=self.bot.draining)
        else:
            text = render.progress_text(job.id, self._summary(job), status.event)
        files: list[discord.File] | None = None
        every = self.bot.config.progress.preview_every
        if (every and status.preview is not None and not status.preview_shown
                and (self._edits + 1) % every == 0):
            files = [discord.File(io.BytesIO(status.preview), filename=f"preview-{job.id}.jpg")]
            status.preview_shown = True
        if text == self._last_text and files is None:
            return
        await self._update(text, files=files, view=job_view(job.id, running=True))
        self._last_text = text
        self._edits += 1

    # -- where updates go ----------------------------------------------------------------------------------------------
    def _webhook(self) -> discord.Webhook:
        """The interaction's own webhook, as `Interaction.followup` builds it (an application webhook: it may
        send ephemeral messages), rebuilt from the stored token so it works after a restart too."""
        data: Any = {"id": self.reply.application_id, "type": 3, "token": self.reply.token}
        return discord.Webhook.from_state(data, self.bot._connection)

    def _token_usable(self) -> bool:
        return self.reply.channel_message_id is None and time.time() < self.reply.token_deadline

    async def _update(self, text: str, *, files: list[discord.File] | None, view: discord.ui.View | None) -> None:
        """Edit the job's message in place (the interaction reply, or the channel message it moved to)."""
        extra: dict[str, Any] = {} if files is None else {"attachments": files}
        if self._token_usable():
            try:
                await self._webhook().edit_message(self.reply.message_id, content=text, view=view, **extra)
                return
            except discord.HTTPException as exc:
                if exc.code not in TOKEN_GONE_CODES and exc.code != UNKNOWN_MESSAGE:
                    log.warning("job %s: progress edit failed (%s %s); next edit later", self.job_id, exc.status,
                                exc.code, extra=self._fields)
                    return
                log.info("job %s: the interaction token cannot edit any more (%s); continuing in the channel",
                         self.job_id, exc.code, extra=self._fields)
        if self.reply.channel_message_id is None:
            await self._move_to_channel(text, files=files, view=view)
            return
        try:
            await self._channel_message().edit(content=self._mention(text), view=view, **extra)
        except discord.NotFound:
            await self._move_to_channel(text, files=files, view=view)  # deleted by someone: post a new one
        except discord.HTTPException as exc:
            log.warning("job %s: channel progress edit failed (%s %s)", self.job_id, exc.status, exc.code,
                        extra=self._fields)

    def _mention(self, text: str) -> str:
        return f"<@{self.reply.user_id}> {text}" if not self.reply.dm else text

    def _allowed(self) -> discord.AllowedMentions:
        return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(self.reply.user_id)])

    def _channel_message(self) -> discord.PartialMessage:
        assert self.reply.channel_message_id is not None and self.reply.channel_id is not None
        channel = self.bot.get_partial_messageable(self.reply.channel_id)
        return channel.get_partial_message(self.reply.channel_message_id)

    async def _post(self, text: str, *, files: list[discord.File] | None, view: discord.ui.View | None,
                    nonce: str) -> discord.Message:
        """A new message in the job's channel mentioning the requester, or a DM when the bot cannot post there.
        `nonce` names the message (`bot.shared.nonces`): posted again, Discord gives the first one back."""
        kwargs: dict[str, Any] = {"files": files, "nonce": nonce} if files else {"nonce": nonce}
        if view is not None:
            kwargs["view"] = view
        if not self.reply.dm and self.reply.channel_id is not None:
            channel = self.bot.get_partial_messageable(self.reply.channel_id)
            try:
                return await channel.send(self._mention(text), allowed_mentions=self._allowed(), **kwargs)
            except (discord.Forbidden, discord.NotFound) as exc:
                log.warning("job %s: cannot post in channel %s (%s); sending a direct message", self.job_id,
                            self.reply.channel_id, exc.code, extra=self._fields)
                for file in files or []:
                    file.reset()
        user = self.bot.get_user(self.reply.user_id) or await self.bot.fetch_user(self.reply.user_id)
        message = await user.send(text, **kwargs)
        self.reply.dm = True
        self.reply.channel_id = message.channel.id
        return message

    async def _move_to_channel(self, text: str, *, files: list[discord.File] | None,
                               view: discord.ui.View | None) -> None:
        nonce = message_nonce(self.job_id, MessageRole.PROGRESS, self.reply.channel_posts)
        message = await self._post(text, files=files, view=view, nonce=nonce)
        self.reply.channel_message_id = message.id
        self.reply.channel_posts += 1  # a message posted after this one (this one deleted) is a new one
        await self.bot.store.save_reply(self.reply)
        log.info("job %s: updates continue in %s message %s", self.job_id, "a direct" if self.reply.dm else
                 "a channel", message.id, extra=self._fields)
        if self._token_usable_for_note():
            with contextlib.suppress(discord.HTTPException):
                await self._webhook().edit_message(self.reply.message_id, content=render.moved_text(self.job_id),
                                                   view=None)

    def _token_usable_for_note(self) -> bool:
        return time.time() < self.reply.token_deadline + 30

    # -- delivery ------------------------------------------------------------------------------------------------------
    async def _deliver(self, job: Job) -> None:
        if job.delivered_at is not None:
            log.info("job %s was delivered before; not again", job.id, extra=self._fields)
            await self.bot.store.forget_reply(job.id)
            return
        await self.bot.store.tally(job.id, self.reply.guild_id, self.reply.user_id, job.state, job.created_at,
                                   job.finished_at or time.time(), job.run_seconds)
        summary = self._summary(job)
        reason = job.failure or "unknown error"
        if job.state == JobState.DONE:
            await self._deliver_result(job, summary)
        elif job.state == JobState.CANCELLED:
            by = job.cancel_requested_by
            await self._final(render.cancelled_text(job.id, summary, by), files=None, view=None)
        else:
            await self._final(render.failed_text(job.id, summary, reason), files=None, view=None)
        await self.bot.queue.mark_delivered(job.id)
        if job.state == JobState.FAILED:  # after the record: a follow-up takes no nonce, so at most once
            await self._tell_requester(render.failed_privately(job.id, reason))
        await self.bot.store.forget_reply(job.id)
        log.info("job %s: outcome (%s) delivered", job.id, job.state.value,
                 extra=job_fields(job, guild_id=self.reply.guild_id))

    async def _tell_requester(self, text: str) -> None:
        """An ephemeral follow-up only the requester sees (while the interaction token lasts; else the reply,
        already edited, is all there is)."""
        if time.time() >= self.reply.token_deadline:
            return
        try:
            await self._webhook().send(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.info("job %s: no private follow-up (%s %s)", self.job_id, exc.status, exc.code, extra=self._fields)

    async def _deliver_result(self, job: Job, summary: str) -> None:
        result = dict(job.result or {})
        data = self.bot.queue.result_bytes(job)
        fmt = str(result.get("format", "png"))
        size_note = render.file_note(fmt, len(data))
        notes = [str(n) for n in job.meta.get("notes") or []]
        result["notes"] = notes + list(result.get("notes") or [])
        elapsed = (job.finished_at or time.time()) - (job.started_at or job.created_at)
        animated = int(result.get("frames") or 1) > 1
        view = job_view(job.id, running=False, upscale=not animated, timelapse=bool(result.get("timelapse")))
        for _ in range(DELIVERY_TRIES):
            text = render.done_text(job.id, summary, result, size_note=size_note, elapsed=elapsed)
            file = discord.File(io.BytesIO(data), filename=f"nst-{job.id}.{extension_for(fmt)}")
            try:
                await self._final(text, files=[file], view=view)
                return
            except discord.HTTPException as exc:
                if exc.code != UPLOAD_TOO_LARGE:
                    raise
                data, fmt, note = await self._shrink(data, len(data) // 2, animated=animated)
                size_note = note
                log.warning("job %s: result refused as too large; %s", job.id, note, extra=self._fields)
        raise RuntimeError(f"job {job.id}: the result could not be uploaded")

    async def _shrink(self, data: bytes, limit: int, *, animated: bool) -> tuple[bytes, str, str]:
        """The result re-encoded in at most `limit` bytes: (bytes, format, note)."""
        def work() -> tuple[bytes, str, str]:
            if animated:
                return fit_animation(data, limit)
            with Image.open(io.BytesIO(data)) as image:
                fitted = encode_to_fit(image, limit)
            return fitted.data, fitted.format, fitted.note

        try:
            return await asyncio.to_thread(work)
        except NSTError as exc:
            raise RuntimeError(str(exc)) from None

    async def _final(self, text: str, *, files: list[discord.File] | None, view: discord.ui.View | None) -> None:
        """The outcome: in the interaction reply while its token works, else a new message that notifies."""
        if self._token_usable():
            try:
                await self._webhook().edit_message(self.reply.message_id, content=text, view=view,
                                                   attachments=files or [])
                return
            except discord.HTTPException as exc:
                if exc.code not in TOKEN_GONE_CODES and exc.code != UNKNOWN_MESSAGE:
                    raise
                log.info("job %s: the interaction token cannot edit any more (%s); delivering in the channel",
                         self.job_id, exc.code, extra=self._fields)
                for file in files or []:
                    file.reset()
        progress_message = self.reply.channel_message_id
        await self._post(text, files=files, view=view, nonce=message_nonce(self.job_id, MessageRole.OUTCOME))
        if progress_message is not None and not self.reply.dm:
            with contextlib.suppress(discord.HTTPException):
                await self.bot.get_partial_messageable(self.reply.channel_id or 0).get_partial_message(
                    progress_message).delete()
