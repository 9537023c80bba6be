"""Gates: a test holds a real job at a known point until it opens the gate, instead of making the job "big enough".

`GatedWork` is a `nst_jobs.work.WorkFunction`: it runs the real `nst_jobs.work.perform` and, while its gate is
closed, stops right after each iteration report (the report has gone out, so the job is visibly running) until the
test opens the gate, lets the job take one more step (`Gate.step`), or the job is cancelled. Executors take it as
their `work` (`LocalExecutor(config, work=...)`, `JobQueue(config, work=...)`, `create_bot(config, work=...)`);
`tests/queue_runner.py` and the Celery test worker (`tests/gated_celery_worker.py`) build it from `GATE_ENV`.

The gate's state is a few files in one folder, so one gate works for a worker thread, a spawned worker process, a
queue runner process and a Celery worker process alike:

- `closed`: there while the gate is closed; it says "deaf" when held jobs do not see their cancel (a job stuck in
  a long GPU kernel, which only a kill stops);
- `step-*`: one per `step()`; a held job takes one and goes on to its next iteration report, where it stops again;
- `held-<job id>`: written by a held job while it waits: the iteration it stopped after.

A held job polls its `should_cancel` every `POLL` seconds: a cancelled job leaves the gate at once and the engine
stops it at its next check, as it would stop a running one. A job held longer than `HOLD_LIMIT` fails (the test
forgot to open its gate), so nothing waits for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_core.progress import CancelCheck
from nst_core.result import JobResult
from nst_jobs.work import Report, WorkPayload, perform

#: The environment variable that names a gate folder for a process that builds its own work function.
GATE_ENV = "NST_TEST_GATE"
POLL = 0.02
HOLD_LIMIT = 120.0
DEAF = "deaf"


class GateNeverOpened(RuntimeError):
    pass


@dataclass(frozen=True)
class GatedWork:
    """`perform`, held at the gate in `folder` while it is closed (picklable: spawned workers get it as it is)."""

    folder: str

    @classmethod
    def from_env(cls) -> GatedWork:
        return cls(os.environ[GATE_ENV])

    def __call__(self, payload: WorkPayload, *, report: Report, should_cancel: CancelCheck | None = None,
                 device: str = "auto") -> JobResult:
        def gated_report(event: dict[str, Any], preview: bytes | None) -> None:
            report(event, preview)
            if event.get("kind") == "iteration":
                self._hold(payload.job_id, int(event["iteration"]), should_cancel)

        return perform(payload, report=gated_report, should_cancel=should_cancel, device=device)

    def _mode(self) -> str | None:
        try:
            return (Path(self.folder) / "closed").read_text()
        except FileNotFoundError:
            return None  # open

    def _take_step(self) -> bool:
        for name in os.listdir(self.folder):
            if name.startswith("step-"):
                with contextlib.suppress(FileNotFoundError):  # another job took it first
                    os.unlink(os.path.join(self.folder, name))
                    return True
        return False

    def _hold(self, job_id: str, iteration: int, should_cancel: CancelCheck | None) -> None:
        if self._mode() is None:
            return
        marker = Path(self.folder) / f"held-{job_id}"
        scratch = marker.with_name(f".{marker.name}.{uuid.uuid4().hex}")
        scratch.write_text(str(iteration))
        scratch.replace(marker)  # whole, never half written
        deadline = time.monotonic() + HOLD_LIMIT
        try:
            while True:
                mode = self._mode()
                if mode is None or self._take_step():
                    return
                if mode != DEAF and should_cancel is not None and should_cancel():
                    return  # the engine raises JobCancelled at its next check
                if time.monotonic() > deadline:
                    raise GateNeverOpened(f"job {job_id} was held for {HOLD_LIMIT:.0f} s: the test never opened "
                                          "its gate")
                time.sleep(POLL)
        finally:
            marker.unlink(missing_ok=True)


class Gate:
    """The test's side of a gate folder (open when created)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.open()

    def work(self) -> GatedWork:
        return GatedWork(str(self.folder))

    def env(self) -> dict[str, str]:
        """For a process that builds its own work function (`GatedWork.from_env`)."""
        return {GATE_ENV: str(self.folder)}

    def close(self, *, heed_cancel: bool = True) -> None:
        """From now on every job stops after its next iteration report (and ignores its cancel if not heed_cancel)."""
        closed = self.folder / "closed"
        if not closed.exists():
            for path in self.folder.glob("held-*"):  # nothing waits at an open gate: left by a killed worker
                path.unlink(missing_ok=True)
        self._clear_steps()
        closed.write_text("" if heed_cancel else DEAF)

    def open(self) -> None:
        """Held jobs go on, and later ones pass."""
        (self.folder / "closed").unlink(missing_ok=True)
        self._clear_steps()

    def step(self) -> None:
        """Let a held job go on to its next iteration report (where it stops again)."""
        (self.folder / f"step-{uuid.uuid4().hex}").touch()

    def held(self) -> dict[str, int]:
        """Job id -> the iteration it waits after, for every job held now."""
        out = {}
        for path in self.folder.glob("held-*"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                out[path.name.removeprefix("held-")] = int(path.read_text())
        return out

    async def wait_held(self, *, beyond: int = 0, timeout: float = 60.0) -> tuple[str, int]:
        """Until a job is held after an iteration past `beyond`: (its id, that iteration)."""
        deadline = time.monotonic() + timeout
        while True:
            for job_id, iteration in self.held().items():
                if iteration > beyond:
                    return job_id, iteration
            if time.monotonic() > deadline:
                raise AssertionError(f"no job was held past iteration {beyond} within {timeout} s")
            await asyncio.sleep(POLL)

    def _clear_steps(self) -> None:
        for path in self.folder.glob("step-*"):
            path.unlink(missing_ok=True)
