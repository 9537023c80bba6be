"""Saved styles and the message menu, /queue and /cancel, /nst-admin, the health endpoint and command sync."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from bot_harness import BotEnv

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

TINY = {"size": 64, "iterations": 6}
MEMBER = 1 << 11  # send messages only: no Manage Server, no Manage Messages


def sub(name: str, options: list | None = None) -> list:
    return [{"type": 1, "name": name, "options": options or []}]


async def save_style(env: BotEnv, name: str, data: bytes, **kwargs):
    att = env.attachment(data, "style.jpg", "image/jpeg")
    return await env.fake.send_interaction(
        "style", sub("save", [{"name": "name", "type": 3, "value": name}, {"name": "image", "type": 11,
                                                                            "value": att["id"]}]),
        attachments=[att], **kwargs)


async def followup_text(env: BotEnv, payload) -> str:
    req = await env.fake.wait_for_request("POST", rf"/webhooks/\d+/{payload['token']}$", timeout=15)
    return req.payload["content"]


async def test_saved_style_save_list_use_and_context_menu(bot_env_factory, content_bytes, style_bytes) -> None:
    # the menu has no options: the default preset, capped by the bot's limits (kept tiny here)
    env: BotEnv = await bot_env_factory(limits={"max_size": 64, "max_iterations": 6})
    denied = await save_style(env, "Starry", style_bytes, permissions=MEMBER)
    assert "needs the Manage Server permission" in await env.ephemeral_text(denied)
    saved = await save_style(env, "  Starry   Night ", style_bytes)
    assert "Saved style “starry night” (128x" in await followup_text(env, saved)
    listing = await env.fake.send_interaction("style", sub("list"), permissions=MEMBER)
    assert "**starry night**" in await env.ephemeral_text(listing)

    typed = await env.fake.send_autocomplete("stylize", [
        {"name": "content", "type": 11, "value": "0"},
        {"name": "saved_style", "type": 3, "value": "star", "focused": True}])
    choices = (await env.fake.wait_for_response(typed))["data"]["choices"]
    assert choices == [{"name": "starry night", "value": "starry night"}]

    payload = await env.stylize(env.attachment(content_bytes), None, saved_style="starry night", **TINY)
    final = await env.wait_final(payload)
    assert "✅ Done" in final["content"] and "style “starry night”" in final["content"]

    # the message menu: a member's post with a photo -> ephemeral picker -> a job
    message = env.fake.post_user_message("my cat", [env.attachment(content_bytes)])
    menu = await env.fake.send_message_command("Stylize this image", message, permissions=MEMBER)
    picker = await env.fake.wait_for_response(menu)
    assert picker["type"] == 4 and picker["data"]["flags"] & 64
    picker_id = env.fake.interactions[menu["token"]].original_id
    select = env.fake.components_of(picker_id)[0]
    assert [o["value"] for o in select["options"]] == ["starry night"]
    pick = await env.fake.send_component(picker_id, select["custom_id"], component_type=3,
                                         values=["starry night"])
    picked = await env.wait_final(pick)
    assert "✅ Done" in picked["content"] and picked["attachments"]
    assert "size lowered from the fast preset's 256 px to this server's limit of 64 px" in picked["content"]
    assert not picked["flags"] & 64  # the result is public

    no_image = env.fake.post_user_message("just text")
    menu = await env.fake.send_message_command("Stylize this image", no_image)
    assert "has no image attached" in await env.ephemeral_text(menu)

    removed = await env.fake.send_interaction("style", sub("delete", [{"name": "name", "type": 3,
                                                                       "value": "Starry Night"}]))
    assert "Deleted style “starry night”" in await env.ephemeral_text(removed)
    menu = await env.fake.send_message_command("Stylize this image", message)
    assert "no saved styles yet" in await env.ephemeral_text(menu)


async def test_a_saved_style_is_found_however_its_name_is_typed(bot_env_factory, content_bytes, style_bytes) -> None:
    """Spaces and case do not matter in a saved style's name: saving, picking, completing and deleting agree."""
    env: BotEnv = await bot_env_factory()
    saved = await save_style(env, "Starry Night", style_bytes)
    assert "Saved style “starry night”" in await followup_text(env, saved)
    typed = await env.fake.send_autocomplete("stylize", [
        {"name": "content", "type": 11, "value": "0"},
        {"name": "saved_style", "type": 3, "value": "STARRY  n", "focused": True}])
    choices = (await env.fake.wait_for_response(typed))["data"]["choices"]
    assert choices == [{"name": "starry night", "value": "starry night"}]
    payload = await env.stylize(env.attachment(content_bytes), None, saved_style=" Starry  NIGHT ", **TINY)
    final = await env.wait_final(payload)
    assert "✅ Done" in final["content"] and "style “starry night”" in final["content"]


async def test_queue_and_cancel_commands(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    empty = await env.fake.send_interaction("queue")
    assert "You have no jobs waiting or running" in await env.ephemeral_text(empty)
    env.gate.close()  # the first job stays running (held after its first iteration) until it is cancelled
    running = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                size=64, iterations=12)
    await env.response(running)
    msg = await env.wait_message(env.original_id(running), lambda m: "🎨" in m["content"])
    running_id = msg["content"].split("`")[1]
    waiting = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                **TINY)
    await env.response(waiting)
    msg = await env.wait_message(env.original_id(waiting), lambda m: "⏳" in m["content"])
    waiting_id = msg["content"].split("`")[1]

    listing = await env.ephemeral_text(await env.fake.send_interaction("queue"))
    assert f"`{running_id}` running" in listing and f"`{waiting_id}` #1 in line" in listing
    assert "**Queue**: 1 waiting, 1 running." in listing

    typed = await env.fake.send_autocomplete("cancel", [{"name": "job", "type": 3, "value": "", "focused": True}])
    choices = (await env.fake.wait_for_response(typed))["data"]["choices"]
    assert [c["value"] for c in choices] == [waiting_id, running_id]  # latest first

    stranger = env.fake.add_user("stranger")
    nope = await env.fake.send_interaction("cancel", [{"name": "job", "type": 3, "value": running_id}],
                                           user=stranger, permissions=MEMBER)
    assert f"Job {running_id} is not yours to cancel" in await env.ephemeral_text(nope)
    latest = await env.fake.send_interaction("cancel")  # no job named: the latest one
    assert f"Cancelled job `{waiting_id}`" in await env.ephemeral_text(latest)
    assert "🛑 Cancelled" in (await env.wait_final(waiting))["content"]
    named = await env.fake.send_interaction("cancel", [{"name": "job", "type": 3, "value": running_id}])
    assert f"Stopping job `{running_id}`" in await env.ephemeral_text(named)
    assert "🛑 Cancelled" in (await env.wait_final(running, timeout=15))["content"]
    unknown = await env.fake.send_interaction("cancel", [{"name": "job", "type": 3, "value": "abcdef123456"}])
    assert "There is no job abcdef123456" in await env.ephemeral_text(unknown)


async def test_admin_settings_limit_the_server_and_stats_count_jobs(bot_env_factory, content_bytes,
                                                                     style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    admin = "nst-admin"
    before = await env.wait_final(await env.stylize(env.attachment(content_bytes),
                                                    env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                                    size=96, iterations=6))
    before_id = before["content"].split("`")[1]
    denied = await env.fake.send_interaction(admin, sub("settings"), permissions=MEMBER)
    assert "needs the Manage Server permission" in await env.ephemeral_text(denied)
    too_big = await env.fake.send_interaction(admin, sub("settings", [{"name": "max_size", "type": 4,
                                                                        "value": 2048}]))
    assert "max_size=2048 is above the bot's limit of 1024" in await env.ephemeral_text(too_big)
    too_long = await env.fake.send_interaction(admin, sub("settings", [
        {"name": "max_clip_seconds", "type": 10, "value": 20.0}, {"name": "max_clip_size", "type": 4, "value": 16}]))
    text = await env.ephemeral_text(too_long)
    assert "max_clip_seconds=20 is above the bot's limit of 10" in text, text
    assert "max_clip_size=16 is too small; at least 32 px" in text
    ok = await env.fake.send_interaction(admin, sub("settings", [
        {"name": "max_size", "type": 4, "value": 64}, {"name": "allow_channel", "type": 7,
                                                       "value": env.fake.channel_id}]))
    text = await env.ephemeral_text(ok)
    assert "(updated)" in text and "max size: 64 px" in text and f"<#{env.fake.channel_id}>" in text
    assert "animations: at most 48 frames (bot limit) and 10 s (bot limit), made at 256 px (bot limit)" in text

    elsewhere = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                  channel_id=env.fake.other_channel_id, **TINY)
    assert f"Style transfer is not enabled in this channel; use <#{env.fake.channel_id}>" in \
        await env.ephemeral_text(elsewhere)
    refused = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                size=96, iterations=6)
    assert "size=96 is not allowed; this server allows at most 64 px" in await env.ephemeral_text(refused)
    capped = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                               preset="balanced", iterations=6)
    final = await env.wait_final(capped)
    assert "size lowered from the balanced preset's 512 px to this server's limit of 64 px" in final["content"]

    # a follow-up of a job made before the limit was lowered is held to the new limit
    more = await env.wait_final(await env.fake.send_component(before["id"], f"nst:more:{before_id}"))
    assert f"size lowered from job {before_id}'s 96 px to this server's limit of 64 px" in more["content"]

    stats = await env.ephemeral_text(await env.fake.send_interaction(admin, sub("stats")))
    assert "3 jobs · 3 done · 0 failed · 0 cancelled" in stats and "Median run time:" in stats

    opened = await env.fake.send_interaction(admin, sub("settings", [{"name": "remove_channel", "type": 7,
                                                                       "value": env.fake.channel_id},
                                                                      {"name": "max_size", "type": 4, "value": 0}]))
    text = await env.ephemeral_text(opened)
    assert "/stylize allowed in: every channel" in text and "max size: 1024 px (bot limit)" in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_health_endpoint_reports_gateway_and_executor(bot_env_factory) -> None:
    port = free_port()
    env: BotEnv = await bot_env_factory(health={"port": port})
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        body = json.loads(await response.text())
        assert response.status == 200, body
    assert body["ok"] and body["gateway"] == "connected" and body["executor_ok"]
    assert body["queue_waiting"] == 0 and "workers: ready" in body["queue_backend"]
    await env.bot.queue.backend.close()  # the executor stops: the bot must not claim to be healthy
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        assert response.status == 503
        assert not json.loads(await response.text())["executor_ok"]


async def test_commands_are_synced_only_when_they_change(bot_env_factory) -> None:
    env: BotEnv = await bot_env_factory()
    puts = [r for r in env.fake.requests if r.method == "PUT" and r.path.endswith("/commands")]
    assert len(puts) == 1
    names = sorted(c["name"] for c in puts[0].json)
    assert names == sorted(["cancel", "nst-admin", "queue", "style", "stylize", "Stylize this image"])
    stylize = next(c for c in puts[0].json if c["name"] == "stylize")
    size = next(o for o in stylize["options"] if o["name"] == "size")
    assert (size["min_value"], size["max_value"]) == (32, 4096)  # the engine's documented range
    await env.restart()
    await asyncio.sleep(0.1)
    assert len([r for r in env.fake.requests if r.method == "PUT" and r.path.endswith("/commands")]) == 1
    env.overrides["discord"] = {"dev_guild_id": int(env.fake.guild_id)}
    await env.restart()
    guild_puts = [r for r in env.fake.requests if r.method == "PUT" and r.path.endswith(
        f"/guilds/{env.fake.guild_id}/commands")]
    assert len(guild_puts) == 1 and len(guild_puts[0].json) == 6
