"""The bot end to end: real discord.py client, real queue and engine, fake Discord over loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools

import pytest
from bot_harness import BotEnv, custom_ids
from PIL import Image

from nst_core.params import scale_sizes

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


async def test_happy_path_defer_progress_result_buttons(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    env.gate.close()  # the job goes from one iteration report to the next only once the bot has shown it
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "starry.jpg", "image/jpeg"),
                                size=64, iterations=40)
    response = await env.response(payload)
    assert response["type"] == 5  # deferred within the 3 s window
    await step_until_a_preview_is_shown(env, env.original_id(payload))
    env.gate.open()
    final = await env.wait_final(payload)
    assert "✅ Done" in final["content"], final["content"]
    assert " iterations · seed " in final["content"] and "PNG (" in final["content"]
    data = env.attachment_bytes(final)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.size == scale_sizes(128, 85, 64, 1)[-1]  # the 128x85 photo at 64 px
    job_id = final["content"].split("`")[1]
    assert custom_ids(final) == [f"nst:reroll:{job_id}", f"nst:more:{job_id}", f"nst:less:{job_id}",
                                 f"nst:upscale:{job_id}", f"nst:timelapse:{job_id}"]
    history = env.fake.message_history(env.original_id(payload))
    texts = [m["content"] for m in history]
    assert any("%" in t and "scale 1/1" in t for t in texts), texts  # progress edits with a bar
    running = [m for m in history if "🎨" in m["content"]]
    assert running and all(f"nst:cancel:{job_id}" in custom_ids(m) for m in running)
    # progress edits are at least edit_interval_seconds (0.5 s here) apart; the result itself goes out at once
    stamps = [dt.datetime.fromisoformat(m["edited_timestamp"]).timestamp() for m in history[1:-1]]
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(stamps)), stamps
    # a preview rides along now and then (every 2nd edit here, when the worker has sent a new one)
    previews = [m for m in running if any(a["filename"].startswith("preview-") for a in m["attachments"])]
    assert previews, texts
    with Image.open(io.BytesIO(env.attachment_bytes(previews[0]))) as img:
        assert img.format == "JPEG"


async def step_until_a_preview_is_shown(env: BotEnv, message_id: str) -> None:
    """With the gate closed: let the job on one iteration report at a time, each once the bot has shown it, until a
    progress edit carried a preview (the bot attaches one to every 2nd edit, when the worker has sent a new one)."""
    iteration = 0
    while not any(a["filename"].startswith("preview-") for m in env.fake.message_history(message_id)
                  for a in m["attachments"]):
        _, iteration = await env.gate.wait_held(beyond=iteration)
        await env.wait_message(message_id, lambda m, i=iteration: f"iteration {i}/" in m["content"])
        env.gate.step()


#: A job held at the gate (closed by start_and_wait_running) while the test acts on it: its size does not matter.
HELD = {"size": 64, "iterations": 12}
TINY = {"size": 64, "iterations": 8}


async def start_and_wait_running(env: BotEnv, content_bytes: bytes, style_bytes: bytes, **options):
    """Close the gate and start a job; it stays running (held after its first iteration report, shown by the bot)
    until the test opens `env.gate`, or cancels it."""
    env.gate.close()
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                **(options or HELD))
    await env.response(payload)
    msg = await env.wait_message(env.original_id(payload), lambda m: "🎨 `[" in m["content"], timeout=30)
    return payload, msg["content"].split("`")[1]


async def test_cancel_button_on_a_running_job(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    payload, job_id = await start_and_wait_running(env, content_bytes, style_bytes)
    message_id = env.original_id(payload)
    stranger = env.fake.add_user("stranger")
    click = await env.fake.send_component(message_id, f"nst:cancel:{job_id}", user=stranger, permissions=1 << 11)
    assert "not yours to cancel" in await env.ephemeral_text(click)
    click = await env.fake.send_component(message_id, f"nst:cancel:{job_id}")
    assert job_id in await env.ephemeral_text(click)
    final = await env.wait_final(payload, timeout=15)
    assert f"🛑 Cancelled by <@{env.fake.user['id']}>" in final["content"]
    assert final["attachments"] == [] and custom_ids(final) == []


async def test_moderator_may_cancel_someone_elses_job(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    payload, job_id = await start_and_wait_running(env, content_bytes, style_bytes)
    moderator = env.fake.add_user("mod")
    click = await env.fake.send_component(env.original_id(payload), f"nst:cancel:{job_id}", user=moderator,
                                          permissions=(1 << 11) | (1 << 13))  # send + manage messages
    assert "Stopping job" in await env.ephemeral_text(click) or "Cancelled job" in await env.ephemeral_text(click)
    final = await env.wait_final(payload, timeout=15)
    assert f"Cancelled by <@{moderator['id']}>" in final["content"]


async def test_reroll_clicked_after_a_restart(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                **TINY, seed=7)
    final = await env.wait_final(payload)
    job_id = final["content"].split("`")[1]
    assert "seed 7" in final["content"]
    await env.restart()
    click = await env.fake.send_component(final["id"], f"nst:reroll:{job_id}")
    rerolled = await env.wait_final(click)
    assert "✅ Done" in rerolled["content"] and f"re-roll (new seed) of `{job_id}`" in rerolled["content"]
    assert "seed 7 " not in rerolled["content"]
    with Image.open(io.BytesIO(env.attachment_bytes(rerolled))) as img:
        assert img.size == (64, 42)
    more = await env.fake.send_component(final["id"], f"nst:more:{job_id}")
    done = await env.wait_final(more)
    assert "more style (style 10)" in done["content"] and "seed 7 " in done["content"]


async def test_queue_position_updates_when_the_job_ahead_finishes(bot_env_factory, content_bytes,
                                                                  style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    first, _ = await start_and_wait_running(env, content_bytes, style_bytes)
    second_user, third_user = env.fake.add_user("bee"), env.fake.add_user("cee")
    # One after the other: two commands sent at once may be queued in either order (each downloads its images first).
    second = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                               user=second_user, **TINY)
    await env.response(second)
    await env.wait_message(env.original_id(second), lambda m: "next in line" in m["content"], timeout=10)
    third = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                              user=third_user, **TINY)
    await env.response(third)
    await env.wait_message(env.original_id(third), lambda m: "position 2 of 2" in m["content"], timeout=10)
    env.gate.open()  # the job ahead finishes now
    await env.wait_final(first)
    await env.wait_final(third)
    texts = [m["content"] for m in env.fake.message_history(env.original_id(third))]
    waiting = [t for t in texts if "⏳" in t]
    assert any("position 2 of 2" in t for t in waiting) and any("next in line" in t for t in waiting), texts
    assert texts.index(next(t for t in texts if "next in line" in t)) > texts.index(
        next(t for t in texts if "position 2 of 2" in t))


async def test_token_expiry_mid_job_continues_in_the_channel(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    _, job_id = await start_and_wait_running(env, content_bytes, style_bytes, size=96, iterations=12)
    env.fake.advance_clock(15 * 60 + 1)  # the interaction token is now expired
    env.gate.open()  # the job goes on, and ends, with the token expired
    user_id = env.fake.user["id"]

    def delivered(messages):
        return [m for m in messages if "✅ Done" in m["content"]]

    for _ in range(3000):
        if delivered(env.fake.messages_in_channel()):
            break
        await asyncio.sleep(0.02)
    result = delivered(env.fake.messages_in_channel())
    assert len(result) == 1, [m["content"] for m in env.fake.messages_in_channel()]
    assert result[0]["content"].startswith(f"<@{user_id}>") and job_id in result[0]["content"]
    post = next(r for r in env.fake.requests if r.method == "POST" and r.path.endswith("/messages")
                and r.files and job_id in (r.payload or {}).get("content", ""))
    assert [str(u) for u in post.payload["allowed_mentions"]["users"]] == [user_id]  # only the requester is pinged
    assert custom_ids(result[0]) == [f"nst:reroll:{job_id}", f"nst:more:{job_id}", f"nst:less:{job_id}",
                                     f"nst:upscale:{job_id}", f"nst:timelapse:{job_id}"]
    with Image.open(io.BytesIO(env.attachment_bytes(result[0]))) as img:
        assert max(img.size) == 96
    refused = [r for r in env.fake.requests if r.status == 401]
    assert refused and all(r.response["code"] == 50027 for r in refused)


async def test_channel_closed_to_the_bot_falls_back_to_a_direct_message(bot_env_factory, content_bytes,
                                                                        style_bytes) -> None:
    env: BotEnv = await bot_env_factory(progress={"token_fallback_seconds": 1})
    env.fake.channel_posts_forbidden = True
    env.gate.close()
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                **HELD)
    await env.response(payload)
    await env.gate.wait_held()
    # The job is held, running, while the token's fallback deadline (1 s after the command reached the bot) passes.
    await asyncio.sleep(1.0)
    env.gate.open()
    for _ in range(3000):
        dms = [m for m in env.fake.messages.values() if m["channel_id"] in env.fake.dm_channels
               and "✅ Done" in m["content"]]
        if dms:
            break
        await asyncio.sleep(0.02)
    assert dms and dms[0]["attachments"], "the result did not arrive as a direct message"


async def test_rate_limited_progress_edit_is_retried(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    payload, _ = await start_and_wait_running(env, content_bytes, style_bytes)
    env.fake.rate_limit_next("PATCH", r"/webhooks/.*/messages/", retry_after=0.4)
    env.gate.open()  # the next edit (progress, or the result) is answered with a 429
    final = await env.wait_final(payload)
    assert "✅ Done" in final["content"]
    edits = [r for r in env.fake.requests if r.method == "PATCH" and "/webhooks/" in r.path]
    statuses = [r.status for r in edits]
    assert 429 in statuses and statuses[statuses.index(429) + 1] == 200  # retried after retry_after, then fine


async def test_gateway_reconnect_mid_job_keeps_the_job(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    payload, _ = await start_and_wait_running(env, content_bytes, style_bytes)
    await env.fake.request_reconnect()
    await env.fake.wait_for_gateway(6, timeout=10)
    env.gate.open()
    final = await env.wait_final(payload)
    assert "✅ Done" in final["content"] and final["attachments"]
    assert env.fake.resume_count == 1 and env.fake.identify_count == 1


async def test_result_over_the_upload_limit_is_reencoded(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    limit = 4000  # a 64 px PNG of this photo is about 6 KB
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                attachment_size_limit=limit, **TINY)
    final = await env.wait_final(payload)
    assert "re-encoded as JPEG" in final["content"] and "to fit 3.9 KB" in final["content"], final["content"]
    data = env.attachment_bytes(final)
    assert len(data) <= limit and final["attachments"][0]["filename"].endswith(".jpg")
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG" and img.size == (64, 42)


async def test_a_restart_mid_job_loses_nothing_and_finishes_in_the_same_replies(bot_env_factory, content_bytes,
                                                                                 style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    running, running_id = await start_and_wait_running(env, content_bytes, style_bytes)
    other = env.fake.add_user("other")
    waiting = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                user=other, **TINY)
    await env.response(waiting)
    await env.wait_message(env.original_id(waiting), lambda m: "⏳" in m["content"])
    await env.restart()  # e.g. `docker compose restart`: a graceful stop while one job runs and one waits
    env.gate.open()  # the restarted bot runs the interrupted job again (held once more until now), then the other
    for payload in (running, waiting):
        final = await env.wait_final(payload)
        assert "✅ Done" in final["content"], final["content"]
        assert final["attachments"] and final["attachments"][0]["filename"].startswith("nst-")
    job = await env.bot.queue.get(running_id)
    assert job.attempts == 1  # started again after the restart, not cancelled; the stop was not counted as a try
    assert not env.fake.messages_in_channel()  # both finished in their own replies, nothing posted elsewhere


async def test_a_job_whose_reply_was_never_saved_is_still_delivered_in_its_channel(bot_env_factory, content_bytes,
                                                                                   style_bytes) -> None:
    import sqlite3

    env: BotEnv = await bot_env_factory()
    _, job_id = await start_and_wait_running(env, content_bytes, style_bytes)
    await env.stop()
    with sqlite3.connect(env.data_dir / "bot.sqlite3") as db:  # as if the bot died between submit and saving
        db.execute("DELETE FROM replies")
    await env.start()
    env.gate.open()
    user_id = env.fake.user["id"]
    for _ in range(3000):
        done = [m for m in env.fake.messages_in_channel() if "✅ Done" in m["content"]]
        if done:
            break
        await asyncio.sleep(0.02)
    assert done and done[0]["content"].startswith(f"<@{user_id}>") and job_id in done[0]["content"]
    assert done[0]["attachments"]
