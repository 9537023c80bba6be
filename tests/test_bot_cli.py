"""`nst-bot` as an admin runs it: configuration errors in one line, the token kept out of logs, and the real
process (spawned executor worker included) connecting to a fake Discord and answering its health check."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from fake_discord import FakeDiscord

from bot.config import BotConfig, ConfigError, load_config, read_token

BIN = Path(sys.executable).parent


def run_bot_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
    return subprocess.run([str(BIN / "nst-bot"), *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})}, cwd=cwd)


def test_without_a_token_it_says_what_to_do(tmp_path: Path) -> None:
    result = run_bot_cli(cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nst-bot: no Discord bot token: set DISCORD_TOKEN")
    assert "Reset Token" in lines[0] and "DISCORD_TOKEN_FILE" in lines[0]


@pytest.mark.parametrize(("toml", "expected"), [
    ("[limits]\nmax_size = 99999\n", "limits.max_size: Input should be less than or equal to 4096"),
    ("[limits]\nmax_sise = 512\n", "limits.max_sise: unknown key (see config.example.toml"),
    ("[queue]\nbackend = \"celery\"\n", "queue: backend 'celery' needs broker_url"),
    ("[discord]\ncdn_hosts = [\"https://cdn.discordapp.com\"]\n", "discord.cdn_hosts: 'https://cdn.discordapp.com' "
                                                                  "is not a host name"),
    ("[limits\n", "not valid TOML"),
])
def test_a_bad_config_stops_start_up_with_one_line_naming_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    result = run_bot_cli("--config", str(config), "check", env={"DISCORD_TOKEN": "abc.def.ghi"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert lines[0].startswith(f"nst-bot: {config}: ")


def test_token_sources_and_their_errors(tmp_path: Path) -> None:
    config = BotConfig()
    assert read_token(config, {"DISCORD_TOKEN": " tok.en \n"}) == "tok.en"
    secret = tmp_path / "secret"
    secret.write_text("file.token\n")
    assert read_token(config, {"DISCORD_TOKEN_FILE": str(secret)}) == "file.token"
    from_config = BotConfig.from_mapping({"discord": {"token_file": str(secret)}})
    assert read_token(from_config, {}) == "file.token"
    with pytest.raises(ConfigError, match="no such file"):
        read_token(config, {"DISCORD_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="does not look like a bot token"):
        read_token(config, {"DISCORD_TOKEN": "Bot abc"})
    with pytest.raises(ConfigError, match="environment variable DISCORD_API_BASE: 'localhost' is not a URL"):
        load_config(None, {"DISCORD_API_BASE": "localhost"})
    assert load_config(None, {"DISCORD_GATEWAY_URL": "ws://127.0.0.1:9/gw"}).discord.gateway_url == \
        "ws://127.0.0.1:9/gw"


def test_the_token_never_reaches_the_log(tmp_path: Path) -> None:
    token = "MTIzNDU2.secret-token.value"
    code = (f"import logging; from bot.logs import setup_logging; setup_logging('INFO', {token!r}); "
            f"log = logging.getLogger('x'); log.info('connecting with %s', {token!r})\n"
            f"try:\n    raise RuntimeError('bad url https://x/' + {token!r})\n"
            "except RuntimeError:\n    log.exception('failed')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "connecting with [token redacted]" in result.stderr and "RuntimeError: bad url" in result.stderr
    assert token not in result.stderr + result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_nst_bot_process_connects_answers_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    async with FakeDiscord(token="MTIzNDU2.real-start-up.token") as fake:
        port = free_port()
        config = tmp_path / "config.toml"
        config.write_text(f"""
[discord]
cdn_hosts = ["127.0.0.1:{fake.port}"]
[health]
port = {port}
[queue]
data_dir = "{tmp_path / 'data'}"
executor = "process"
devices = ["cpu"]
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
        env.update(DISCORD_TOKEN=fake.token, DISCORD_API_BASE=fake.api_base, DISCORD_GATEWAY_URL=fake.gateway_url,
                   OMP_NUM_THREADS="1")
        log_path = tmp_path / "bot.log"
        log_file = log_path.open("w")
        process = await asyncio.create_subprocess_exec(
            str(BIN / "nst-bot"), "--config", str(config), env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            await fake.wait_ready(timeout=90)
            identify = await fake.wait_for_gateway(2)
            assert identify.d["token"] == fake.token and identify.d["intents"] == 1  # guilds only: no privileged
            body, status = {}, 0
            deadline = time.monotonic() + 60
            async with aiohttp.ClientSession() as session:
                while time.monotonic() < deadline:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                            status, body = response.status, json.loads(await response.text())
                        if status == 200:
                            break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.2)
            assert status == 200 and body["gateway"] == "connected" and "ready" in body["queue_backend"], body
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0, log_path.read_text()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            log_file.close()
        output = log_path.read_text()
        assert "connected as nst-bot" in output and "health endpoint on" in output
        assert fake.token not in output


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_nst_bot_sync_registers_the_commands_and_exits(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
        env.update(DISCORD_TOKEN=fake.token, DISCORD_API_BASE=fake.api_base)
        config = tmp_path / "config.toml"
        config.write_text(f'[queue]\ndata_dir = "{tmp_path / "data"}"\n')
        process = await asyncio.create_subprocess_exec(
            str(BIN / "nst-bot"), "--config", str(config), "sync", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output = (await asyncio.wait_for(process.communicate(), 45))[0].decode()
        assert process.returncode == 0, output
        put = await fake.wait_for_request("PUT", r"/applications/\d+/commands$")
        assert {c["name"] for c in put.json} == {"stylize", "style", "queue", "cancel", "nst-admin",
                                                 "Stylize this image"}
        assert "synced 6 command(s) globally" in output
        assert not fake.gateway_events  # REST only: it never connected to the gateway


def test_the_bot_process_never_loads_torch() -> None:
    """Torch (and CUDA) live only in the workers: the bot validates, decodes and delivers without it."""
    code = ("import sys, bot.cli, bot.app, bot.cogs.stylize, bot.cogs.styles, bot.cogs.jobs, bot.cogs.results, "
            "bot.cogs.admin, bot.reporter, bot.shared.starter, nst_jobs.queue, nst_jobs.local; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_token_discord_refuses_stops_the_bot_with_one_line(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
        env.update(DISCORD_TOKEN="MTIz.pasted-wrong.token", DISCORD_API_BASE=fake.api_base,
                   DISCORD_GATEWAY_URL=fake.gateway_url)
        config = tmp_path / "config.toml"
        config.write_text(f'[queue]\ndata_dir = "{tmp_path / "data"}"\nexecutor = "thread"\ndevices = ["cpu"]\n')
        process = await asyncio.create_subprocess_exec(
            str(BIN / "nst-bot"), "--config", str(config), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 45)
        assert process.returncode == 2, (out + err).decode()
        last = err.decode().strip().splitlines()[-1]
        assert last.startswith("nst-bot: Discord refused the token (401); reset it in the Developer Portal")
        assert "pasted-wrong" not in (out + err).decode()
        assert [r.status for r in fake.requests if r.path == "/users/@me"] == [401]
