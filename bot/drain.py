"""Stopping without losing work: on SIGTERM (`docker stop`) or Ctrl-C the bot drains before it closes.

Why it exists: a restart (a new image, a config edit) should cost a member nothing. Draining means: no new job is
taken (whoever asks is told the bot is restarting and to try again in a minute, `JobStarter.precheck`), no waiting
job starts (their replies say they stay queued through the restart), and the jobs running here have up to
`queue.drain_seconds` to finish and be delivered. Then the bot closes as it always does: a job still running is
stopped and goes back in the queue, its start not counted (`JobQueue.close`; on Celery it goes on on its worker and
is followed again after the restart), and its reply says it starts again after the restart. A second signal ends the
drain at once (no last edits). With nothing running the drain takes no time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import StyleBot

__all__ = ["Drain"]

log = logging.getLogger(__name__)

#: How often the drain looks whether the running jobs have ended and been delivered.
POLL_SECONDS = 0.1
#: The most the restart notes in the replies may take (Discord slow or rate limiting): the drain goes on without.
NOTE_TIMEOUT = 10.0


class Drain:
    """One bot's drain: `run()` once, from its close; `hurry()` (a second signal) ends it at once."""

    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        self.started = False
        self._hurry = asyncio.Event()

    def hurry(self) -> None:
        self._hurry.set()

    async def run(self) -> None:
        bot = self.bot
        self.started = True
        bot.queue.pause()
        seconds = bot.config.queue.drain_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        await self._note_restart(stopped=False)
        busy = await self._busy()
        if busy:
            log.info("draining: no new jobs; waiting up to %g s for %d running job(s) to finish and be delivered "
                     "(%s)", seconds, len(busy), ", ".join(busy))
        while busy and not self._hurry.is_set() and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(POLL_SECONDS, max(0.0, deadline - loop.time()))):
                    await self._hurry.wait()
            busy = await self._busy()
        if not busy:
            log.info("drained: nothing is running; stopping")
            return
        why = "a second signal" if self._hurry.is_set() else f"{seconds:g} s passed"
        log.warning("drain over (%s): stopping %d job(s) still running (%s); they start again after the restart",
                    why, len(busy), ", ".join(busy))
        if not self._hurry.is_set():
            await self._note_restart(stopped=True)

    async def _busy(self) -> list[str]:
        """Jobs this process runs, and finished ones whose outcome a reply of ours has not delivered yet."""
        queue = self.bot.queue
        undelivered = {job.id for job in await queue.undelivered()} & set(self.bot.reporters)
        return sorted(set(queue.running_here()) | undelivered)

    async def _note_restart(self, *, stopped: bool) -> None:
        reporters = list(self.bot.reporters.values())
        if not reporters:
            return
        notes = asyncio.gather(*(r.note_restart(stopped=stopped) for r in reporters), return_exceptions=True)
        try:
            async with asyncio.timeout(NOTE_TIMEOUT):
                for reporter, outcome in zip(reporters, await notes, strict=True):
                    if isinstance(outcome, Exception):
                        log.warning("job %s: the restart note failed: %s", reporter.job_id, outcome)
        except TimeoutError:
            log.warning("the restart notes took over %g s; going on without them", NOTE_TIMEOUT)
