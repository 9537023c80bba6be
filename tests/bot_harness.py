"""Runs the real bot (bot.app.create_bot, its real setup_hook, queue and thread executor) against the fake Discord.

`BotEnv` starts a `FakeDiscord`, writes the bot's configuration with the endpoints pointed at it, starts the bot
with the fake's token and waits until it is connected; helpers send commands and wait for what the bot does. Any
ERROR logged anywhere (a task exception in discord.py, a reporter failure) fails the test in the fixture.

The bot's workers run the real engine through a gate (`env.gate`, tests/gates.py), open unless a test closes it: a
test that acts on a running job closes the gate first, so the job waits, visibly running, until the test opens it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio
from fake_discord import EPHEMERAL, ErrorRecorder, FakeDiscord
from gates import Gate
from PIL import Image

from bot.app import StyleBot, create_bot
from bot.config import BotConfig
from bot.endpoints import restore_endpoints


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class BotEnv:
    fake: FakeDiscord
    data_dir: Path
    overrides: dict[str, Any]
    errors: ErrorRecorder
    gate: Gate
    bot: StyleBot | None = None
    task: asyncio.Task[None] | None = None
    logs: list[logging.LogRecord] = field(default_factory=list)

    def config(self) -> BotConfig:
        base = {
            "discord": {"api_base": self.fake.api_base, "gateway_url": self.fake.gateway_url,
                        "cdn_hosts": [f"127.0.0.1:{self.fake.port}"]},
            "limits": {"cooldown_seconds": 0, "default_preset": "fast"},
            "progress": {"edit_interval_seconds": 0.5, "preview_every": 2},
            "health": {"port": 0},
            "queue": {"data_dir": str(self.data_dir), "executor": "thread", "devices": ["cpu"],
                      "preview_interval_seconds": 0.3, "heartbeat_seconds": 1.0, "lease_seconds": 5.0},
        }
        return BotConfig.from_mapping(deep_merge(base, self.overrides), source="test config")

    async def start(self) -> StyleBot:
        self.bot = create_bot(self.config(), guild_ready_timeout=0.1, work=self.gate.work())
        self.task = asyncio.create_task(self.bot.start(self.fake.token))
        deadline = time.monotonic() + 60
        while not self.bot.is_ready():
            if self.task.done():
                self.task.result()  # start-up failed: raise why
                raise AssertionError("the bot stopped during start-up")
            assert time.monotonic() < deadline, "the bot did not become ready within 60 s"
            await asyncio.sleep(0.02)
        return self.bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
        self.bot, self.task = None, None

    async def restart(self) -> StyleBot:
        await self.stop()
        return await self.start()

    # -- sending -------------------------------------------------------------------------------------------------
    def attachment(self, data: bytes, filename: str = "photo.png", content_type: str | None = "image/png",
                   **meta: Any) -> dict[str, Any]:
        return add_image(self.fake, data, filename, content_type, **meta)

    async def stylize(self, content: dict[str, Any], style: dict[str, Any] | None = None,
                      **kwargs: Any) -> dict[str, Any]:
        """`send_stylize` on this env's fake (style2, user, attachment_size_limit, channel_id, options)."""
        return await send_stylize(self.fake, content, style, **kwargs)

    # -- waiting -------------------------------------------------------------------------------------------------
    async def response(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.fake.wait_for_response(payload, timeout=10)

    async def ephemeral_text(self, payload: dict[str, Any], timeout: float = 10) -> str:
        """The ephemeral message the bot answered with: the callback itself, or a follow-up after a deferral."""
        deadline = time.monotonic() + timeout
        inter = self.fake.interactions[payload["token"]]
        while time.monotonic() < deadline:
            if inter.response and inter.response["type"] == 4:
                data = inter.response["data"]
                assert data.get("flags", 0) & EPHEMERAL, f"not ephemeral: {data}"
                return str(data["content"])
            for rec in self.fake.requests:
                if rec.method == "POST" and rec.path.startswith(f"/webhooks/{self.fake.app_id}/{payload['token']}"):
                    body = rec.payload or {}
                    if body.get("flags", 0) & EPHEMERAL:
                        return str(body["content"])
            await asyncio.sleep(0.02)
        raise AssertionError(f"no ephemeral answer to {payload['data'].get('name')}; response {inter.response}")

    def original_id(self, payload: dict[str, Any]) -> str:
        original = self.fake.interactions[payload["token"]].original_id
        assert original is not None, "the bot did not respond to the interaction"
        return original

    async def wait_message(self, message_id: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        return await wait_message(self.fake, message_id, predicate, timeout)

    async def wait_final(self, payload: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        await self.response(payload)
        return await self.wait_message(self.original_id(payload), is_final, timeout)

    def attachment_bytes(self, message: dict[str, Any], index: int = 0) -> bytes:
        url = message["attachments"][index]["url"]
        key = url.split("/cdn/attachments/", 1)[1]
        return self.fake.cdn[key][0]


def add_image(fake: FakeDiscord, data: bytes, filename: str = "photo.png", content_type: str | None = "image/png",
              **meta: Any) -> dict[str, Any]:
    """An attachment on the fake's CDN, with the width and height Discord would give an image."""
    if "width" not in meta and content_type and content_type.startswith("image/"):
        with Image.open(io.BytesIO(data)) as img:
            meta = {"width": img.width, "height": img.height}
    return fake.add_attachment(data, filename, content_type, **meta)  # type: ignore[arg-type]


async def send_stylize(fake: FakeDiscord, content: dict[str, Any], style: dict[str, Any] | None = None, *,
                       style2: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
                       attachment_size_limit: int | None = None, channel_id: str | None = None,
                       **options: Any) -> dict[str, Any]:
    """A member's /stylize with these attachments and options; the interaction payload."""
    opts = [{"name": "content", "type": 11, "value": content["id"]}]
    atts = [content]
    for name, att in (("style", style), ("style2", style2)):
        if att is not None:
            opts.append({"name": name, "type": 11, "value": att["id"]})
            atts.append(att)
    kinds = {str: 3, int: 4, bool: 5, float: 10}
    opts += [{"name": k, "type": kinds[type(v)], "value": v} for k, v in options.items()]
    extra = {} if attachment_size_limit is None else {"attachment_size_limit": attachment_size_limit}
    return await fake.send_interaction("stylize", opts, attachments=atts, user=user, channel_id=channel_id, **extra)


async def wait_message(fake: FakeDiscord, message_id: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
    """Message `message_id` once `predicate` holds for its current version."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = fake.messages.get(message_id)
        if msg is not None and predicate(msg):
            return msg
        await asyncio.sleep(0.02)
    raise AssertionError(f"message {message_id} never matched; now {fake.messages.get(message_id)}")


def is_final(msg: dict[str, Any]) -> bool:
    return any(mark in msg.get("content", "") for mark in ("✅", "❌", "🛑"))


def custom_ids(msg: dict[str, Any]) -> list[str]:
    out = []
    for row in msg.get("components") or []:
        for comp in row.get("components") or []:
            if "custom_id" in comp:
                out.append(comp["custom_id"])
    return out


@pytest_asyncio.fixture
async def bot_env_factory(tmp_path: Path) -> AsyncIterator[Any]:
    """`await make(**config_overrides)` -> a started BotEnv; everything is stopped and checked afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread executor shares this process: one torch thread keeps tiny jobs steady
    errors = ErrorRecorder()
    root = logging.getLogger()
    root.addHandler(errors)
    envs: list[BotEnv] = []
    fakes: list[FakeDiscord] = []

    async def make(**overrides: Any) -> BotEnv:
        fake = FakeDiscord()
        await fake.start()
        fakes.append(fake)
        env = BotEnv(fake, tmp_path / f"data{len(envs)}", overrides, errors, Gate(tmp_path / f"gate{len(envs)}"))
        envs.append(env)
        await env.start()
        return env

    try:
        yield make
    finally:
        try:
            for env in envs:
                env.gate.open()  # nothing stays held (a held job also stops on the executor's cancel at close)
                await env.stop()
            for fake in fakes:
                await fake.close()
        finally:
            root.removeHandler(errors)
            restore_endpoints()
            torch.set_num_threads(before)
    assert not errors.records, "errors were logged:\n" + "\n".join(
        f"{r.name}: {r.getMessage()} {r.exc_info[1] if r.exc_info else ''}" for r in errors.records)
