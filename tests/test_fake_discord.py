"""The fake Discord server (tests/fake_discord.py) works with the real discord.py client."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import discord
import pytest
import pytest_asyncio
from discord import app_commands
from fake_discord import EPHEMERAL, LOADING, ErrorRecorder, FakeDiscord, running_fake

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


class TinyClient(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)
        self.job_click: Callable[[discord.Interaction, JobButton], Awaitable[None]] | None = None


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=r"job:(?P<job>\d+):(?P<action>cancel|retry)"):
    """A persistent button whose state lives in its custom_id; clicks go to ``client.job_click``."""

    def __init__(self, job: int, action: str) -> None:
        super().__init__(discord.ui.Button(label=action, custom_id=f"job:{job}:{action}"))
        self.job = job
        self.action = action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> JobButton:
        return cls(int(match["job"]), match["action"])

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        assert isinstance(client, TinyClient) and client.job_click is not None
        await client.job_click(interaction, self)


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


def guild_channel(env: Env) -> discord.TextChannel:
    channel = env.client.get_channel(int(env.fake.channel_id))
    assert isinstance(channel, discord.TextChannel)
    return channel


async def test_dynamic_button_click_reply_then_defer_update_and_followup(env: Env) -> None:
    env.client.add_dynamic_items(JobButton)
    clicks: list[tuple[int, str, int]] = []
    alice = env.fake.add_user("alice")

    async def on_click(interaction: discord.Interaction, button: JobButton) -> None:
        clicks.append((button.job, button.action, interaction.user.id))
        if button.action == "cancel":
            await interaction.response.send_message(f"cancelled {button.job}", ephemeral=True)
        else:
            await interaction.response.defer()  # a component's defer is type 6, "deferred update"
            await interaction.edit_original_response(content=f"retrying {button.job}")  # edits the clicked message
            env.seen["followup"] = await interaction.followup.send("queued again", ephemeral=True, wait=True)
        env.done.set()

    env.client.job_click = on_click
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(7, "cancel"))
    view.add_item(JobButton(7, "retry"))
    posted = await guild_channel(env).send("job 7 running", view=view)
    mid = str(posted.id)
    assert [c["custom_id"] for c in env.fake.components_of(mid)] == ["job:7:cancel", "job:7:retry"]

    click = await env.fake.send_component(mid, "job:7:cancel")
    await asyncio.wait_for(env.done.wait(), 5)
    answer = await env.fake.wait_for_response(click)
    assert answer["type"] == 4 and answer["data"]["content"] == "cancelled 7" and answer["data"]["flags"] == EPHEMERAL
    reply = env.fake.interactions[click["token"]].original_message
    assert reply is not None and reply["flags"] & EPHEMERAL and reply["content"] == "cancelled 7"

    env.done.clear()
    click = await env.fake.send_component(mid, "job:7:retry", user=alice)
    await asyncio.wait_for(env.done.wait(), 5)
    assert (await env.fake.wait_for_response(click))["type"] == 6
    assert clicks == [(7, "cancel", int(env.fake.user["id"])), (7, "retry", int(alice["id"]))]
    current = env.fake.last_edit_of(mid)
    assert current["content"] == "retrying 7" and current["edited_timestamp"] is not None
    assert [c["custom_id"] for c in env.fake.components_of(mid)] == ["job:7:cancel", "job:7:retry"]  # kept
    followup = env.seen["followup"]
    assert followup.content == "queued again" and followup.flags.ephemeral
    assert env.fake.last_edit_of(str(followup.id))["flags"] & EPHEMERAL


async def test_select_menu_gets_values_and_update_message_edits_it(env: Env) -> None:
    class Picker(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.select(
            custom_id="size",
            max_values=2,
            options=[discord.SelectOption(label=v, value=v) for v in ("256", "512", "1024")],
        )
        async def size(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
            env.seen["values"] = select.values
            await interaction.response.edit_message(content=f"size {','.join(select.values)}", view=None)
            env.done.set()

    posted = await guild_channel(env).send("pick a size", view=Picker())
    mid = str(posted.id)
    with pytest.raises(KeyError, match="no message"):
        await env.fake.send_component("42", "size", component_type=3, values=["256"])
    with pytest.raises(ValueError, match="no component 'nope'"):
        await env.fake.send_component(mid, "nope")
    with pytest.raises(ValueError, match="no option"):
        await env.fake.send_component(mid, "size", component_type=3, values=["999"])
    with pytest.raises(ValueError, match="type 3, not 2"):
        await env.fake.send_component(mid, "size")

    choice = await env.fake.send_component(mid, "size", component_type=3, values=["256", "1024"])
    await asyncio.wait_for(env.done.wait(), 5)
    assert env.seen["values"] == ["256", "1024"]
    answer = await env.fake.wait_for_response(choice)
    assert answer["type"] == 7 and answer["data"]["components"] == []
    current = env.fake.last_edit_of(mid)
    assert current["content"] == "size 256,1024" and current["components"] == []
    assert [v["content"] for v in env.fake.message_history(mid)] == ["pick a size", "size 256,1024"]
    assert env.fake.interactions[choice["token"]].original_message == current
    with pytest.raises(ValueError, match="no component"):  # the menu is gone: nobody can use it any more
        await env.fake.send_component(mid, "size", component_type=3, values=["256"])


async def test_autocomplete_in_subcommand_is_answered_with_choices(env: Env) -> None:
    style = app_commands.Group(name="style", description="saved styles")

    @style.command(name="save", description="save a style")
    async def save(interaction: discord.Interaction, name: str, strength: int = 1) -> None:
        await interaction.response.send_message(f"saved {name} at {strength}")
        env.done.set()

    @save.autocomplete("name")
    async def name_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        env.seen["autocomplete"] = (current, interaction.namespace.strength)
        names = ("starry", "stripes", "mosaic")
        return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

    env.client.tree.add_command(style)
    with pytest.raises(ValueError, match="exactly one"):
        await env.fake.send_autocomplete("style", [{"type": 1, "name": "save", "options": []}])
    env.fake.rate_limit_next("POST", r"/callback$", retry_after=0.05)
    typed = {"type": 3, "name": "name", "value": "st", "focused": True}
    ask = await env.fake.send_autocomplete(
        "style", [{"type": 1, "name": "save", "options": [typed, {"type": 4, "name": "strength", "value": 3}]}]
    )
    answer = await env.fake.wait_for_response(ask)
    assert answer["type"] == 8
    assert [c["value"] for c in answer["data"]["choices"]] == ["starry", "stripes"]
    assert env.seen["autocomplete"] == ("st", 3)
    first = await env.fake.wait_for_request("POST", r"/callback$")
    second = await env.fake.wait_for_request("POST", r"/callback$")
    assert (first.status, second.status) == (429, 200)  # retried

    run = await env.fake.send_interaction(
        "style", [{"type": 1, "name": "save", "options": [{"type": 3, "name": "name", "value": "starry"}]}]
    )
    await asyncio.wait_for(env.done.wait(), 5)
    assert (await env.fake.wait_for_response(run))["data"]["content"] == "saved starry at 1"


async def test_second_user_and_member_permissions(env: Env) -> None:
    alice = env.fake.add_user("alice")
    calls: dict[str, tuple[bool, bool]] = {}

    @env.client.tree.command(name="whoami", description="who am I")
    async def whoami(interaction: discord.Interaction) -> None:
        perms = interaction.permissions
        calls[interaction.user.name] = (perms.manage_guild, perms.send_messages)
        await interaction.response.send_message("ok", ephemeral=True)
        if len(calls) == 2:
            env.done.set()

    await env.fake.send_interaction("whoami")
    await env.fake.send_interaction("whoami", user=alice, permissions=discord.Permissions(send_messages=True).value)
    await asyncio.wait_for(env.done.wait(), 5)
    assert calls == {"tester": (True, True), "alice": (False, True)}
    fetched = await env.client.fetch_user(int(alice["id"]))
    assert fetched.name == "alice" and not fetched.bot


async def test_message_context_menu_reads_attachment_and_ephemeral_select(env: Env, content_bytes: bytes) -> None:
    async def use_image(interaction: discord.Interaction, message: discord.Message) -> None:
        att = message.attachments[0]
        env.seen["target"] = (message.author.id, message.content, att.filename, await att.read())
        select = discord.ui.Select(options=[discord.SelectOption(label=v, value=v) for v in ("content", "style")])

        async def chosen(choice: discord.Interaction) -> None:
            env.seen["role"] = select.values
            await choice.response.edit_message(content=f"using it as {select.values[0]}", view=None)
            env.done.set()

        select.callback = chosen
        view = discord.ui.View(timeout=None)
        view.add_item(select)
        await interaction.response.send_message("use this image as?", view=view, ephemeral=True)

    env.client.tree.add_command(app_commands.ContextMenu(name="Use image", callback=use_image))
    att = env.fake.add_attachment(content_bytes, "photo.png", width=128, height=128)
    target = env.fake.post_user_message("my photo", attachments=[att])
    invoke = await env.fake.send_message_command("Use image", target)
    answer = await env.fake.wait_for_response(invoke)
    assert answer["type"] == 4 and answer["data"]["flags"] == EPHEMERAL
    assert env.seen["target"] == (int(env.fake.user["id"]), "my photo", "photo.png", content_bytes)

    prompt_id = env.fake.interactions[invoke["token"]].original_id
    assert prompt_id is not None and env.fake.last_edit_of(prompt_id)["flags"] & EPHEMERAL
    with pytest.raises(discord.NotFound):  # ephemeral messages are not in the channel
        await guild_channel(env).fetch_message(int(prompt_id))
    [menu] = env.fake.components_of(prompt_id)
    await env.fake.send_component(prompt_id, menu["custom_id"], component_type=3, values=["style"])
    await asyncio.wait_for(env.done.wait(), 5)
    assert env.seen["role"] == ["style"]
    assert env.fake.last_edit_of(prompt_id)["content"] == "using it as style"
    assert env.fake.messages_in_channel() == []  # neither the user's message nor ephemeral replies
    assert [m["id"] for m in env.fake.messages_in_channel(include_interactions=True)] == [prompt_id]


async def test_channel_post_forbidden_and_dm_with_button(env: Env) -> None:
    channel = guild_channel(env)
    await channel.send("one")
    env.fake.channel_posts_forbidden = True
    with pytest.raises(discord.Forbidden) as denied:
        await channel.send("two")
    assert denied.value.code == 50013
    assert [m["content"] for m in env.fake.messages_in_channel()] == ["one"]

    member = await channel.guild.fetch_member(int(env.fake.user["id"]))  # no members intent: not cached
    env.client.add_dynamic_items(JobButton)
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(3, "retry"))
    dm = await member.send("your image", file=discord.File(io.BytesIO(b"png-bytes"), filename="out.png"), view=view)
    assert isinstance(dm.channel, discord.DMChannel) and dm.guild is None
    [dm_id] = env.fake.dm_channels
    assert env.fake.dm_channels[dm_id]["recipients"][0]["id"] == env.fake.user["id"]
    [stored] = env.fake.messages_in_channel(dm_id)
    assert stored["content"] == "your image" and "guild_id" not in stored
    assert await dm.attachments[0].read() == b"png-bytes"

    async def on_click(interaction: discord.Interaction, button: JobButton) -> None:
        env.seen["dm_click"] = (interaction.guild_id, interaction.user.id, button.job)
        await interaction.response.send_message("retrying")
        env.done.set()

    env.client.job_click = on_click
    await env.fake.send_component(str(dm.id), "job:3:retry")
    await asyncio.wait_for(env.done.wait(), 5)
    assert env.seen["dm_click"] == (None, int(env.fake.user["id"]), 3)

    env.fake.dms_forbidden = True
    with pytest.raises(discord.Forbidden) as closed:
        await member.send("again")
    assert closed.value.code == 50007
    creates = [r for r in env.fake.requests if r.path == "/users/@me/channels"]
    assert len(creates) == 1  # discord.py caches the DM channel


async def test_a_repeated_nonce_gives_the_first_message_back_as_discord_does(env: Env) -> None:
    channel = guild_channel(env)
    first = await channel.send("result", file=discord.File(io.BytesIO(b"png"), filename="a.png"), nonce="job1.o0")
    again = await channel.send("result", file=discord.File(io.BytesIO(b"png"), filename="a.png"), nonce="job1.o0")
    assert again.id == first.id and again.nonce == "job1.o0"
    assert [m["content"] for m in env.fake.messages_in_channel()] == ["result"]  # one message, not two
    other = await channel.send("other", nonce="job1.o1")  # another nonce: a new message
    assert other.id != first.id
    await channel.send("random nonces never repeat")  # discord.py's own nonce
    await channel.send("random nonces never repeat")
    assert len(env.fake.messages_in_channel()) == 4

    await other.delete()
    with pytest.raises(discord.NotFound):  # the first message of that nonce was deleted
        await channel.send("other", nonce="job1.o1")
    env.fake.advance_clock(6 * 60)  # Discord remembers a nonce for a few minutes only
    late = await channel.send("result", nonce="job1.o0")
    assert late.id != first.id
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x", nonce="n" * 26)
    assert too_long.value.status == 400 and too_long.value.code == 50035


async def test_followups_and_webhook_edits_by_message_id(env: Env) -> None:
    @env.client.tree.command(name="render", description="render")
    async def render(interaction: discord.Interaction) -> None:
        deferred = await interaction.response.defer(thinking=True)
        assert deferred is not None
        env.seen["original_id"] = deferred.message_id
        env.seen["token"] = interaction.token
        preview = discord.File(io.BytesIO(b"preview"), filename="p.png")
        env.seen["preview"] = await interaction.followup.send("preview", file=preview, wait=True)
        env.seen["private"] = await interaction.followup.send("only you", ephemeral=True, wait=True)
        env.seen["original"] = await interaction.original_response()
        env.done.set()

    invoke = await env.fake.send_interaction("render", attachment_size_limit=1000)
    await asyncio.wait_for(env.done.wait(), 5)
    preview, private = env.seen["preview"], env.seen["private"]
    assert await preview.attachments[0].read() == b"preview"
    assert private.flags.ephemeral and not preview.flags.ephemeral
    assert env.seen["original"].id == env.seen["original_id"]
    inter = env.fake.interactions[invoke["token"]]
    assert inter.original_message is not None and inter.original_message["flags"] & LOADING

    # later (a job finished), with only the token: edit the follow-up and the original by id
    webhook = discord.Webhook.partial(int(env.fake.app_id), env.seen["token"], client=env.client)
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(9, "retry"))
    final = discord.File(io.BytesIO(b"final-bytes"), filename="final.png")
    edited = await webhook.edit_message(preview.id, content="final", attachments=[final], view=view)
    assert edited.content == "final" and [a.filename for a in edited.attachments] == ["final.png"]
    assert await edited.attachments[0].read() == b"final-bytes"
    assert [c["custom_id"] for c in env.fake.components_of(str(preview.id))] == ["job:9:retry"]
    original = await webhook.edit_message(env.seen["original_id"], content="done: 3 images")
    assert original.content == "done: 3 images"
    assert inter.original_message["content"] == "done: 3 images" and not inter.original_message["flags"] & LOADING
    assert env.fake.last_edit_of(str(env.seen["original_id"])) is inter.original_message

    env.done.clear()
    env.client.add_dynamic_items(JobButton)

    async def on_click(interaction: discord.Interaction, button: JobButton) -> None:
        env.seen["clicked"] = (button.job, button.action)
        await interaction.response.defer()
        env.done.set()

    env.client.job_click = on_click
    await env.fake.send_component(str(preview.id), "job:9:retry")
    await asyncio.wait_for(env.done.wait(), 5)
    assert env.seen["clicked"] == (9, "retry")

    too_big = discord.File(io.BytesIO(b"x" * 2000), filename="big.png")
    with pytest.raises(discord.HTTPException) as large:
        await webhook.edit_message(preview.id, attachments=[too_big])
    assert (large.value.status, large.value.code) == (413, 40005)
    env.fake.advance_clock(15 * 60 + 1)
    with pytest.raises(discord.HTTPException) as expired:
        await webhook.edit_message(preview.id, content="late")
    assert (expired.value.status, expired.value.code) == (401, 50027)


async def test_component_late_ack_followup_before_ack_and_upload_limit(env: Env) -> None:
    release = asyncio.Event()

    class Go(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="go", custom_id="go")
        async def go(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            try:
                if env.seen.get("late"):
                    await release.wait()
                    with pytest.raises(discord.NotFound) as late:
                        await interaction.response.defer()
                    env.seen["late_code"] = late.value.code
                    return
                with pytest.raises(discord.NotFound) as early:
                    await interaction.followup.send("too early")
                big = discord.File(io.BytesIO(b"x" * 2000), filename="big.png")
                with pytest.raises(discord.HTTPException) as large:
                    await interaction.response.send_message(file=big)
                env.seen["codes"] = (early.value.code, large.value.code)
                await interaction.response.defer()
            finally:
                env.done.set()

    mid = str((await guild_channel(env).send("go?", view=Go())).id)
    env.fake.rate_limit_next("POST", r"/callback$", retry_after=0.05)
    await env.fake.send_component(mid, "go", attachment_size_limit=1000)
    await asyncio.wait_for(env.done.wait(), 5)
    assert env.seen["codes"] == (10015, 40005)
    assert [r.status for r in env.fake.requests if r.path.endswith("/callback")] == [429, 413, 200]

    env.done.clear()
    env.seen["late"] = True
    await env.fake.send_component(mid, "go")
    await asyncio.sleep(0.05)
    env.fake.advance_clock(3.5)
    release.set()
    await asyncio.wait_for(env.done.wait(), 5)
    assert env.seen["late_code"] == 10062
