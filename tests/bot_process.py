"""The bot as a real process against the fake Discord, for what only a real process shows: signals, exit status,
a crash at a chosen point, a restart on the same data directory.

    python tests/bot_process.py --config PATH [run]

runs `bot.cli.main` (what `nst-bot` runs) with the embedded executor's job function held at the gate named by
NST_TEST_GATE (tests/gates.py). With NST_TEST_CRASH_BEFORE_RECORD naming a file, the process SIGKILLs itself the
first time a delivery is about to be recorded (after the outcome was posted, before `mark_delivered`), writing the
job id to that file first: the crash the exactly-once delivery must survive.

`BotProcess` is the test's side: it writes the configuration (pointed at the fake), starts the process in its own
process group, waits until it is connected, signals it and reads its log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fake_discord import FakeDiscord
from gates import GATE_ENV, Gate, GatedWork

CRASH_ENV = "NST_TEST_CRASH_BEFORE_RECORD"
SCRIPT = Path(__file__).resolve()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


class BotProcess:
    """One bot process at a time on `folder/data`, its jobs held at `gate`; `start()` again after it ended."""

    def __init__(self, fake: FakeDiscord, folder: Path, gate: Gate, **sections: dict[str, Any]) -> None:
        self.fake = fake
        self.folder = folder
        self.gate = gate
        self.data_dir = folder / "data"
        settings: dict[str, dict[str, Any]] = {
            "discord": {"cdn_hosts": [f"127.0.0.1:{fake.port}"]},
            "limits": {"cooldown_seconds": 0, "default_preset": "fast"},
            "progress": {"edit_interval_seconds": 0.5},
            "health": {"port": 0},
            "queue": {"data_dir": str(self.data_dir), "executor": "thread", "devices": ["cpu"],
                      "heartbeat_seconds": 1.0, "lease_seconds": 5.0},
        }
        for name, values in sections.items():
            settings.setdefault(name, {}).update(values)
        self.config = folder / "config.toml"
        self.config.write_text("\n".join(f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
                                         for name, values in settings.items()))
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0

    @property
    def log(self) -> Path:
        return self.folder / f"bot-{self.lives}.log"

    async def start(self, *, crash_before_record: Path | None = None) -> None:
        """Start the process and wait until it is connected to the gateway."""
        assert self.proc is None or self.proc.poll() is not None, "the previous bot process still runs"
        self.lives += 1
        identified = self.fake.identify_count
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_") and k != CRASH_ENV}
        env.update(DISCORD_TOKEN=self.fake.token, DISCORD_API_BASE=self.fake.api_base,
                   DISCORD_GATEWAY_URL=self.fake.gateway_url, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   **self.gate.env())
        if crash_before_record is not None:
            env[CRASH_ENV] = str(crash_before_record)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(self.config)], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while self.fake.identify_count == identified or not self.fake.commands:
            assert self.proc.poll() is None, f"the bot exited with {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"the bot did not connect within 90 s:\n{self.text()}"
            await asyncio.sleep(0.05)
        await self.wait_log("connected as ")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_log(self, fragment: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while fragment not in self.text():
            assert time.monotonic() < deadline, f"the bot never logged {fragment!r}:\n{self.text()}"
            await asyncio.sleep(0.05)

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 60) -> int:
        """The process's exit status once it has ended (SIGKILL: -9)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"the bot did not exit within {timeout} s:\n{self.text()}"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (the bot and any worker process), if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def job_rows(self) -> list[dict[str, Any]]:
        """The job table as the bot left it (read while no bot process runs, or between its writes)."""
        with sqlite3.connect(self.data_dir / "jobs.sqlite3") as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM jobs ORDER BY seq")]


def _crash_before_record(marker: Path) -> None:
    """Die (SIGKILL, no clean-up) the first time a delivery is about to be recorded."""
    from nst_jobs.queue import JobQueue

    async def mark_delivered(queue: JobQueue, job_id: str) -> bool:
        marker.write_text(job_id)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    JobQueue.mark_delivered = mark_delivered  # type: ignore[method-assign]


if __name__ == "__main__":
    from bot.cli import main
    from nst_jobs.work import perform

    if os.environ.get(CRASH_ENV):
        _crash_before_record(Path(os.environ[CRASH_ENV]))
    sys.exit(main(sys.argv[1:], work=GatedWork.from_env() if GATE_ENV in os.environ else perform))
