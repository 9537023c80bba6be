"""Moving pictures through the bot: an animated GIF or a clip in, an animation out with frame progress; the server's
animation limits (refused with the numbers, nothing queued; the size lowered, and said); the Timelapse button."""

from __future__ import annotations

import io
import logging

import av
import pytest
from bot_harness import BotEnv
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
