"""`nst-bot` (also `python -m bot`): run the Discord bot, register its commands, or check the configuration.

    nst-bot [--config PATH] [run]     run the bot (the default)
    nst-bot [--config PATH] sync      register the slash commands now and exit
    nst-bot [--config PATH] check     validate the configuration and the token's presence, touch nothing

A configuration problem or a missing token stops it with one line on stderr (exit status 2) that says what to do.
SIGTERM or Ctrl-C stops the bot gracefully (it drains: see `bot.drain`) with exit status 0; a second signal stops it
at once, with 128 + the signal's number (143, 130).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import discord

from bot.app import create_bot, run_bot
from bot.config import BotConfig, ConfigError, load_config, read_token
from bot.logs import setup_logging
from bot.sync import sync_commands
from nst_jobs.work import WorkFunction, perform

__all__ = ["main"]

log = logging.getLogger("bot")

DEFAULT_CONFIG = Path("config.toml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-bot", description="Neural style transfer bot for Discord.")
    parser.add_argument("--config", type=Path, default=None, metavar="PATH",
                        help=f"TOML configuration (default: {DEFAULT_CONFIG} if it exists, else built-in defaults; "
                             "see config.example.toml)")
    parser.add_argument("action", nargs="?", default="run", choices=("run", "sync", "check"),
                        help="run the bot (default), sync the slash commands and exit, or check the configuration")
    return parser


def _load(path: Path | None) -> tuple[BotConfig, str]:
    if path is None:
        path = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None
    config = load_config(path)
    return config, str(path) if path is not None else "built-in defaults (no config.toml)"


async def _sync_only(config: BotConfig, token: str) -> int:
    bot = create_bot(config, serve=False)
    async with bot:
        await bot.login(token)  # REST only: no gateway, no workers
        await sync_commands(bot, force=True)
    return 0


def main(argv: Sequence[str] | None = None, *, work: WorkFunction = perform) -> int:
    """Run `nst-bot`; returns the exit status. `work`: the embedded executor's job function (`JobQueue`'s)."""
    args = _parser().parse_args(argv)
    try:
        config, source = _load(args.config)
        token = read_token(config)
    except ConfigError as exc:
        print(f"nst-bot: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level, token, config.logging.format)
    if args.action == "check":
        print(f"configuration OK ({source}); token from "
              f"{'DISCORD_TOKEN' if os.environ.get('DISCORD_TOKEN', '').strip() else 'a token file'}; data in "
              f"{config.queue.data_dir}; backend {config.queue.backend}")
        return 0
    log.info("configuration: %s", source)
    try:
        if args.action == "sync":
            return asyncio.run(_sync_only(config, token))
        return asyncio.run(run_bot(config, token, work=work))
    except discord.LoginFailure:
        print("nst-bot: Discord refused the token (401); reset it in the Developer Portal (Bot > Reset Token) and "
              "set DISCORD_TOKEN again", file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:  # pragma: no cover - the bot asks for none
        print("nst-bot: Discord asks for privileged intents, which this bot does not use", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, discord.HTTPException) as exc:
        log.error("stopped: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
