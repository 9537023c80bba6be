"""The fake Discord server (tests/fake_discord.py) works with the real discord.py client."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import discord
import pytest
import pytest_asyncio
from discord import app_commands
from fake_discord import FakeDiscord, running_fake

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


class ErrorRecorder(logging.Handler):
    """Keeps every ERROR record discord.py logs (task exceptions, command errors, gateway failures)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TinyClient(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)


@dataclass
class Env:
    fake: FakeDiscord
    client: TinyClient
    errors: ErrorRecorder
    seen: dict[str, Any] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    errors = ErrorRecorder()
    logger = logging.getLogger("discord")
    logger.addHandler(errors)
    try:
        async with running_fake() as fake:
            client = TinyClient()
            task = asyncio.create_task(client.start(fake.token))
            try:
                await fake.wait_ready()
                await asyncio.wait_for(client.wait_until_ready(), 10)
                yield Env(fake, client, errors)
            finally:
                await client.close()
                await asyncio.wait_for(task, 5)
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() + "\n" + (str(r.exc_info) or "") for r in errors.records]


def add_ping(env: Env, body: Callable[[discord.Interaction, discord.Attachment], Awaitable[None]]) -> None:
    @env.client.tree.command(name="ping", description="ping with an image")
    async def ping(interaction: discord.Interaction, image: discord.Attachment) -> None:
        try:
            await body(interaction, image)
        finally:
            env.done.set()


async def send_ping(env: Env, data: bytes, **kwargs: Any) -> dict[str, Any]:
    att = env.fake.add_attachment(data, "cat.png", "image/png", width=128, height=128)
    await env.fake.send_interaction(
        "ping", [{"name": "image", "type": 11, "value": att["id"]}], attachments=[att], **kwargs
    )
    return att


async def test_login_ready_guild_visible(env: Env) -> None:
    guild = env.client.get_guild(int(env.fake.guild_id))
    assert guild is not None and guild.name == "Test Guild"
    channel = guild.get_channel(int(env.fake.channel_id))
    assert isinstance(channel, discord.TextChannel) and channel.name == "general"
    assert env.client.user is not None and env.client.user.id == int(env.fake.app_id)
    assert env.client.application_id == int(env.fake.app_id)
    identify = await env.fake.wait_for_gateway(2)
    assert identify.d["token"] == env.fake.token
    assert identify.query["v"] == "10" and identify.query["encoding"] == "json"
    assert identify.query["compress"] in ("zlib-stream", "zstd-stream")  # asked for, yet plain text frames work
    await env.fake.wait_for_gateway(1)  # heartbeat sent (and answered with op 11)


async def test_command_errors_are_caught_by_the_recorder(env: Env, content_bytes: bytes) -> None:
    async def body(interaction: discord.Interaction, image: discord.Attachment) -> None:
        raise RuntimeError("boom")

    add_ping(env, body)
    await send_ping(env, content_bytes)
    await asyncio.wait_for(env.done.wait(), 5)
    for _ in range(50):
        if env.errors.records:
            break
        await asyncio.sleep(0.02)
    assert env.errors.records and "boom" in repr(env.errors.records[0].exc_info)
    env.errors.records.clear()  # expected here; any other test with a logged error fails in the fixture


async def test_command_sync_is_stored(env: Env) -> None:
    add_ping(env, lambda i, a: asyncio.sleep(0))
    synced = await env.client.tree.sync()
    assert [c.name for c in synced] == ["ping"]
    put = await env.fake.wait_for_request("PUT", r"/applications/\d+/commands$")
    assert put.json[0]["options"][0]["type"] == 11
    fetched = await env.client.tree.fetch_commands()
    assert fetched[0].id == synced[0].id


async def test_slash_command_with_attachment_defer_and_edit(env: Env, content_bytes: bytes) -> None:
    async def body(interaction: discord.Interaction, image: discord.Attachment) -> None:
        env.seen["image"] = image
        env.seen["bytes"] = await image.read()
        await interaction.response.defer()
        out = discord.File(io.BytesIO(b"result-bytes" * 100), filename="out.png")
        msg = await interaction.edit_original_response(content="pong", attachments=[out])
        env.seen["message"] = msg

    add_ping(env, body)
    att = await send_ping(env, content_bytes)
    await asyncio.wait_for(env.done.wait(), 5)

    image = env.seen["image"]
    assert isinstance(image, discord.Attachment)
    assert image.size == len(content_bytes) and image.filename == "cat.png" and image.id == int(att["id"])
    assert env.seen["bytes"] == content_bytes
    cdn = await env.fake.wait_for_request("GET", rf"^/cdn/attachments/.*/{att['id']}/cat.png$")
    assert cdn.status == 200

    callback = await env.fake.wait_for_request("POST", r"/interactions/\d+/[^/]+/callback$")
    assert callback.json["type"] == 5 and callback.query.get("with_response") == "1"
    edit = await env.fake.wait_for_request("PATCH", r"/webhooks/\d+/[^/]+/messages/@original$")
    assert edit.payload["content"] == "pong"
    assert [(f.field, f.filename, f.data) for f in edit.files] == [("files[0]", "out.png", b"result-bytes" * 100)]
    assert env.seen["message"].content == "pong"
    assert env.seen["message"].attachments[0].filename == "out.png"


async def test_late_acknowledgement_is_unknown_interaction(env: Env, content_bytes: bytes) -> None:
    release = asyncio.Event()

    async def body(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await release.wait()
        try:
            await interaction.response.defer()
        except discord.NotFound as e:
            env.seen["error"] = e

    add_ping(env, body)
    await send_ping(env, content_bytes)
    await asyncio.sleep(0.05)
    env.fake.advance_clock(3.5)
    release.set()
    await asyncio.wait_for(env.done.wait(), 5)
    assert env.seen["error"].code == 10062


async def test_rate_limited_edit_is_retried(env: Env, content_bytes: bytes) -> None:
    env.fake.rate_limit_next("PATCH", r"/messages/@original$", retry_after=0.2)

    async def body(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await interaction.response.defer()
        f = discord.File(io.BytesIO(b"abc"), filename="out.png")
        env.seen["message"] = await interaction.edit_original_response(content="pong", attachments=[f])

    add_ping(env, body)
    await send_ping(env, content_bytes)
    await asyncio.wait_for(env.done.wait(), 5)
    first = await env.fake.wait_for_request("PATCH", r"/messages/@original$")
    second = await env.fake.wait_for_request("PATCH", r"/messages/@original$")
    assert (first.status, second.status) == (429, 200)
    assert second.files[0].data == b"abc"  # the file is re-sent on retry
    assert env.seen["message"].content == "pong"


async def test_expired_token_and_upload_limit(env: Env, content_bytes: bytes) -> None:
    async def body(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await interaction.response.defer()
        big = discord.File(io.BytesIO(b"x" * 2000), filename="big.png")
        try:
            await interaction.edit_original_response(attachments=[big])
        except discord.HTTPException as e:
            env.seen["too_large"] = (e.status, e.code)
        env.fake.advance_clock(15 * 60 + 1)
        try:
            await interaction.followup.send("late")
        except discord.HTTPException as e:
            env.seen["expired"] = (e.status, e.code)

    add_ping(env, body)
    await send_ping(env, content_bytes, attachment_size_limit=1000)
    await asyncio.wait_for(env.done.wait(), 5)
    assert env.seen["too_large"] == (413, 40005)
    assert env.seen["expired"] == (401, 50027)


async def test_reconnect_resumes_and_keeps_working(env: Env, content_bytes: bytes) -> None:
    async def body(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await interaction.response.send_message("pong")

    add_ping(env, body)
    resumed = asyncio.ensure_future(env.client.wait_for("resumed", timeout=10))
    await env.fake.request_reconnect()
    resume = await env.fake.wait_for_gateway(6, timeout=10)
    assert resume.d["session_id"] == env.fake.session_id and resume.d["token"] == env.fake.token
    await resumed
    assert env.fake.identify_count == 1 and env.fake.resume_count == 1

    await send_ping(env, content_bytes)
    await asyncio.wait_for(env.done.wait(), 5)
    callback = await env.fake.wait_for_request("POST", r"/callback$")
    assert callback.json["type"] == 4 and callback.json["data"]["content"] == "pong"
    assert callback.status == 200 and callback.response["resource"]["message"]["content"] == "pong"


async def test_channel_messages(env: Env) -> None:
    channel = env.client.get_channel(int(env.fake.channel_id))
    assert isinstance(channel, discord.TextChannel)
    msg = await channel.send("hello", file=discord.File(io.BytesIO(b"img"), filename="a.png"))
    assert msg.content == "hello" and msg.attachments[0].size == 3
    assert await msg.attachments[0].read() == b"img"
    edited = await msg.edit(content="bye")
    assert edited.content == "bye"
    post = await env.fake.wait_for_request("POST", rf"/channels/{env.fake.channel_id}/messages$")
    assert post.files[0].data == b"img"
