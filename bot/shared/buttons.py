"""The buttons under a job's reply: Cancel while it waits or runs; Re-roll, More style, Less style on the result.

Each is a `discord.ui.DynamicItem` whose custom_id carries the action and the job id (`nst:<action>:<job id>`), so
a click is understood by whichever bot process receives it, including one started after the reply was sent: the
state behind a button is the job table, not memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord

from bot.shared.refusals import apologise

if TYPE_CHECKING:
    from bot.app import StyleBot

__all__ = ["ACTIONS", "JobButton", "job_view"]

#: action -> (label, emoji, style)
ACTIONS: dict[str, tuple[str, str, discord.ButtonStyle]] = {
    "cancel": ("Cancel", "🛑", discord.ButtonStyle.danger),
    "reroll": ("Re-roll", "🎲", discord.ButtonStyle.secondary),
    "more": ("More style", "➕", discord.ButtonStyle.secondary),
    "less": ("Less style", "➖", discord.ButtonStyle.secondary),
}


TEMPLATE = r"nst:(?P<action>[a-z]+):(?P<job_id>[0-9a-f]{6,32})"


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    def __init__(self, action: str, job_id: str) -> None:
        label, emoji, style = ACTIONS[action]
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=f"nst:{action}:{job_id}"))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: Any, /) -> JobButton:
        action = match["action"]
        if action not in ACTIONS:
            raise ValueError(f"unknown button action {action!r}")
        return cls(action, match["job_id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: StyleBot = interaction.client
        try:
            await bot.on_job_button(interaction, self.action, self.job_id)
        except Exception as exc:
            await apologise(interaction, f"button {self.action} of job {self.job_id}", exc)


def job_view(job_id: str, *, running: bool) -> discord.ui.View:
    """Cancel while the job waits or runs; the three follow-ups once it is done. Never times out (no state)."""
    view = discord.ui.View(timeout=None)
    for action in (("cancel",) if running else ("reroll", "more", "less")):
        view.add_item(JobButton(action, job_id))
    return view
