"""The job table in SQLite (WAL, via aiosqlite) and each job's files on disk: the system of record.

Inputs are written to `data_dir/jobs/<id>/` before the row exists (the content, each style, and for a job that
continues an earlier result the picture it starts from: a file there or not, so that needs no column), results are
written (atomically) before the row says done, so a crash at any point leaves either no job or a complete one.
Claims run in `BEGIN IMMEDIATE` transactions, so two processes sharing a data directory never start the same job
twice.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import aiosqlite

from nst_jobs.errors import JobNotFoundError, QueueFullError, UserCapError
from nst_jobs.models import Job, JobRequest, JobState

__all__ = ["InputFiles", "JobObserver", "JobStore", "connect_sqlite"]

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    requester TEXT NOT NULL,
    guild_id TEXT,
    channel_id TEXT,
    params TEXT NOT NULL,
    style_count INTEGER NOT NULL,
    output_format TEXT NOT NULL,
    max_output_bytes INTEGER,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    dispatch_seq INTEGER,
    lease_owner TEXT,
    lease_expires REAL,
    progress TEXT,
    result TEXT,
    result_path TEXT,
    failure TEXT,
    cancel_requested_by TEXT,
    started_at REAL,
    finished_at REAL,
    delivered_at REAL,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_requester ON jobs (requester, state);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_JSON_COLUMNS = ("params", "meta", "progress", "result", "options")
#: Columns added after the first schema: (name, definition), added to an older table when it is opened.
_ADDED_COLUMNS = (("options", "TEXT NOT NULL DEFAULT '{}'"),)  # schema 2: animation and timelapse options
_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
#: The input files in a job's folder (each style is `style-<i>`).
CONTENT_FILE, CONTINUE_FROM_FILE = "content", "continue-from"


@dataclass(frozen=True)
class InputFiles:
    """A job's input images as stored: the content, the styles, and the picture it continues from (or None)."""

    content: bytes
    styles: tuple[bytes, ...]
    continue_from: bytes | None = None


P = ParamSpec("P")
R = TypeVar("R")


_Method = Callable[Concatenate["JobStore", P], Awaitable[R]]


def _serialised(method: _Method[P, R]) -> _Method[P, R]:
    """Writes share one connection: a lock keeps one coroutine's statements out of another's transaction."""

    @functools.wraps(method)
    async def wrapper(self: JobStore, *args: P.args, **kwargs: P.kwargs) -> R:
        async with self.lock:
            return await method(self, *args, **kwargs)

    return wrapper


async def connect_sqlite(path: Path, schema: str) -> aiosqlite.Connection:
    """An autocommit connection (explicit transactions only) in WAL mode, rows by name, `schema` applied.

    WAL lets readers (another process sharing the data directory, a backup) work while one writer writes; writers
    wait up to 30 s for each other instead of failing at once.
    """
    db = await aiosqlite.connect(path, isolation_level=None, timeout=30)
    db.row_factory = aiosqlite.Row
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA busy_timeout=30000")
    await db.executescript(schema)
    return db


def _row_to_job(row: aiosqlite.Row) -> Job:
    data: dict[str, Any] = dict(row)
    for column in _JSON_COLUMNS:
        if data[column] is not None:
            data[column] = json.loads(data[column])
    data["state"] = JobState(data["state"])
    return Job(**data)


class JobObserver(Protocol):
    """Told of every state change the table records (the metrics count jobs here, whatever backend runs them)."""

    def job_changed(self, job: Job) -> None:
        """`job` (as the table now has it) has just entered `job.state`: queued (new, or back in line), running
        (claimed), or an end state. Called on the event loop; must not block."""


class JobStore:
    """Async access to the job table. Use `await JobStore.open(data_dir)`; `observer` hears of each state change."""

    def __init__(self, db: aiosqlite.Connection, data_dir: Path, observer: JobObserver | None = None) -> None:
        self.db = db
        self.data_dir = data_dir
        self.jobs_dir = data_dir / "jobs"
        self.lock = asyncio.Lock()
        self.observer = observer

    @classmethod
    async def open(cls, data_dir: Path, *, observer: JobObserver | None = None) -> JobStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "jobs").mkdir(exist_ok=True)
        db = await connect_sqlite(data_dir / "jobs.sqlite3", _SCHEMA)
        columns = {row["name"] for row in await db.execute_fetchall("PRAGMA table_info(jobs)")}
        for name, definition in _ADDED_COLUMNS:
            if name not in columns:
                await db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
        await db.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))
        return cls(db, data_dir, observer)

    async def close(self) -> None:
        await self.db.close()

    def _changed(self, job: Job) -> Job:
        if self.observer is not None:
            self.observer.job_changed(job)
        return job

    # -- files -----------------------------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def read_inputs(self, job: Job) -> InputFiles:
        """The job's input files; OSError when they are gone (the retention purge removes the whole folder)."""
        folder = self.job_dir(job.id)
        content = (folder / CONTENT_FILE).read_bytes()
        styles = tuple((folder / f"style-{i}").read_bytes() for i in range(job.style_count))
        start = folder / CONTINUE_FROM_FILE
        return InputFiles(content, styles, start.read_bytes() if start.exists() else None)

    def write_result(self, job_id: str, data: bytes, extension: str) -> Path:
        """Write the result file atomically (temp file, fsync, rename)."""
        return self.write_file(job_id, f"result.{extension}", data)

    def write_file(self, job_id: str, name: str, data: bytes) -> Path:
        """Write one of the job's files (`name` in its folder) atomically: temp file, fsync, rename."""
        path = self.job_dir(job_id) / name
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        return path

    # -- writes ----------------------------------------------------------------------------------------------------
    @_serialised
    async def insert(self, request: JobRequest, *, per_user_cap: int, global_cap: int) -> Job:
        """Store the inputs and a queued row, enforcing both caps in the same transaction."""
        job_id = uuid.uuid4().hex[:12]
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True)
        try:
            (folder / CONTENT_FILE).write_bytes(request.content)
            for i, style in enumerate(request.styles):
                (folder / f"style-{i}").write_bytes(style)
            if request.continue_from is not None:
                (folder / CONTINUE_FROM_FILE).write_bytes(request.continue_from)
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                mine = await self._scalar("SELECT COUNT(*) FROM jobs WHERE requester = ? AND state IN (?, ?)",
                                          (request.requester, *_ACTIVE))
                if mine >= per_user_cap:
                    raise UserCapError(per_user_cap)
                everyone = await self._scalar("SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)", _ACTIVE)
                if everyone >= global_cap:
                    raise QueueFullError(global_cap)
                seq = await self._scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs", ())
                await self.db.execute(
                    "INSERT INTO jobs (id, seq, requester, guild_id, channel_id, params, style_count, output_format,"
                    " max_output_bytes, state, attempts, created_at, meta, options)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,0,?,?,?)",
                    (job_id, seq, request.requester, request.guild_id, request.channel_id,
                     json.dumps(request.params.to_dict()), len(request.styles), request.output_format,
                     request.max_output_bytes, JobState.QUEUED.value, time.time(), json.dumps(request.meta),
                     json.dumps(request.options())))
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self._changed(await self.get(job_id))

    @_serialised
    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> Job | None:
        """queued -> running for `owner` (attempts + 1); None if someone else got it first or it was cancelled."""
        now = time.time()
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            dispatch = await self._scalar("SELECT COALESCE(MAX(dispatch_seq), 0) + 1 FROM jobs", ())
            cursor = await self.db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, dispatch_seq = ?, lease_owner = ?,"
                " lease_expires = ?, started_at = ?, progress = NULL WHERE id = ? AND state = ?",
                (JobState.RUNNING.value, dispatch, owner, now + lease_seconds, now, job_id, JobState.QUEUED.value))
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        return self._changed(await self.get(job_id)) if cursor.rowcount == 1 else None

    @_serialised
    async def renew(self, job_ids: Sequence[str], owner: str, lease_seconds: float) -> None:
        if not job_ids:
            return
        marks = ",".join("?" * len(job_ids))
        await self.db.execute(
            f"UPDATE jobs SET lease_expires = ?, lease_owner = ? WHERE state = ? AND id IN ({marks})",
            (time.time() + lease_seconds, owner, JobState.RUNNING.value, *job_ids))

    @_serialised
    async def save_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        await self.db.execute("UPDATE jobs SET progress = ? WHERE id = ? AND state = ?",
                              (json.dumps(progress), job_id, JobState.RUNNING.value))

    @_serialised
    async def finish(self, job_id: str, state: JobState, *, result: dict[str, Any] | None = None,
                     result_path: str | None = None, failure: str | None = None) -> Job | None:
        """A queued or running job ends in `state`; None if it had already ended (no double finish)."""
        return await self._finish(job_id, state, result=result, result_path=result_path, failure=failure)

    async def _finish(self, job_id: str, state: JobState, *, result: dict[str, Any] | None = None,
                      result_path: str | None = None, failure: str | None = None) -> Job | None:
        cursor = await self.db.execute(
            "UPDATE jobs SET state = ?, result = ?, result_path = ?, failure = ?, finished_at = ?,"
            " lease_owner = NULL, lease_expires = NULL WHERE id = ? AND state IN (?, ?)",
            (state.value, json.dumps(result) if result is not None else None, result_path, failure, time.time(),
             job_id, *_ACTIVE))
        return self._changed(await self.get(job_id)) if cursor.rowcount == 1 else None

    @_serialised
    async def requeue(self, job_id: str, reason: str, max_attempts: int) -> Job | None:
        """running -> queued after its worker was lost, or -> failed once `max_attempts` starts were used up."""
        job = await self.get(job_id)
        if job.state != JobState.RUNNING:
            return None
        if job.attempts >= max_attempts:
            return await self._finish(job_id, JobState.FAILED,
                                     failure=f"failed after {job.attempts} attempts: {reason}")
        cursor = await self.db.execute(
            "UPDATE jobs SET state = ?, lease_owner = NULL, lease_expires = NULL, progress = NULL"
            " WHERE id = ? AND state = ?", (JobState.QUEUED.value, job_id, JobState.RUNNING.value))
        return self._changed(await self.get(job_id)) if cursor.rowcount == 1 else None

    @_serialised
    async def release(self, job_id: str) -> Job | None:
        """running -> queued because its front end stopped it for a restart (not the job's fault): the start is
        given back (attempts - 1), so restarts never use up `max_attempts`. None if it was not running."""
        cursor = await self.db.execute(
            "UPDATE jobs SET state = ?, attempts = MAX(attempts - 1, 0), lease_owner = NULL, lease_expires = NULL,"
            " progress = NULL WHERE id = ? AND state = ?", (JobState.QUEUED.value, job_id, JobState.RUNNING.value))
        return await self.get(job_id) if cursor.rowcount == 1 else None

    @_serialised
    async def request_cancel(self, job_id: str, by: str) -> None:
        await self.db.execute("UPDATE jobs SET cancel_requested_by = ? WHERE id = ?", (by, job_id))

    @_serialised
    async def mark_delivered(self, job_id: str) -> bool:
        """Record delivery once; False if it was already delivered (so nobody delivers twice)."""
        cursor = await self.db.execute("UPDATE jobs SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                                       (time.time(), job_id))
        return cursor.rowcount == 1

    @_serialised
    async def purge(self, older_than: float) -> int:
        """Delete finished jobs (rows and files) that finished before `older_than` (epoch seconds)."""
        rows = await self.db.execute_fetchall(
            "SELECT id FROM jobs WHERE state NOT IN (?, ?) AND finished_at < ?", (*_ACTIVE, older_than))
        ids = [row["id"] for row in rows]
        for job_id in ids:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
            await self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return len(ids)

    # -- reads -----------------------------------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job:
        rows = await self.db.execute_fetchall("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFoundError(job_id)
        return _row_to_job(next(iter(rows)))

    async def list(self, *states: JobState, requester: str | None = None) -> list[Job]:
        sql = "SELECT * FROM jobs"
        where, args = [], []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += [s.value for s in states]
        if requester is not None:
            where.append("requester = ?")
            args.append(requester)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.db.execute_fetchall(sql + " ORDER BY seq", args)
        return [_row_to_job(row) for row in rows]

    async def counts(self) -> dict[JobState, int]:
        """How many jobs wait and run now (both states always present)."""
        rows = await self.db.execute_fetchall(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE state IN (?, ?) GROUP BY state", _ACTIVE)
        counts = dict.fromkeys((JobState.QUEUED, JobState.RUNNING), 0)
        counts.update({JobState(row["state"]): row["n"] for row in rows})
        return counts

    async def expired_leases(self, now: float) -> list[str]:
        rows = await self.db.execute_fetchall(
            "SELECT id FROM jobs WHERE state = ? AND lease_expires < ? ORDER BY seq", (JobState.RUNNING.value, now))
        return [row["id"] for row in rows]

    async def last_served(self, requesters: Sequence[str]) -> dict[str, int]:
        if not requesters:
            return {}
        marks = ",".join("?" * len(requesters))
        rows = await self.db.execute_fetchall(
            f"SELECT requester, MAX(dispatch_seq) AS d FROM jobs WHERE dispatch_seq IS NOT NULL AND requester IN "
            f"({marks}) GROUP BY requester", tuple(requesters))
        return {row["requester"]: row["d"] for row in rows}

    async def undelivered(self) -> list[Job]:
        rows = await self.db.execute_fetchall(
            "SELECT * FROM jobs WHERE state NOT IN (?, ?) AND delivered_at IS NULL ORDER BY seq", _ACTIVE)
        return [_row_to_job(row) for row in rows]

    async def _scalar(self, sql: str, args: Sequence[Any]) -> int:
        rows = await self.db.execute_fetchall(sql, tuple(args))
        return int(next(iter(rows))[0])
