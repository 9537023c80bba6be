"""Restarts as an operator does them (`docker stop`, a crash), on the real `nst-bot` process against the fake Discord.

SIGTERM drains the bot: no new job is taken (the member is told to try again in a minute), the waiting job stays
queued and its reply says so, the running job finishes and is delivered before the process exits 0, or, past
`queue.drain_seconds`, is stopped, goes back in the queue and runs again after the restart; a second signal stops at
once. A bot killed between posting a result in the channel and recording it posts it once, not twice. Jobs are held
at a gate (tests/gates.py), never made slow.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bot_harness import add_image, is_final, send_stylize, wait_message
from bot_process import BotProcess
from fake_discord import EPHEMERAL, FakeDiscord
from gates import Gate

from bot.shared.nonces import MAX_NONCE_LENGTH

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(400)]

HELD = {"size": 64, "iterations": 12}
RESTARTING = "🔄 The bot is restarting."


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token="MTIz.restart-test.token") as fake:
        yield fake


@pytest_asyncio.fixture
async def bots(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Any]:
    """`make(**config_sections)` -> a BotProcess (not started); every process is killed afterwards."""
    made: list[BotProcess] = []

    def make(**sections: dict[str, Any]) -> BotProcess:
        folder = tmp_path / f"bot{len(made)}"
        folder.mkdir()
        bot = BotProcess(fake, folder, Gate(folder / "gate"), **sections)
        made.append(bot)
        return bot

    try:
        yield make
    finally:
        for bot in made:
            bot.gate.open()
            bot.kill()


async def stylize(fake: FakeDiscord, content: bytes, style: bytes, **kwargs: Any) -> dict[str, Any]:
    payload = await send_stylize(fake, add_image(fake, content), add_image(fake, style, "s.jpg", "image/jpeg"),
                                 **kwargs)
    await fake.wait_for_response(payload, timeout=30)
    return payload


def reply_id(fake: FakeDiscord, payload: dict[str, Any]) -> str:
    original = fake.interactions[payload["token"]].original_id
    assert original is not None, "the bot did not respond"
    return original


async def start_held_job(bot: BotProcess, content: bytes, style: bytes, **kwargs: Any) -> tuple[dict[str, Any], str]:
    """A job that runs, held at the gate after its first iteration report, until the test opens the gate."""
    bot.gate.close()
    payload = await stylize(bot.fake, content, style, **HELD, **kwargs)
    msg = await wait_message(bot.fake, reply_id(bot.fake, payload), lambda m: "🎨 `[" in m["content"])
    return payload, msg["content"].split("`")[1]


def deliveries(fake: FakeDiscord, job_id: str) -> list[dict[str, Any]]:
    """Every message (reply or channel post, as it is now) that shows job `job_id`'s result."""
    return [m for m in fake.messages.values() if "✅ Done" in m["content"] and f"`{job_id}`" in m["content"]]


def row(bot: BotProcess, job_id: str) -> dict[str, Any]:
    return next(r for r in bot.job_rows() if r["id"] == job_id)


async def test_sigterm_past_drain_seconds_exits_0_and_the_job_runs_again_after_the_restart(
        bots, fake, content_bytes, style_bytes) -> None:
    bot: BotProcess = bots(queue={"executor": "process", "drain_seconds": 1})
    await bot.start()
    payload, job_id = await start_held_job(bot, content_bytes, style_bytes)
    bot.signal(signal.SIGTERM)  # the job stays held: it cannot finish within drain_seconds
    assert await bot.wait_exit() == 0, bot.text()
    reply = fake.messages[reply_id(fake, payload)]["content"]
    assert RESTARTING in reply and "starts again from the beginning after the restart" in reply, reply
    stopped = row(bot, job_id)
    assert stopped["state"] == "queued" and stopped["attempts"] == 0 and stopped["delivered_at"] is None
    assert "drain over (1 s passed): stopping 1 job(s) still running" in bot.text()

    bot.gate.open()
    await bot.start()  # the restarted bot runs it again, in the same reply
    final = await wait_message(fake, reply_id(fake, payload), is_final)
    assert "✅ Done" in final["content"] and final["attachments"], final["content"]
    assert len(deliveries(fake, job_id)) == 1 and not fake.messages_in_channel()
    done = row(bot, job_id)
    assert done["state"] == "done" and done["attempts"] == 1 and done["delivered_at"] is not None

    began = time.monotonic()
    bot.signal(signal.SIGTERM)  # nothing running: no drain to wait for
    assert await bot.wait_exit() == 0
    print(f"SIGTERM with nothing running: exited in {time.monotonic() - began:.2f} s")


async def test_sigterm_lets_the_running_job_finish_and_keeps_the_waiting_one_queued(
        bots, fake, content_bytes, style_bytes) -> None:
    bot: BotProcess = bots(queue={"executor": "process", "drain_seconds": 600})
    await bot.start()
    running, running_id = await start_held_job(bot, content_bytes, style_bytes)
    waiting = await stylize(fake, content_bytes, style_bytes, user=fake.add_user("second"), **HELD)
    await wait_message(fake, reply_id(fake, waiting), lambda m: "⏳ Waiting" in m["content"])
    waiting_id = fake.messages[reply_id(fake, waiting)]["content"].split("`")[1]

    bot.signal(signal.SIGTERM)
    note = await wait_message(fake, reply_id(fake, waiting), lambda m: RESTARTING in m["content"])
    assert "stays in the queue and starts after the restart" in note["content"], note["content"]
    asked = await stylize(fake, content_bytes, style_bytes, user=fake.add_user("third"), **HELD)
    answer = fake.interactions[asked["token"]].response
    assert answer is not None and answer["type"] == 4 and answer["data"]["flags"] & EPHEMERAL
    assert "restarting right now: please try again in a minute" in answer["data"]["content"], answer

    bot.gate.open()  # the running job can finish now: it is delivered before the process exits
    assert await bot.wait_exit() == 0, bot.text()
    assert "✅ Done" in fake.messages[reply_id(fake, running)]["content"]
    assert len(deliveries(fake, running_id)) == 1 and row(bot, running_id)["delivered_at"] is not None
    held_back = row(bot, waiting_id)
    assert held_back["state"] == "queued" and held_back["started_at"] is None  # it never started during the drain
    assert RESTARTING in fake.messages[reply_id(fake, waiting)]["content"]
    assert len(bot.job_rows()) == 2  # the third member's request was not queued

    # The restart runs the waiting job; a second SIGTERM during its drain stops at once, and it is not lost.
    bot.gate.close()
    await bot.start()
    await wait_message(fake, reply_id(fake, waiting), lambda m: "🎨 `[" in m["content"])
    bot.signal(signal.SIGTERM)
    await bot.wait_log("draining: no new jobs")
    bot.signal(signal.SIGTERM)
    assert await bot.wait_exit() == 128 + signal.SIGTERM, bot.text()
    assert "drain over (a second signal)" in bot.text()
    again = row(bot, waiting_id)
    assert again["state"] == "queued" and again["attempts"] == 0

    bot.gate.open()
    await bot.start()
    final = await wait_message(fake, reply_id(fake, waiting), is_final)
    assert "✅ Done" in final["content"] and len(deliveries(fake, waiting_id)) == 1
    assert not fake.messages_in_channel()
    bot.signal(signal.SIGTERM)
    assert await bot.wait_exit() == 0


async def test_a_crash_between_posting_the_result_and_recording_it_posts_the_result_once(
        bots, fake, content_bytes, style_bytes, tmp_path) -> None:
    bot: BotProcess = bots(progress={"token_fallback_seconds": 1})
    crashed = tmp_path / "crashed"
    await bot.start(crash_before_record=crashed)
    _, job_id = await start_held_job(bot, content_bytes, style_bytes)
    await asyncio.sleep(1.2)  # the reply's token fallback deadline (1 s after the command) passes
    bot.gate.step()  # the next progress edit moves the job to a channel message
    moved = []
    while not moved:
        moved = [m for m in fake.messages_in_channel() if f"`{job_id}`" in m["content"]]
        await asyncio.sleep(0.05)
    bot.gate.open()  # the result is posted in the channel; the bot dies before it records the delivery
    assert await bot.wait_exit() == -signal.SIGKILL, bot.text()
    assert crashed.read_text() == job_id
    assert len(deliveries(fake, job_id)) == 1 and row(bot, job_id)["delivered_at"] is None

    await bot.start()  # delivers the job again, with the same nonce: Discord gives the first message back
    deadline = time.monotonic() + 60
    while row(bot, job_id)["delivered_at"] is None:
        assert time.monotonic() < deadline, bot.text()
        await asyncio.sleep(0.1)
    [result] = deliveries(fake, job_id)
    assert result["channel_id"] == fake.channel_id and result["attachments"] and result["nonce"] == f"{job_id}.o0"
    assert [m["id"] for m in fake.messages_in_channel()] == [result["id"]]  # the progress message is gone
    posts = [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{fake.channel_id}/messages"]
    outcome_posts = [r for r in posts if (r.payload or {}).get("nonce") == f"{job_id}.o0"]
    assert len(outcome_posts) == 2 and all(r.status == 200 for r in outcome_posts)  # sent twice, shown once
    assert all(len(r.payload["nonce"]) <= MAX_NONCE_LENGTH and r.payload["enforce_nonce"] for r in posts)
    bot.signal(signal.SIGTERM)
    assert await bot.wait_exit() == 0
