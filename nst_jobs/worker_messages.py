"""What the embedded executor's workers tell the executor, as types.

Why it exists: a worker (`nst_jobs.worker_loop`, in a spawned process or a thread) and the executor
(`nst_jobs.local`, on the event loop) speak a small protocol. One frozen dataclass per kind of message, each tagged
with its `MessageKind`, lets both sides (and a type checker) agree on what a message carries instead of indexing
tuples by position. They are plain data, so they pickle as they are across a process worker's pipe.

A worker sends, in this order: `Ready` once warmed up (or `Fatal` when the warm-up fails, and stops), then per job
`Started`, any number of `Progress`, and one of `Done` / `Failed` / `Cancelled` (a job cancelled before it started
gets `Cancelled` alone). `Exited` is never sent by a worker: the executor's reader thread adds it when the worker's
process or thread has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from nst_core.result import JobResult

__all__ = [
    "Cancelled",
    "Done",
    "Exited",
    "Failed",
    "Fatal",
    "JobEnd",
    "MessageKind",
    "Progress",
    "Ready",
    "Started",
    "WorkerEvent",
    "WorkerMessage",
]


class MessageKind(StrEnum):
    READY = "ready"
    FATAL = "fatal"
    STARTED = "started"
    PROGRESS = "progress"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXITED = "exited"


@dataclass(frozen=True)
class Ready:
    """Warmed up and waiting for jobs."""

    pid: int
    kind: ClassVar[MessageKind] = MessageKind.READY


@dataclass(frozen=True)
class Fatal:
    """The warm-up failed (e.g. a device that does not exist); the worker stops and is not started again."""

    reason: str
    kind: ClassVar[MessageKind] = MessageKind.FATAL


@dataclass(frozen=True)
class Started:
    job_id: str
    kind: ClassVar[MessageKind] = MessageKind.STARTED


@dataclass(frozen=True)
class Progress:
    """A (throttled) `ProgressEvent.to_dict()`, maybe with a small JPEG preview."""

    job_id: str
    event: dict[str, Any]
    preview: bytes | None
    kind: ClassVar[MessageKind] = MessageKind.PROGRESS


@dataclass(frozen=True)
class Done:
    job_id: str
    result: JobResult
    kind: ClassVar[MessageKind] = MessageKind.DONE


@dataclass(frozen=True)
class Failed:
    """The job failed; `reason` is for the user (an engine error) or says it was an internal error."""

    job_id: str
    reason: str
    kind: ClassVar[MessageKind] = MessageKind.FAILED


@dataclass(frozen=True)
class Cancelled:
    job_id: str
    kind: ClassVar[MessageKind] = MessageKind.CANCELLED


@dataclass(frozen=True)
class Exited:
    """Added by the executor's reader: the worker ended (`exitcode` None for a thread)."""

    exitcode: int | None
    kind: ClassVar[MessageKind] = MessageKind.EXITED


#: The end of one job.
JobEnd = Done | Failed | Cancelled
#: What a worker sends.
WorkerMessage = Ready | Fatal | Started | Progress | Done | Failed | Cancelled
#: What the executor's pump handles: a worker's messages and the reader's note that the worker ended.
WorkerEvent = WorkerMessage | Exited
