"""A real Redis for the tests: `redis_url`, a session fixture that runs `redis-server` on a free local port.

Import the fixture into a test module (`from redis_server import redis_url`). Without `redis-server` the tests fail
(they do not skip): install it with `apt-get install redis-server`, as CI does.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["free_port", "redis_url"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(exe: str, folder: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    log = folder / "redis.log"
    for _ in range(3):  # a free port can be taken between free_port() and the bind
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                     "--appendonly", "no", "--dir", str(folder)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_ping(port):
                return proc, port, log
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    pytest.fail(f"redis-server did not start; its log:\n{log.read_text(errors='replace')}", pytrace=False)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis://127.0.0.1:PORT/0 of a redis-server that lives for the test session (nothing saved to disk)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed; these tests need a real Redis: apt-get install redis-server "
                    "(CI installs it with apt)", pytrace=False)
    proc, port, _ = _start(exe, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
