"""Moving pictures through the bot: an animated GIF or a clip in, an animation out with frame progress; the server's
animation limits (refused with the numbers, nothing queued; the size lowered, and said); the Timelapse button."""

from __future__ import annotations

import io
import logging
import re
import shutil
import time

import av
import pytest
from bot_harness import BotEnv, custom_ids
from fake_discord import EPHEMERAL
from PIL import Image, ImageChops

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]

#: Tiny animated jobs: 64 px frames, tens of iterations.
CLIP = {"size": 64, "iterations": 8}
FRAMES = 4


def moving_frames(photo: bytes, count: int = FRAMES, width: int = 64) -> list[Image.Image]:
    """`count` frames of the photo at `width` px, panning a few pixels a frame (something for the flow to follow)."""
    with Image.open(io.BytesIO(photo)) as img:
        base = img.convert("RGB").resize((width, round(width * img.height / img.width)))
    return [ImageChops.offset(base, 3 * i, 0) for i in range(count)]


def gif(frames: list[Image.Image], duration_ms: int = 100) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def mp4(frames: list[Image.Image], fps: int = 10) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = (frames[0].width // 2 * 2, frames[0].height // 2 * 2)
        stream.pix_fmt = "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_image(image.crop((0, 0, stream.width, stream.height)))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def decoded_frames(data: bytes) -> list[Image.Image]:
    """Every frame of an animated GIF / WebP / PNG, or of an MP4 / WebM clip."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            frames = []
            for index in range(getattr(img, "n_frames", 1)):
                img.seek(index)
                frames.append(img.convert("RGB"))
            return frames
    except Exception:  # not an image: a video
        with av.open(io.BytesIO(data)) as clip:
            return [frame.to_image() for frame in clip.decode(video=0)]


def job_id_of(message: dict) -> str:
    return message["content"].split("`")[1]


async def refused_text(env: BotEnv, payload) -> str:
    text = await env.ephemeral_text(payload, timeout=30)
    assert text.startswith("⚠️ "), text
    return text


async def test_an_animated_gif_gives_an_animation_with_frame_progress(bot_env_factory, content_bytes,
                                                                      style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    env.gate.close()  # the job goes on one iteration report at a time, each once the bot has shown it
    payload = await env.stylize(env.attachment(gif(moving_frames(content_bytes)), "cat.gif", "image/gif"),
                                env.attachment(style_bytes, "s.jpg", "image/jpeg"), size=64, iterations=20)
    assert (await env.response(payload))["type"] == 5
    message_id = env.original_id(payload)
    # Held after every iteration report until the bot has shown it. Workers skip an iteration report that follows
    # another report closely (a frame's start is one, and later frames are short), but the long first frame is
    # reported and the clip's last iteration always is: the job is seen held in the first frame and at the very end.
    shown_while_held = []
    iteration, total = 0, None
    while iteration != total:
        _, iteration = await env.gate.wait_held(beyond=iteration)
        shown = await env.wait_message(message_id, lambda m, i=iteration: f"iteration {i}/" in m["content"])
        line = shown["content"].splitlines()[-1]
        shown_while_held.append(line)
        total = int(re.search(r"iteration \d+/(\d+)", line).group(1))
        env.gate.step()
    env.gate.open()
    final = await env.wait_final(payload, timeout=120)
    assert "frame 1/4 · scale 1/1 (64x42) · iteration " in shown_while_held[0], shown_while_held
    assert f"100% · frame 4/4 · scale 1/1 (64x42) · iteration {total}/{total}" in shown_while_held[-1]
    assert total > 4 and all("%" in line for line in shown_while_held)  # one bar and one count for the whole clip
    previews = [m for m in env.fake.message_history(message_id) if "🎨" in m["content"]
                and any(a["filename"].startswith("preview-") for a in m["attachments"])]
    assert previews, "no preview rode along"
    content = final["content"]
    assert "✅ Done" in content and f"{FRAMES} frames, 0.4 s" in content, content
    assert "animation: 4 frames, 0.4 s (GIF)" in content  # the headline says what was sent
    filename = final["attachments"][0]["filename"]
    assert filename.rsplit(".", 1)[1] in ("gif", "mp4", "webp"), filename
    frames = decoded_frames(env.attachment_bytes(final))
    assert len(frames) > 1 and max(frames[0].size) == 64
    job_id = job_id_of(final)
    # neither Upscale x2 nor Timelapse: they are for photos
    assert custom_ids(final) == [f"nst:reroll:{job_id}", f"nst:more:{job_id}", f"nst:less:{job_id}"]


async def test_a_clip_over_a_server_limit_is_refused_with_the_numbers(bot_env_factory, content_bytes, style_bytes,
                                                                      caplog) -> None:
    caplog.set_level(logging.INFO)
    env: BotEnv = await bot_env_factory(limits={"max_clip_frames": 3})
    style = env.attachment(style_bytes, "s.jpg", "image/jpeg")
    four = gif(moving_frames(content_bytes), duration_ms=100)  # 4 frames, 0.4 s
    payload = await env.stylize(env.attachment(four, "cat.gif", "image/gif"), style, **CLIP)
    text = await refused_text(env, payload)
    assert "Content clip has 4 frames; the limit is 3. Trim it, or lower its frame rate, to 3 frames or fewer" in text
    assert env.fake.interactions[payload["token"]].original_message is None  # the public "thinking" reply is gone

    # the server's admin lowers the length: 0.3 s
    settings = await env.fake.send_interaction("nst-admin", [{"type": 1, "name": "settings", "options": [
        {"name": "max_clip_seconds", "type": 10, "value": 0.3}, {"name": "max_clip_frames", "type": 4, "value": 0}]}])
    shown = await env.ephemeral_text(settings)
    assert "animations: at most 3 frames (bot limit) and 0.3 s, made at 256 px (bot limit)" in shown, shown
    three = gif(moving_frames(content_bytes, count=3), duration_ms=200)  # 3 frames (allowed), 0.6 s (not)
    payload = await env.stylize(env.attachment(three, "cat.gif", "image/gif"), style, **CLIP)
    text = await refused_text(env, payload)
    assert "Content clip lasts 0.6 s; the limit is 0.3 s. Trim it to 0.3 s or less and send it again." in text
    assert not await env.bot.queue.jobs()  # nothing was queued
    assert "refused /stylize" in caplog.text and "after download" in caplog.text


async def test_a_damaged_clip_or_a_clip_as_style_is_refused_saying_why(bot_env_factory, content_bytes,
                                                                      style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    style = env.attachment(style_bytes, "s.jpg", "image/jpeg")
    whole_gif, whole_mp4 = gif(moving_frames(content_bytes)), mp4(moving_frames(content_bytes))
    cases = [
        (env.attachment(whole_gif[:len(whole_gif) // 2], "cat.gif", "image/gif", width=64, height=42),
         "of the content clip is cut off; the file may be truncated"),
        (env.attachment(whole_mp4[:len(whole_mp4) // 2], "cat.mp4", "video/mp4"),
         "Content clip cannot be read as MP4 (the file is damaged or truncated)"),
        (env.attachment(b"not a video at all", "cat.mkv", "video/x-matroska"),
         "Content image (cat.mkv) is video/x-matroska, not an image; send PNG, JPEG, WebP, GIF, BMP or TIFF, or an "
         "animated GIF, WebP or PNG, or an MP4, WebM or MOV clip"),
    ]
    for content, expected in cases:
        text = await refused_text(env, await env.stylize(content, style, **CLIP))
        assert expected in text, text
    clip_as_style = env.attachment(whole_mp4, "cat.mp4", "video/mp4")  # the style is always a still
    text = await refused_text(env, await env.stylize(env.attachment(content_bytes), clip_as_style, **CLIP))
    assert "Style image (cat.mp4) is video/mp4, not an image; send PNG, JPEG, WebP, GIF, BMP or TIFF" in text, text
    assert not await env.bot.queue.jobs()  # nothing was queued


async def test_an_animation_is_made_at_the_servers_animation_size(bot_env_factory, content_bytes,
                                                                  style_bytes) -> None:
    env: BotEnv = await bot_env_factory(limits={"max_clip_size": 48})
    payload = await env.stylize(env.attachment(gif(moving_frames(content_bytes)), "cat.gif", "image/gif"),
                                env.attachment(style_bytes, "s.jpg", "image/jpeg"), **CLIP)
    final = await env.wait_final(payload, timeout=120)
    assert "✅ Done" in final["content"], final["content"]
    assert "size lowered from 64 px to 48 px, this server's size for animations" in final["content"]
    frames = decoded_frames(env.attachment_bytes(final))
    assert len(frames) > 1 and max(frames[0].size) == 48

    # Re-roll on an animation: the same clip again, at the same size
    job_id = job_id_of(final)
    rerolled = await env.wait_final(await env.fake.send_component(final["id"], f"nst:reroll:{job_id}"),
                                    timeout=120)
    assert "✅ Done" in rerolled["content"] and f"re-roll (new seed) of `{job_id}`" in rerolled["content"]
    frames = decoded_frames(env.attachment_bytes(rerolled))
    assert len(frames) > 1 and max(frames[0].size) == 48


async def test_an_animation_discord_refuses_as_too_large_is_reencoded_smaller(bot_env_factory, content_bytes,
                                                                             style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    clip = gif(moving_frames(content_bytes))
    first = await env.wait_final(await env.stylize(env.attachment(clip, "cat.gif", "image/gif"),
                                                   env.attachment(style_bytes, "s.jpg", "image/jpeg"), **CLIP,
                                                   seed=3), timeout=120)
    size = len(env.attachment_bytes(first))
    env.gate.close()
    payload = await env.stylize(env.attachment(clip, "cat.gif", "image/gif"),
                                env.attachment(style_bytes, "s.jpg", "image/jpeg"), **CLIP, seed=3)
    await env.response(payload)
    await env.gate.wait_held()
    # the same job again, but Discord now takes less than the limit it told the bot (the engine fitted to that)
    env.fake.interactions[payload["token"]].size_limit = limit = size * 7 // 10
    env.gate.open()
    final = await env.wait_final(payload, timeout=120)
    assert "✅ Done" in final["content"] and "to fit" in final["content"], final["content"]
    data = env.attachment_bytes(final)
    assert len(data) <= limit and len(decoded_frames(data)) > 1
    assert any(r.status == 413 for r in env.fake.requests)  # refused once, then re-encoded smaller


async def test_an_mp4_in_a_message_through_the_menu(bot_env_factory, content_bytes, style_bytes) -> None:
    # the menu has no options: the default preset (fast: 256 px), lowered to the animation size (kept tiny here)
    env: BotEnv = await bot_env_factory(limits={"max_clip_size": 48, "max_iterations": 6})
    style = env.attachment(style_bytes, "s.jpg", "image/jpeg")
    saved = await env.fake.send_interaction("style", [{"type": 1, "name": "save", "options": [
        {"name": "name", "type": 3, "value": "starry"}, {"name": "image", "type": 11, "value": style["id"]}]}],
        attachments=[style])
    await env.fake.wait_for_request("POST", rf"/webhooks/\d+/{saved['token']}$", timeout=15)
    clip = env.attachment(mp4(moving_frames(content_bytes)), "cat.mp4", "video/mp4")
    message = env.fake.post_user_message("my cat, moving", [clip])
    menu = await env.fake.send_message_command("Stylize this image", message)
    await env.fake.wait_for_response(menu)
    picker_id = env.fake.interactions[menu["token"]].original_id
    select = env.fake.components_of(picker_id)[0]
    pick = await env.fake.send_component(picker_id, select["custom_id"], component_type=3, values=["starry"])
    final = await env.wait_final(pick, timeout=120)
    assert "✅ Done" in final["content"], final["content"]
    assert "(MP4)" in final["content"] and "size lowered from 256 px to 48 px" in final["content"]
    assert len(decoded_frames(env.attachment_bytes(final))) > 1


async def test_the_timelapse_button_shows_how_a_still_took_shape(bot_env_factory, content_bytes,
                                                                 style_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    payload = await env.stylize(env.attachment(content_bytes), env.attachment(style_bytes, "s.jpg", "image/jpeg"),
                                size=64, iterations=30)
    final = await env.wait_final(payload)
    job_id = job_id_of(final)
    assert f"nst:timelapse:{job_id}" in custom_ids(final)
    viewer = env.fake.add_user("curious")  # anyone in the channel may look; only they see it
    click = await env.fake.send_component(final["id"], f"nst:timelapse:{job_id}", user=viewer)
    response = await env.response(click)
    assert response["type"] == 5 and response["data"]["flags"] & EPHEMERAL
    shown = await env.wait_message(env.original_id(click), lambda m: bool(m["attachments"]), timeout=15)
    assert shown["flags"] & EPHEMERAL and f"Timelapse of `{job_id}`" in shown["content"]
    assert shown["attachments"][0]["filename"].endswith(".gif")
    with Image.open(io.BytesIO(env.attachment_bytes(shown))) as img:
        assert img.format == "GIF" and img.n_frames > 1
    assert env.fake.last_edit_of(final["id"])["content"] == final["content"]  # the public result is untouched

    # once the job's files are gone, the button says so: the files alone, then the job too (the retention purge)
    shutil.rmtree(env.bot.queue.store.job_dir(job_id))
    click = await env.fake.send_component(final["id"], f"nst:timelapse:{job_id}")
    await env.response(click)
    said = await env.wait_message(env.original_id(click), lambda m: "⚠️" in m["content"], timeout=15)
    assert said["flags"] & EPHEMERAL and not said["attachments"]
    assert f"timelapse of job {job_id} was deleted" in said["content"] and "kept 72 hours" in said["content"]
    await env.bot.queue.store.purge(time.time() + 1)
    click = await env.fake.send_component(final["id"], f"nst:timelapse:{job_id}")
    text = await env.ephemeral_text(click)
    assert f"timelapse of job {job_id} was deleted" in text, text


async def test_a_one_frame_gif_is_a_still_and_an_animated_style_a_still_style(bot_env_factory,
                                                                                content_bytes) -> None:
    env: BotEnv = await bot_env_factory()
    still = gif(moving_frames(content_bytes, count=1))
    style = [Image.new("RGB", (96, 64), c) for c in ((250, 200, 0), (0, 0, 255))]
    payload = await env.stylize(env.attachment(still, "cat.gif", "image/gif"),
                                env.attachment(gif(style), "style.gif", "image/gif"), size=64, iterations=6)
    final = await env.wait_final(payload)
    assert "✅ Done" in final["content"] and "frames" not in final["content"], final["content"]
    with Image.open(io.BytesIO(env.attachment_bytes(final))) as img:
        assert img.format == "PNG" and getattr(img, "n_frames", 1) == 1
