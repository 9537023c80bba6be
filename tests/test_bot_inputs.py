"""Every bad input gets its own clear ephemeral message, a log line, and the bot carries on."""

from __future__ import annotations

import io
import logging

import pytest
from bot_harness import BotEnv
from PIL import Image

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

TINY = {"size": 64, "iterations": 6}


def png(width: int, height: int, color=(120, 30, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


async def refused(env: BotEnv, payload) -> str:
    text = await env.ephemeral_text(payload)
    assert text.startswith("⚠️ "), text
    return text[2] + text[3].lower() + text[4:]  # "⚠️ Content image ..." -> " content image ..." as the engine says


async def assert_still_works(env: BotEnv, content_bytes: bytes, style_bytes: bytes) -> None:
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                **TINY)
    final = await env.wait_final(payload)
    assert "✅ Done" in final["content"]


async def test_each_bad_input_has_its_own_message(bot_env_factory, content_bytes, style_bytes, caplog) -> None:
    caplog.set_level(logging.INFO)
    env: BotEnv = await bot_env_factory(limits={"max_attachment_bytes": 60_000, "max_input_pixels": 200_000})
    style = env.attachment(style_bytes, "s.jpg", "image/jpeg")
    cases = [
        # (content attachment, options, expected words)
        (env.attachment(b"hello", "notes.txt", "text/plain"), {}, "content image (notes.txt) is text/plain, not an "
                                                                  "image"),
        (env.attachment(b"x" * 70_000, "huge.png", "image/png", width=100, height=100), {},
         "content image is 68.4 KB; the limit is 58.6 KB"),
        (env.attachment(b"x" * 1000, "wide.png", "image/png", width=1000, height=1000), {},
         "content image is 1000x1000 px (1.0 MP); the limit is 0.2 MP"),
        (env.attachment(content_bytes), {"size": 5000}, "size=5000 is not allowed; allowed range: 32 to 4096"),
        (env.attachment(content_bytes), {"style_weight": -1.0}, "style_weight=-1.0 is not allowed"),
        (env.attachment(content_bytes), {"preset": "ultra"}, "preset='ultra' is not allowed; allowed: fast, "
                                                             "balanced, best"),
        (env.attachment(content_bytes), {"size": 2000}, "size=2000 is not allowed; this server allows at most "
                                                        "1024 px"),
    ]
    for attachment, options, expected in cases:
        payload = await env.stylize(attachment, style, **options)
        assert expected in await refused(env, payload), expected
    assert "refused /stylize" in caplog.text
    await assert_still_works(env, content_bytes, style_bytes)


async def test_bad_bytes_after_download_replace_the_thinking_reply(bot_env_factory, content_bytes,
                                                                   style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    style = env.attachment(style_bytes, "s.jpg", "image/jpeg")
    cases = [
        (b"%PDF-1.4 not really", "content image is a PDF file; send PNG, JPEG, WebP, GIF, BMP or TIFF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "content image is an SVG file"),
        (png(128, 85)[:200], "content image could not be decoded (the file is damaged or truncated)"),
        (png(2000, 16), "the result would be 64x1 px"),
    ]
    for data, expected in cases:
        payload = await env.stylize(env.attachment(data, "photo.png", "image/png", width=None, height=None), style,
                                    **TINY)
        assert (await env.response(payload))["type"] == 5  # deferred: the download needed it
        text = await refused(env, payload)
        assert expected in text, text
        assert env.fake.interactions[payload["token"]].original_message is None  # the public reply is gone
    assert not await env.bot.queue.jobs()  # nothing was queued


async def test_missing_or_doubled_style(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    payload = await env.stylize(env.attachment(content_bytes), None, **TINY)
    assert "attach a style image" in await refused(env, payload)
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                saved_style="monet", **TINY)
    assert "either a style image or a saved_style, not both" in await refused(env, payload)
    payload = await env.stylize(env.attachment(content_bytes), None, saved_style="monet", **TINY)
    assert "no saved style named “monet”" in await refused(env, payload)


async def test_per_user_cap_and_full_queue(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory(queue={"per_user_cap": 1, "global_cap": 2}, limits={"cooldown_seconds": 0})

    def send(user=None, **options):
        return env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                           user=user, **{**{"size": 64, "iterations": 12}, **options})

    env.gate.close()  # the first job stays running (held after its first iteration) until the caps were checked
    first = await send()
    await env.wait_message((await env.response(first)) and env.original_id(first), lambda m: "`" in m["content"])
    assert "you already have 1 job waiting or running (this server allows 1)" in await refused(env, await send())
    other, third = env.fake.add_user("other"), env.fake.add_user("third")
    second = await send(user=other)
    await env.response(second)
    await env.wait_message(env.original_id(second), lambda m: "`" in m["content"])
    full = await send(user=third)
    assert "the queue is full (2 jobs waiting or running)" in await refused(env, full)
    assert (await env.response(full))["type"] == 4  # refused at once, before deferring
    env.gate.open()
    await env.wait_final(first)
    await env.wait_final(second)


async def test_cooldown_between_two_jobs(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory(limits={"cooldown_seconds": 60})
    first = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                              **TINY)
    await env.wait_final(first)
    again = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                              **TINY)
    text = await refused(env, again)
    assert "you can start another job in" in text and "(cooldown)" in text


async def test_a_job_that_fails_says_why(bot_env_factory, content_bytes, style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    env.gate.close()  # the first job stays running (held after its first iteration) while the second waits
    first = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                              size=64, iterations=12)
    await env.response(first)
    await env.wait_message(env.original_id(first), lambda m: "🎨" in m["content"])
    other = env.fake.add_user("other")
    second = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                               user=other, **TINY)
    await env.response(second)
    waiting = await env.wait_message(env.original_id(second), lambda m: "⏳" in m["content"])
    job_id = waiting["content"].split("`")[1]
    (env.data_dir / "jobs" / job_id / "content").unlink()  # e.g. removed by a disk clean-up while it waited
    env.gate.open()
    final = await env.wait_final(second)
    assert "❌ Failed: the job's input files are gone" in final["content"]
    assert final["attachments"] == [] and not final["components"]
    private = await env.ephemeral_text(second)  # and the requester alone is told why and what to do
    assert f"Your style transfer `{job_id}` failed: the job's input files are gone" in private
    await env.wait_final(first)


async def test_downloads_only_from_allowed_hosts_and_never_past_the_byte_cap(bot_env_factory, content_bytes,
                                                                             style_bytes) -> None:
    env: BotEnv = await bot_env_factory(limits={"max_attachment_bytes": 25_000})
    style = env.attachment(style_bytes, "s.jpg", "image/jpeg")
    elsewhere = env.attachment(content_bytes)
    elsewhere["url"] = elsewhere["url"].replace("127.0.0.1", "localhost")  # same server, host not on the list
    payload = await env.stylize(elsewhere, style, **TINY)
    assert "content image is not on Discord's CDN (localhost)" in await refused(env, payload)
    assert not [r for r in env.fake.requests if r.path.startswith("/cdn/") and elsewhere["id"] in r.path]

    big = png(400, 400, (10, 200, 30)) + b"\0" * 30_000  # a valid PNG followed by padding: 30 KB on the wire
    lying = env.attachment(big, "small.png", "image/png", width=400, height=400)
    lying["size"] = 5_000  # the metadata says 5 KB
    payload = await env.stylize(lying, style, **TINY)
    text = await refused(env, payload)
    assert "content image is 30." in text and "the limit is 24.4 KB" in text, text  # caught on the wire
    assert not await env.bot.queue.jobs()
