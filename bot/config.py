"""The bot's settings: one TOML file (`config.example.toml` documents every key) plus the token from the environment.

Validated with pydantic at start-up, so an unknown key or a bad value stops the bot with one line that names the key
and the reason (`ConfigError`), before it connects anywhere. The token is never part of the file model: it comes
from `DISCORD_TOKEN`, or from a file (`DISCORD_TOKEN_FILE` or `discord.token_file`, e.g. a Docker secret).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nst_core.clips import DEFAULT_CLIP_LIMITS
from nst_core.images import DEFAULT_MAX_PIXELS
from nst_jobs.config import QueueConfig
from nst_jobs.log_format import LogFormat

__all__ = [
    "DEFAULT_CDN_HOSTS",
    "MAX_CLIP_FRAMES",
    "MAX_CLIP_SECONDS",
    "BotConfig",
    "ConfigError",
    "DiscordSettings",
    "HealthSettings",
    "LimitSettings",
    "ProgressSettings",
    "load_config",
    "read_token",
]

DEFAULT_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
MIB = 1024 * 1024
#: The most an operator may allow for animations (a server's admins may only lower what the operator allows).
MAX_CLIP_FRAMES = 10_000
MAX_CLIP_SECONDS = 3600.0


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line naming the key (or variable) and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscordSettings(_Section):
    """How to reach Discord. The token is not here: see `read_token`."""

    token_file: Path | None = None  # a file holding the token (a Docker secret); DISCORD_TOKEN wins over it
    api_base: str | None = None  # another REST endpoint (tests, proxies); env DISCORD_API_BASE wins
    gateway_url: str | None = None  # another gateway websocket URL; env DISCORD_GATEWAY_URL wins
    cdn_hosts: tuple[str, ...] = DEFAULT_CDN_HOSTS  # attachments are downloaded only from these hosts (host[:port])
    dev_guild_id: int | None = Field(default=None, gt=0)  # sync commands to this guild only (instant, for testing)
    sync_commands: Literal["auto", "always", "never"] = "auto"  # auto: only when the command set changed

    @field_validator("api_base", "gateway_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError(f"{value!r} is not a URL (http(s):// or ws(s)://)")
        return value.rstrip("/")

    @field_validator("cdn_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one host is needed, or no attachment can be downloaded")
        for host in value:
            if not host or "/" in host or " " in host:
                raise ValueError(f"{host!r} is not a host name (write cdn.discordapp.com, without https://)")
        return tuple(host.lower() for host in value)


class LimitSettings(_Section):
    """Bot-wide limits. Server admins can lower the size, iteration, per-user, animation and upscale limits for
    their server."""

    max_attachment_bytes: int = Field(default=25 * MIB, ge=1024, le=500 * MIB)  # per input image
    max_input_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=10_000, le=178_956_970)  # width x height
    max_size: int = Field(default=1024, ge=64, le=4096)  # largest output long edge a user may ask for
    max_iterations: int = Field(default=1000, ge=1, le=10_000)
    default_preset: Literal["fast", "balanced", "best"] = "balanced"
    output_format: Literal["png", "jpeg", "webp"] = "png"  # preferred; re-encoded when over the upload limit
    cooldown_seconds: float = Field(default=10.0, ge=0, le=3600)  # between two /stylize of one user
    max_saved_styles: int = Field(default=100, ge=1, le=1000)  # per server
    # moving pictures (an animated GIF / WebP / PNG or a short video as the content); more is refused, not cut
    max_clip_frames: int = Field(default=DEFAULT_CLIP_LIMITS.max_frames, ge=2, le=MAX_CLIP_FRAMES)
    max_clip_seconds: float = Field(default=DEFAULT_CLIP_LIMITS.max_seconds, gt=0, le=MAX_CLIP_SECONDS)
    max_clip_size: int = Field(default=256, ge=32, le=4096)  # an animation's output long edge; larger is lowered
    timelapse_frames: int = Field(default=24, ge=0, le=100)  # a still's Timelapse button (frames kept); 0: none
    max_upscale_size: int = Field(default=2048, ge=64, le=4096)  # Upscale x2: its result's long edge, at most


class ProgressSettings(_Section):
    """How the bot reports a job's progress in its reply."""

    edit_interval_seconds: float = Field(default=3.0, ge=0.5, le=60)  # at most one edit per this many seconds
    preview_every: int = Field(default=3, ge=0, le=100)  # a preview image every N progress edits; 0: never
    token_fallback_seconds: float = Field(default=840.0, ge=1, le=900)  # then continue in a channel message


class HealthSettings(_Section):
    host: str = "127.0.0.1"  # the Docker healthcheck runs inside the container: loopback is enough
    port: int = Field(default=8080, ge=0, le=65535)  # 0: no health endpoint


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: LogFormat = LogFormat.TEXT  # text, or JSON lines (time, level, logger, message, job_id ...)


class BotConfig(_Section):
    """The whole file. Every section is optional; the defaults run the bot on one machine."""

    discord: DiscordSettings = DiscordSettings()
    limits: LimitSettings = LimitSettings()
    progress: ProgressSettings = ProgressSettings()
    health: HealthSettings = HealthSettings()
    logging: LoggingSettings = LoggingSettings()
    queue: QueueConfig = QueueConfig()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> BotConfig:
        """Validate plain data (a parsed TOML file); ConfigError with one line per the first problem."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_first_problem(exc)}") from None

    def with_environment(self, environ: Mapping[str, str]) -> BotConfig:
        """Apply DISCORD_API_BASE / DISCORD_GATEWAY_URL from the environment on top of the file."""
        discord = self.discord
        for var, key in (("DISCORD_API_BASE", "api_base"), ("DISCORD_GATEWAY_URL", "gateway_url")):
            if not environ.get(var):
                continue
            try:
                discord = DiscordSettings.model_validate({**discord.model_dump(), key: environ[var]})
            except ValidationError as exc:
                problem = _first_problem(exc).removeprefix(f"{key}: ")
                raise ConfigError(f"environment variable {var}: {problem}") from None
        return self if discord is self.discord else self.model_copy(update={"discord": discord})


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"])
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "unknown key (see config.example.toml for the keys there are)"
    message = message.removeprefix("Value error, ")
    return f"{key}: {message}" if key else message


def load_config(path: Path | None, environ: Mapping[str, str] = os.environ) -> BotConfig:
    """Read and validate the TOML file at `path` (None: defaults only), then apply the environment."""
    if path is None:
        return BotConfig().with_environment(environ)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (copy config.example.toml to start one)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    return BotConfig.from_mapping(data, source=str(path)).with_environment(environ)


TOKEN_HELP = ("set DISCORD_TOKEN to your bot's token (Discord Developer Portal > your application > Bot > Reset "
              "Token), or put it in a file named by DISCORD_TOKEN_FILE or discord.token_file; see the README, "
              "'Discord application set-up'")


def read_token(config: BotConfig, environ: Mapping[str, str] = os.environ) -> str:
    """The bot token: DISCORD_TOKEN, else the file named by DISCORD_TOKEN_FILE, else discord.token_file."""
    token = environ.get("DISCORD_TOKEN", "").strip()
    source = "DISCORD_TOKEN"
    if not token:
        file = environ.get("DISCORD_TOKEN_FILE") or config.discord.token_file
        if not file:
            raise ConfigError(f"no Discord bot token: {TOKEN_HELP}")
        source = f"token file {file}"
        try:
            token = Path(file).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file; {TOKEN_HELP}") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot be read ({exc.strerror})") from None
    if not token:
        raise ConfigError(f"{source} is empty; {TOKEN_HELP}")
    if any(ch.isspace() for ch in token) or token.lower().startswith("bot "):
        raise ConfigError(f"{source} does not look like a bot token (it holds spaces; give the token alone, "
                          "without 'Bot ')")
    return token
