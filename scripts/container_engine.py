"""The docker or podman command line for `scripts/test-image` (scripts/test_image.py): which engine works here,
the build, and what the checks ask of a container (its state, its healthcheck's verdict).

Docker is used when its engine answers; otherwise podman, set up first by `../shared/tools/container-env` where
that exists and we run as root (it configures podman for this kernel and makes the base image locally, since no
image registry may be reachable; pip inside a build then needs the mounts it names).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_ENV = ROOT.parent / "shared" / "tools" / "container-env"


class EngineError(Exception):
    """An engine command failed or hung; the message says which and why."""


@dataclass(frozen=True)
class Engine:
    """The docker or podman command line; everything the script does with containers goes through `run`."""

    name: str
    build_options: tuple[str, ...] = ()

    async def run(self, *args: str, check: bool = True, timeout: float = 120, merge_stderr: bool = False) -> str:
        """The command's stdout (with its stderr when `merge_stderr`); EngineError if it fails or hangs."""
        process = await asyncio.create_subprocess_exec(
            self.name, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise EngineError(f"`{self.name} {' '.join(args[:2])}` took over {timeout:.0f} s") from None
        if check and process.returncode != 0:
            raise EngineError(f"`{self.name} {' '.join(args[:2])}` exited {process.returncode}: "
                              f"{(err or out).decode().strip()[-300:]}")
        return out.decode()

    async def build(self, tag: str) -> None:
        """Build the image from the repository, its output shown as it comes."""
        process = await asyncio.create_subprocess_exec(
            self.name, "build", *self.build_options, "-t", tag, str(ROOT), stdin=subprocess.DEVNULL)
        if await process.wait() != 0:
            raise EngineError(f"`{self.name} build` exited {process.returncode}")

    async def health_options(self, image: str) -> list[str]:
        """`run` options that keep the image's HEALTHCHECK (command, timeout, retries) but count it from the start,
        not after its 120 s start period, and run it every second where the engine runs it (docker). Podman applies
        timing options only beside a command, so the image's own is passed back (in shell form: podman splits
        an exec-form argument on spaces)."""
        info = json.loads(await self.run("image", "inspect", image))[0]
        check = info.get("Healthcheck") or info.get("Config", {}).get("Healthcheck")
        if not check or check["Test"][0] not in ("CMD", "CMD-SHELL"):
            raise EngineError(f"{image} has no HEALTHCHECK command ({check})")
        kind, *command = check["Test"]
        return ["--health-cmd", shlex.join(command) if kind == "CMD" else command[0],
                "--health-timeout", f"{check['Timeout'] // 10**9}s", "--health-retries", str(check["Retries"]),
                "--health-start-period", "1s", "--health-interval", "1s"]

    async def state(self, container: str) -> dict[str, Any]:
        return json.loads(await self.run("inspect", container))[0]["State"]

    async def health(self, container: str) -> str:
        """Run the image's HEALTHCHECK once where nothing runs it by itself (podman without systemd), then read the
        verdict: starting, healthy or unhealthy."""
        if self.name == "podman":
            await self.run("healthcheck", "run", container, check=False, timeout=30)
        state = await self.state(container)
        return str((state.get("Health") or state.get("Healthcheck") or {}).get("Status", "none"))


def engine_works(name: str) -> bool:
    if shutil.which(name) is None:
        return False
    return subprocess.run([name, "info"], capture_output=True, timeout=60).returncode == 0


def choose_engine() -> Engine:
    """Docker when its engine answers; else podman, set up first by ../shared/tools/container-env where that exists
    and we are root (it also makes the base image, since no registry may be reachable)."""
    if engine_works("docker"):
        return Engine("docker")
    podman = ("--format", "docker", "--network", "host")  # docker format: podman's own drops the HEALTHCHECK
    if CONTAINER_ENV.is_file() and os.geteuid() == 0:
        subprocess.run([str(CONTAINER_ENV)], check=True, stdin=subprocess.DEVNULL)
        mounts = subprocess.run([str(CONTAINER_ENV), "--build-mounts"], check=True, capture_output=True, text=True)
        return Engine("podman", (*podman, *mounts.stdout.split()))
    if engine_works("podman"):
        return Engine("podman", podman)
    raise SystemExit("scripts/test-image: no working container engine; install Docker "
                     "(https://docs.docker.com/engine/install/) or podman (Debian/Ubuntu: apt-get install podman)")
