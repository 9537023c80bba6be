"""The buttons under a job's reply: Cancel while it waits or runs; Re-roll, More style, Less style on the result,
Upscale x2 on a still (the delivered picture again at twice the size), and Timelapse on a still whose job recorded
one (how the picture took shape, as a GIF). Five at most: one row of Discord's.

A button's custom_id carries the action and the job id (`nst:<action>:<job id>`), so a click is understood by
whichever bot process receives it, including one started after the reply was sent: the state behind a button is
the job table, not memory. This module draws them (the reporter puts them under each reply); the `results` cog
understands a click (its `discord.ui.DynamicItem` matches `TEMPLATE`).
"""

from __future__ import annotations

from enum import StrEnum

import discord

__all__ = ["LOOKS", "TEMPLATE", "ButtonAction", "job_button", "job_view"]


class ButtonAction(StrEnum):
    CANCEL = "cancel"
    REROLL = "reroll"
    MORE = "more"
    LESS = "less"
    UPSCALE = "upscale"
    TIMELAPSE = "timelapse"


#: action -> (label, emoji, style)
LOOKS: dict[ButtonAction, tuple[str, str, discord.ButtonStyle]] = {
    ButtonAction.CANCEL: ("Cancel", "🛑", discord.ButtonStyle.danger),
    ButtonAction.REROLL: ("Re-roll", "🎲", discord.ButtonStyle.secondary),
    ButtonAction.MORE: ("More style", "➕", discord.ButtonStyle.secondary),
    ButtonAction.LESS: ("Less style", "➖", discord.ButtonStyle.secondary),
    ButtonAction.UPSCALE: ("Upscale x2", "🔍", discord.ButtonStyle.secondary),
    ButtonAction.TIMELAPSE: ("Timelapse", "⏱️", discord.ButtonStyle.secondary),
}

TEMPLATE = r"nst:(?P<action>[a-z]+):(?P<job_id>[0-9a-f]{6,32})"


def job_button(action: ButtonAction, job_id: str) -> discord.ui.Button[discord.ui.View]:
    label, emoji, style = LOOKS[action]
    return discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=f"nst:{action.value}:{job_id}")


def job_view(job_id: str, *, running: bool, upscale: bool = False, timelapse: bool = False) -> discord.ui.View:
    """Cancel while the job waits or runs; the three follow-ups once it is done, Upscale x2 for a still, and
    Timelapse when the result has one. Never times out (no state)."""
    view = discord.ui.View(timeout=None)
    actions = (ButtonAction.CANCEL,) if running else (ButtonAction.REROLL, ButtonAction.MORE, ButtonAction.LESS)
    if upscale and not running:
        actions += (ButtonAction.UPSCALE,)
    if timelapse and not running:
        actions += (ButtonAction.TIMELAPSE,)
    for action in actions:
        view.add_item(job_button(action, job_id))
    return view
