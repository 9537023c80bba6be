"""What the embedded executor's workers tell the executor, as types.

Why it exists: a worker (`nst_jobs.worker_loop`, in a spawned process or a thread) and the executor
(`nst_jobs.local`, on the event loop) speak a small protocol. One frozen dataclass per kind of message lets both
sides (and a type checker) agree on what a message carries instead of indexing tuples by position; the executor
dispatches on the class. They are plain data, so they pickle as they are across a process worker's pipe.

A worker sends, in this order: `Ready` once warmed up (or `Fatal` when the warm-up fails, and stops), then per job
`Started`, any number of `Progress`, and one of `Done` / `Failed` / `Cancelled` (a job cancelled before it started
gets `Cancelled` alone). `Exited` is never sent by a worker: the executor's reader thread adds it when the worker's
process or thread has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nst_core.result import JobResult

__all__ = [
    "Cancelled",
    "Done",
    "Exited",
    "Failed",
    "Fatal",
    "JobEnd",
    "Progress",
    "Ready",
    "Started",
    "WorkerEvent",
    "WorkerMessage",
]


@dataclass(frozen=True)
class Ready:
    """Warmed up and waiting for jobs."""

    pid: int


@dataclass(frozen=True)
class Fatal:
    """The warm-up failed (e.g. a device that does not exist); the worker stops and is not started again."""

    reason: str


@dataclass(frozen=True)
class Started:
    job_id: str


@dataclass(frozen=True)
class Progress:
    """A (throttled) `ProgressEvent.to_dict()`, maybe with a small JPEG preview."""

    job_id: str
    event: dict[str, Any]
    preview: bytes | None


@dataclass(frozen=True)
class Done:
    job_id: str
    result: JobResult


@dataclass(frozen=True)
class Failed:
    """The job failed; `reason` is for the user (an engine error) or says it was an internal error."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class Cancelled:
    job_id: str


@dataclass(frozen=True)
class Exited:
    """Added by the executor's reader: the worker ended (`exitcode` None for a thread)."""

    exitcode: int | None


#: The end of one job.
JobEnd = Done | Failed | Cancelled
#: What a worker sends.
WorkerMessage = Ready | Fatal | Started | Progress | Done | Failed | Cancelled
#: What the executor's pump handles: a worker's messages and the reader's note that the worker ended.
WorkerEvent = WorkerMessage | Exited
