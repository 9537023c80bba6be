"""Point discord.py at another Discord endpoint (a proxy, or the fake Discord of the tests).

discord.py reads its REST base from `discord.http.Route.BASE` (interaction callbacks and webhooks included) and its
gateway from `DiscordWebSocket.DEFAULT_GATEWAY`; both are class attributes, so this is process-wide and done once
at start-up, before login. `restore()` puts the defaults back (tests start several bots in one process).
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

from bot.config import DiscordSettings

__all__ = ["apply_endpoints", "restore_endpoints"]

_DEFAULT_API = discord.http.Route.BASE
_DEFAULT_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


def apply_endpoints(settings: DiscordSettings) -> None:
    """Use `settings.api_base` / `settings.gateway_url` when set, Discord's own endpoints otherwise."""
    discord.http.Route.BASE = settings.api_base or _DEFAULT_API
    # discord.py calls .with_query() on it: it must be a yarl.URL, not a str.
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = (
        yarl.URL(settings.gateway_url) if settings.gateway_url else _DEFAULT_GATEWAY
    )


def restore_endpoints() -> None:
    discord.http.Route.BASE = _DEFAULT_API
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = _DEFAULT_GATEWAY
