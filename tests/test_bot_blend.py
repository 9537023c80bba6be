"""/stylize with a second style: the blend reaches the engine, the headline names both styles, the result buttons
keep both, and every wrong combination gets its own clear refusal with nothing queued."""

from __future__ import annotations

import pytest
from bot_harness import BotEnv

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

TINY = {"size": 64, "iterations": 6}


def job_id_of(message: dict) -> str:
    return message["content"].split("`")[1]


async def refused(env: BotEnv, payload) -> str:
    text = await env.ephemeral_text(payload)
    assert text.startswith("⚠️ "), text
    return text


async def save_wave(env: BotEnv, wave_bytes: bytes) -> None:
    att = env.attachment(wave_bytes, "wave.jpg", "image/jpeg")
    saved = await env.fake.send_interaction("style", [{"type": 1, "name": "save", "options": [
        {"name": "name", "type": 3, "value": "Wave"}, {"name": "image", "type": 11, "value": att["id"]}]}],
        attachments=[att])
    req = await env.fake.wait_for_request("POST", rf"/webhooks/\d+/{saved['token']}$", timeout=15)
    assert "Saved style “wave”" in req.payload["content"]


async def test_two_styles_blend_and_the_buttons_keep_both(bot_env_factory, content_bytes, style_bytes,
                                                          wave_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    await save_wave(env, wave_bytes)
    typed = await env.fake.send_autocomplete("stylize", [
        {"name": "content", "type": 11, "value": "0"},
        {"name": "saved_style2", "type": 3, "value": "wa", "focused": True}])
    assert (await env.fake.wait_for_response(typed))["data"]["choices"] == [{"name": "wave", "value": "wave"}]

    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "starry.jpg", "image/jpeg"),
                                saved_style2="wave", blend=0.3, **TINY)
    final = await env.wait_final(payload)
    assert "✅ Done" in final["content"] and final["attachments"], final["content"]
    assert "styles “starry.jpg” (70 %) and “wave” (30 %)" in final["content"]
    job_id = job_id_of(final)
    job = await env.bot.queue.get(job_id)
    assert job.style_count == 2 and job.params["style_blend"] == [0.7, 0.3]
    inputs = await env.bot.queue.inputs(job_id)
    assert list(inputs.styles) == [style_bytes, wave_bytes]  # both images, in order

    for action, words in (("reroll", f"re-roll (new seed) of `{job_id}`"), ("more", "more style (style 10)")):
        click = await env.fake.send_component(final["id"], f"nst:{action}:{job_id}")
        again = await env.wait_final(click)
        assert "✅ Done" in again["content"] and words in again["content"], again["content"]
        assert "2 styles (70 % and 30 %)" in again["content"]
        follow = await env.bot.queue.inputs(job_id_of(again))
        assert follow.params["style_blend"] == [0.7, 0.3]
        assert list(follow.styles) == [style_bytes, wave_bytes]


async def test_second_style_attachment_defaults_to_an_even_blend(bot_env_factory, content_bytes, style_bytes,
                                                                 wave_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "starry.jpg", "image/jpeg"),
                                style2=env.attachment(wave_bytes, "wave.jpg", "image/jpeg"), **TINY)
    final = await env.wait_final(payload)
    assert "styles “starry.jpg” (50 %) and “wave.jpg” (50 %)" in final["content"], final["content"]
    assert (await env.bot.queue.get(job_id_of(final))).params["style_blend"] == [0.5, 0.5]


async def test_each_wrong_second_style_has_its_own_refusal(bot_env_factory, content_bytes, style_bytes,
                                                           wave_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    await save_wave(env, wave_bytes)
    style = env.attachment(style_bytes, "starry.jpg", "image/jpeg")
    wave = env.attachment(wave_bytes, "wave.jpg", "image/jpeg")
    cases = [
        ({"blend": 0.3}, "Blend needs a second style: add style2 or saved_style2"),
        ({"style2": wave, "saved_style2": "wave"}, "Give either a style2 image or a saved_style2, not both"),
        ({"style2": wave, "blend": 1.5}, "blend=1.5 is not allowed; allowed range: 0 to 1"),
        ({"saved_style2": "monet"}, "no saved style named “monet”"),
        ({"style2": env.attachment(b"hello", "notes.txt", "text/plain")},
         "Style 2 image (notes.txt) is text/plain, not an image"),
    ]
    for options, expected in cases:
        style2 = options.pop("style2", None)
        payload = await env.stylize(env.attachment(content_bytes), style, style2=style2, **options, **TINY)
        assert expected in await refused(env, payload), expected
    assert not await env.bot.queue.jobs()  # nothing was queued


async def test_blend_option_has_discords_range(bot_env_factory) -> None:
    env: BotEnv = await bot_env_factory()
    put = next(r for r in env.fake.requests if r.method == "PUT" and r.path.endswith("/commands"))
    options = {o["name"]: o for o in next(c for c in put.json if c["name"] == "stylize")["options"]}
    assert (options["blend"]["min_value"], options["blend"]["max_value"]) == (0, 1)
    assert options["saved_style2"]["autocomplete"] and options["style2"]["type"] == 11
