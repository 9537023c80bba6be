"""The Upscale x2 button: a finished photo comes back twice as large in a new reply (from the delivered picture, the
top level only), capped at the server's largest upscale size and fitted to the upload limit, and each "no" (already
that large, images deleted) has its own message and log line."""

from __future__ import annotations

import io
import logging
import shutil

import pytest
from bot_harness import BotEnv, custom_ids
from PIL import Image

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]

TINY = {"size": 64, "iterations": 6}


def job_id_of(message: dict) -> str:
    return message["content"].split("`")[1]


def image_size(env: BotEnv, message: dict) -> tuple[int, int]:
    with Image.open(io.BytesIO(env.attachment_bytes(message))) as image:
        return image.size


async def stylize(env: BotEnv, content_bytes: bytes, style_bytes: bytes, **options) -> dict:
    final = await env.wait_final(await env.stylize(env.attachment(content_bytes),
                                                   env.attachment(style_bytes, "s.jpg", "image/jpeg"), **options))
    assert "✅ Done" in final["content"], final["content"]
    return final


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused button upscale")]


async def test_upscale_makes_the_delivered_picture_twice_as_large_in_a_new_reply(bot_env_factory, content_bytes,
                                                                                  style_bytes, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    env: BotEnv = await bot_env_factory()
    # 128 px at 2 scales: 64 px gets 6 of the 9 iterations, the top level (128 px) 3
    first = await stylize(env, content_bytes, style_bytes, size=128, iterations=9)
    first_id = job_id_of(first)
    assert custom_ids(first) == [f"nst:{a}:{first_id}" for a in ("reroll", "more", "less", "upscale", "timelapse")]
    delivered = env.attachment_bytes(first)

    env.gate.close()  # the upscale stays running until its progress has been shown
    stranger = env.fake.add_user("stranger")  # anyone may press it, as anyone may press Re-roll; the job is theirs
    click = await env.fake.send_component(first["id"], f"nst:upscale:{first_id}", user=stranger)
    await env.response(click)
    reply_id = env.original_id(click)
    assert reply_id != first["id"]  # a new reply; the first result stays as it was
    running = await env.wait_message(reply_id, lambda m: "🎨 `[" in m["content"], timeout=30)
    assert "(256x170)" in running["content"] and "scale 1/1" in running["content"]  # the top level alone
    env.gate.open()
    upscaled = await env.wait_final(click)
    assert "✅ Done" in upscaled["content"], upscaled["content"]
    assert f"upscale x2 of `{first_id}` (128x85 → 256 px)" in upscaled["content"]
    assert "· 3 iterations ·" in upscaled["content"]  # the top level's share of the earlier 9
    assert image_size(env, upscaled) == (256, 170)
    upscaled_id = job_id_of(upscaled)
    assert f"nst:upscale:{upscaled_id}" in custom_ids(upscaled)  # a still again: it may be upscaled again
    job = await env.bot.queue.get(upscaled_id)
    assert job.requester == stranger["id"]
    assert (await env.bot.queue.inputs(upscaled_id)).continue_from == delivered  # from the picture delivered
    assert env.fake.messages[first["id"]]["content"] == first["content"]

    # Re-roll of an upscale redoes the upscale from the same picture
    rerolled = await env.wait_final(await env.fake.send_component(upscaled["id"], f"nst:reroll:{upscaled_id}"))
    assert f"re-roll (new seed) of `{upscaled_id}`" in rerolled["content"] and "· 3 iterations ·" in rerolled["content"]
    assert image_size(env, rerolled) == (256, 170)
    assert (await env.bot.queue.inputs(job_id_of(rerolled))).continue_from == delivered

    shutil.rmtree(env.bot.queue.store.job_dir(first_id))  # what the retention purge does
    gone = await env.fake.send_component(first["id"], f"nst:upscale:{first_id}")
    text = await env.ephemeral_text(gone)
    assert f"The images of job {first_id} were deleted" in text and "run /stylize again" in text, text
    assert len(refusals(caplog)) == 1


async def test_upscale_is_capped_fitted_and_refused_at_the_servers_largest_size(bot_env_factory, content_bytes,
                                                                                style_bytes, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    env: BotEnv = await bot_env_factory()
    admin = [{"type": 1, "name": "settings", "options": [{"name": "max_upscale_size", "type": 4, "value": 3000}]}]
    too_big = await env.fake.send_interaction("nst-admin", admin)
    assert "max_upscale_size=3000 is above the bot's limit of 2048" in await env.ephemeral_text(too_big)
    admin[0]["options"][0]["value"] = 96
    text = await env.ephemeral_text(await env.fake.send_interaction("nst-admin", admin))
    assert "(updated)" in text and "upscale x2 up to: 96 px" in text, text

    first = await stylize(env, content_bytes, style_bytes, **TINY)
    first_id = job_id_of(first)
    assert image_size(env, first) == (64, 42)
    limit = 8000  # the 96 px PNG is larger than this: the result is re-encoded to fit
    click = await env.fake.send_component(first["id"], f"nst:upscale:{first_id}", attachment_size_limit=limit)
    capped = await env.wait_final(click)
    content = capped["content"]
    assert "✅ Done" in content and f"upscale x2 of `{first_id}` (64x42 → 96 px)" in content, content
    assert "128 px would be above this server's largest upscale size: capped at 96 px" in content
    assert "re-encoded as JPEG" in content and "to fit 7.8 KB" in content, content
    assert len(env.attachment_bytes(capped)) <= limit and image_size(env, capped) == (96, 64)

    again = await env.fake.send_component(capped["id"], f"nst:upscale:{job_id_of(capped)}")
    text = await env.ephemeral_text(again)
    assert "⚠️ This picture (96x64 px) is already at this server's largest size, 96 px" in text, text
    assert len(refusals(caplog)) == 1 and "already at this server's largest size" in refusals(caplog)[0]
    assert len(await env.bot.queue.jobs()) == 2  # the refusal queued nothing
