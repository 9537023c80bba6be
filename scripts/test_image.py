"""The container image, tested for real: `scripts/test-image` builds it and checks the bot running inside it.

tests/test_deploy_files.py keeps the Dockerfile and compose.yaml honest without an engine; this runs the image as an
operator would. It builds with Docker or podman, starts `tests/fake_discord.py` here on 127.0.0.1 and runs the bot
in the image on the host network against it, then checks from outside: /healthz and /metrics, one /stylize
delivered, /data writable by the image's user, SIGTERM (`stop -t GRACE`, compose's grace period) exiting 0 in time,
the job table kept in its volume across a restart (a second container on the same volume), and the image's
HEALTHCHECK going healthy, then unhealthy once the fake gateway stops. Each check prints one line, PASS or FAIL
with its figures; every check runs, and the exit status is 1 when any failed. Containers, the volume and the
temporary files are removed however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from container_engine import Engine, EngineError, choose_engine  # noqa: E402
from fake_discord import FakeDiscord  # noqa: E402  (tests/ is not a package)

DEFAULT_TAG = "nst-discord:test"
TOKEN = "MTIzNDU2.image-test.token"
METRIC = "nst_jobs_submitted_total"
CONTENT = ROOT / "tests" / "data" / "chelsea_128.png"
STYLE = ROOT / "tests" / "data" / "starry_night_128.jpg"
#: /stylize options: small and few iterations, so the job ends in seconds on two CPU cores
STYLIZE_OPTIONS = {"preset": "fast", "size": 64, "iterations": 10}
READY_TIMEOUT_S = 180.0  # the container's start until /healthz answers 200 (the worker imports torch)
JOB_TIMEOUT_S = 120.0
HEALTH_TIMEOUT_S = 90.0
FINAL_MARKS = ("✅", "❌", "🛑")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    figures: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.figures}"


class CheckFailed(Exception):
    """A check's verdict: the message is its figures."""


# ---------------------------------------------------------------------------------------------------- the bot


@dataclass
class Run:
    """One run of the script: the engine, the image, the fake Discord and what it made (removed in `cleanup`)."""

    engine: Engine
    image: str
    fake: FakeDiscord
    workdir: Path
    health_port: int
    grace_s: int
    volume: str = ""
    containers: list[str] = field(default_factory=list)

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def write_config(self) -> Path:
        path = self.workdir / "config.toml"
        path.write_text(f"""\
[discord]
cdn_hosts = ["127.0.0.1:{self.fake.port}"]
[limits]
cooldown_seconds = 0
[progress]
edit_interval_seconds = 1.0
[health]
port = {self.health_port}
[queue]
data_dir = "/data"
devices = ["cpu"]
""")
        path.chmod(0o644)  # read by the image's user
        return path

    async def start_bot(self, suffix: str) -> str:
        """Start the bot's container (as compose does: --init, the data volume, the config mounted) and wait until
        its /healthz answers 200; the container's name is the last of `containers`."""
        for earlier in self.containers:  # stopped, or a failed start: nothing else answers on the health port
            await self.remove(earlier)
        name = f"nst-test-image-{os.getpid()}-{suffix}"
        self.containers.append(name)
        await self.engine.run(
            "run", "-d", "--name", name, "--network", "host", "--init",
            "-v", f"{self.volume}:/data", "-v", f"{self.write_config()}:/config/config.toml:ro",
            "-e", f"DISCORD_TOKEN={self.fake.token}", "-e", f"DISCORD_API_BASE={self.fake.api_base}",
            "-e", f"DISCORD_GATEWAY_URL={self.fake.gateway_url}",
            "-e", f"NST_HEALTHCHECK_URL={self.health_url}/healthz",
            *await self.engine.health_options(self.image), self.image)
        return f"{name}: /healthz 200 {await self.wait_healthz(name):.1f} s after `{self.engine.name} run`"

    async def wait_healthz(self, container: str) -> float:
        """Seconds until /healthz answered 200; CheckFailed if the container stopped or time ran out."""
        start = time.monotonic()
        last = "no answer"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - start < READY_TIMEOUT_S:
                try:
                    async with session.get(f"{self.health_url}/healthz") as response:
                        if response.status == 200:
                            return time.monotonic() - start
                        last = f"{response.status} {await response.text()}"
                except aiohttp.ClientError as exc:
                    last = type(exc).__name__
                state = await self.engine.state(container)
                if not state.get("Running"):
                    raise CheckFailed(f"{container} stopped (exit {state.get('ExitCode')}) before /healthz said 200")
                await asyncio.sleep(0.5)
        raise CheckFailed(f"/healthz not 200 within {READY_TIMEOUT_S:.0f} s; last: {last}")

    async def shell(self, container: str, script: str) -> str:
        return await self.engine.run("exec", container, "sh", "-c", script)

    async def logs(self, container: str) -> str:
        return await self.engine.run("logs", "--tail", "25", container, check=False, merge_stderr=True)

    async def remove(self, container: str) -> None:
        await self.engine.run("rm", "-f", "-v", container, check=False)  # -v: its anonymous /models volume too

    async def cleanup(self) -> None:
        for name in self.containers:
            await self.remove(name)
        if self.volume:
            await self.engine.run("volume", "rm", "-f", self.volume, check=False)


# ---------------------------------------------------------------------------------------------------- the checks


async def check_healthz(run: Run) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{run.health_url}/healthz") as response:
        status, body = response.status, json.loads(await response.text())
    if status != 200 or body.get("gateway") != "connected":
        raise CheckFailed(f"{status} {body}")
    return (f"200, gateway {body['gateway']}, latency {body.get('latency_ms')} ms, "
            f"backend {body.get('queue_backend')!r}")


async def check_metrics(run: Run) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{run.health_url}/metrics") as response:
        status, body = response.status, await response.text()
    figures = f"{status}, {len(body)} bytes, {METRIC} {'present' if METRIC in body else 'absent'}"
    if status != 200 or METRIC not in body:
        raise CheckFailed(figures)
    return figures


def attachment(fake: FakeDiscord, path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        width, height, mime = img.width, img.height, Image.MIME[img.format or "PNG"]
    return fake.add_attachment(data, path.name, mime, width=width, height=height)


async def check_stylize(run: Run, job: dict[str, str]) -> str:
    """One /stylize from the fake's member, through to the delivered picture; the job's id goes into `job`."""
    fake = run.fake
    content, style = attachment(fake, CONTENT), attachment(fake, STYLE)
    kinds = {str: 3, int: 4}
    options = [{"name": "content", "type": 11, "value": content["id"]},
               {"name": "style", "type": 11, "value": style["id"]},
               *({"name": k, "type": kinds[type(v)], "value": v} for k, v in STYLIZE_OPTIONS.items())]
    start = time.monotonic()
    payload = await fake.send_interaction("stylize", options, attachments=[content, style])
    response = await fake.wait_for_response(payload, timeout=10)
    message_id = fake.interactions[payload["token"]].original_id
    message: dict[str, Any] = {}
    text = ""
    while time.monotonic() - start < JOB_TIMEOUT_S:
        message = fake.messages.get(message_id or "", {})
        text = message.get("content", "")
        if any(mark in text for mark in FINAL_MARKS):
            break
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - start
    if "✅" not in text or not message.get("attachments"):
        raise CheckFailed(f"callback type {response['type']}; after {elapsed:.1f} s the reply says {text[:200]!r}")
    job["id"] = text.split("`")[1]
    url = message["attachments"][0]["url"]
    data = fake.cdn[url.split("/cdn/attachments/", 1)[1]][0]
    with Image.open(io.BytesIO(data)) as img:
        picture = f"{img.format} {img.width}x{img.height}, {len(data)} bytes"
    return f"delivered in {elapsed:.1f} s: job {job['id']}, {picture} ({STYLIZE_OPTIONS})"


async def check_data_writable(run: Run, container: str) -> str:
    out = await run.shell(container, "id -u; stat -c '%u %a' /data /data/jobs.sqlite3; "
                                     "touch /data/.write-probe && rm /data/.write-probe && echo writable")
    uid, data_dir, table, verdict = [*out.strip().splitlines(), "", "", "", ""][:4]
    figures = f"image user uid {uid}; /data owner, mode {data_dir}; jobs.sqlite3 {table}; {verdict}"
    if uid in ("", "0") or verdict != "writable" or table.split()[:1] != [uid]:
        raise CheckFailed(figures)
    return figures


async def check_sigterm(run: Run, container: str) -> str:
    start = time.monotonic()
    await run.engine.run("stop", "-t", str(run.grace_s), container, timeout=run.grace_s + 30)
    elapsed = time.monotonic() - start
    code = (await run.engine.state(container)).get("ExitCode")
    figures = f"exit {code} after {elapsed:.1f} s (grace {run.grace_s} s)"
    if code != 0 or elapsed >= run.grace_s:
        raise CheckFailed(figures)
    return figures


async def check_job_kept(run: Run, container: str, job: dict[str, str]) -> str:
    if "id" not in job:
        raise CheckFailed("no job from the first container to look for (the /stylize check failed)")
    query = ("import sqlite3, sys; db = sqlite3.connect('/data/jobs.sqlite3'); "
             "row = db.execute('SELECT state FROM jobs WHERE id = ?', (sys.argv[1],)).fetchone(); "
             "print(row[0] if row else 'missing', db.execute('SELECT count(*) FROM jobs').fetchone()[0])")
    out = await run.engine.run("exec", container, "python", "-c", query, job["id"])
    state, count = out.split()
    figures = f"job {job['id']} {state} in the second container's /data/jobs.sqlite3 ({count} job(s))"
    if state != "done":
        raise CheckFailed(figures)
    return figures


async def wait_health(run: Run, container: str, want: str) -> tuple[float, str]:
    start = time.monotonic()
    status = "none"
    while time.monotonic() - start < HEALTH_TIMEOUT_S:
        status = await run.engine.health(container)
        if status == want:
            return time.monotonic() - start, status
        await asyncio.sleep(1)
    raise CheckFailed(f"still {status!r}, not {want!r}, after {HEALTH_TIMEOUT_S:.0f} s")


async def check_healthcheck(run: Run, container: str) -> str:
    healthy_s, _ = await wait_health(run, container, "healthy")
    await run.fake.close()  # the gateway (and REST) go away: the bot is disconnected
    unhealthy_s, _ = await wait_health(run, container, "unhealthy")
    return f"healthy after {healthy_s:.1f} s; unhealthy {unhealthy_s:.1f} s after the fake gateway stopped"


# ---------------------------------------------------------------------------------------------------- running


async def attempt(results: list[Check], name: str, check: Callable[[], Awaitable[str]], blocked: str = "") -> bool:
    """Run one check and print its line; `blocked` (why it cannot run) makes it a FAIL without running it."""
    try:
        if blocked:
            raise CheckFailed(f"not run: {blocked}")
        result = Check(name, True, await check())
    except (CheckFailed, EngineError, AssertionError) as exc:
        result = Check(name, False, str(exc))
    except Exception as exc:
        result = Check(name, False, f"{type(exc).__name__}: {exc}")
    print(result.line(), flush=True)
    results.append(result)
    return result.ok


async def run_checks(engine: Engine, image: str, grace_s: int) -> list[Check]:
    results: list[Check] = []
    job: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="nst-test-image-") as tmp:
        fake = FakeDiscord(token=TOKEN)
        await fake.start()
        run = Run(engine, image, fake, Path(tmp), free_port(), grace_s)
        try:
            run.volume = (await engine.run("volume", "create", f"nst-test-image-{os.getpid()}")).strip()
            started = await attempt(results, "start", lambda: run.start_bot("first"))
            blocked = "" if started else "the first container did not start"
            first = run.containers[-1] if run.containers else ""
            await attempt(results, "healthz", lambda: check_healthz(run), blocked)
            await attempt(results, "metrics", lambda: check_metrics(run), blocked)
            await attempt(results, "stylize", lambda: check_stylize(run, job), blocked)
            await attempt(results, "data-writable", lambda: check_data_writable(run, first), blocked)
            await attempt(results, "sigterm", lambda: check_sigterm(run, first), blocked)
            # A new container on the same volume, as `docker compose up` makes after a new image.
            started = await attempt(results, "restart", lambda: run.start_bot("second"))
            blocked = "" if started else "the second container did not start"
            second = run.containers[-1]
            await attempt(results, "job-kept", lambda: check_job_kept(run, second, job), blocked)
            await attempt(results, "healthcheck", lambda: check_healthcheck(run, second), blocked)
            if not all(r.ok for r in results):
                for name in run.containers:
                    print(f"--- last log lines of {name}:\n{await run.logs(name)}", flush=True)
        finally:
            await run.cleanup()
            await fake.close()
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose_grace_s() -> int:
    """The bot's stop_grace_period in compose.yaml, in seconds: what `docker compose stop` gives it."""
    value = str(yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["bot"]["stop_grace_period"])
    match = re.fullmatch(r"(\d+)s", value)
    if not match:
        raise SystemExit(f"scripts/test-image: compose.yaml's stop_grace_period {value!r} is not 'Ns'")
    return int(match.group(1))


async def main_async(args: argparse.Namespace) -> int:
    engine = choose_engine()
    if not args.no_build:
        start = time.monotonic()
        try:
            await engine.build(args.tag)
        except EngineError as exc:
            print(f"FAIL build: {exc}", flush=True)
            return 1
        size = int((await engine.run("image", "inspect", "--format", "{{.Size}}", args.tag)).strip())
        print(f"PASS build: {args.tag} with {engine.name} in {time.monotonic() - start:.0f} s, "
              f"{size / 1e9:.2f} GB", flush=True)
    results = await run_checks(engine, args.tag, compose_grace_s())
    failed = [r.name for r in results if not r.ok]
    print(f"image test: {len(results) - len(failed)} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""), flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/test-image", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"the image's tag (default {DEFAULT_TAG})")
    parser.add_argument("--no-build", action="store_true", help="test the image already tagged so")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
