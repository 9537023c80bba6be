"""What the bot itself must remember across restarts, in its own SQLite file next to the job table.

- replies: where each job's updates go (the interaction webhook token and message, or the channel message it moved
  to once the token ran out, and how many it posted), so a restarted bot keeps editing the same message and
  delivers exactly once;
- guild settings set with `/nst-admin settings`, saved styles (`/style save`; the image files live beside the db),
  keyed by `style_key(name)`: every read and write of a saved style goes through that one normalisation;
- a tally of finished jobs for `/nst-admin stats` (the job table itself is purged after the retention period);
- small key/values (the hash of the last synced command set).
The job table (`nst_jobs.store`) stays the system of record for jobs; nothing here duplicates it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from nst_jobs.models import JobState
from nst_jobs.store import connect_sqlite

__all__ = ["BotStore", "GuildSettings", "JobTally", "Reply", "SavedStyle", "style_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    job_id TEXT PRIMARY KEY,
    application_id INTEGER NOT NULL,
    token TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    channel_id INTEGER,
    guild_id INTEGER,
    user_id INTEGER NOT NULL,
    token_deadline REAL NOT NULL,
    channel_message_id INTEGER,
    dm INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    channel_posts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS guild_settings (
    guild_id INTEGER PRIMARY KEY,
    max_size INTEGER,
    max_iterations INTEGER,
    per_user_cap INTEGER,
    channels TEXT NOT NULL DEFAULT '[]',
    max_clip_frames INTEGER,
    max_clip_seconds REAL,
    max_clip_size INTEGER,
    max_upscale_size INTEGER
);
CREATE TABLE IF NOT EXISTS saved_styles (
    guild_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    file TEXT NOT NULL,
    created_by INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (guild_id, name)
);
CREATE TABLE IF NOT EXISTS job_tally (
    job_id TEXT PRIMARY KEY,
    guild_id INTEGER,
    user_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    run_seconds REAL
);
CREATE INDEX IF NOT EXISTS job_tally_by_guild ON job_tally (guild_id, finished_at);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: Columns added to a table after its first release: (table, column, SQL type), added to an older file on open.
_ADDED_COLUMNS = (
    ("replies", "channel_posts", "INTEGER NOT NULL DEFAULT 0"),
    ("guild_settings", "max_clip_frames", "INTEGER"),
    ("guild_settings", "max_clip_seconds", "REAL"),
    ("guild_settings", "max_clip_size", "INTEGER"),
    ("guild_settings", "max_upscale_size", "INTEGER"),
)
_GUILD_COLUMNS = ("max_size", "max_iterations", "per_user_cap", "channels", "max_clip_frames", "max_clip_seconds",
                  "max_clip_size", "max_upscale_size")


@dataclass
class Reply:
    """Where a job's updates go. `channel_message_id` is set once updates moved to a normal channel message (the
    interaction token ran out); `dm` when even that was not possible and the user gets a direct message.
    `channel_posts` counts the progress messages posted so far: the next one's nonce (`bot.shared.nonces`) is made
    from it, so a repeat after a crash gives the same message back, and a message posted anew gets a new one."""

    job_id: str
    application_id: int
    token: str
    message_id: int
    channel_id: int | None
    guild_id: int | None
    user_id: int
    token_deadline: float  # unix time after which the token is not used any more
    channel_message_id: int | None = None
    dm: bool = False
    created_at: float = field(default_factory=time.time)
    channel_posts: int = 0


@dataclass(frozen=True)
class GuildSettings:
    """A server's own limits (None: the bot-wide limit) and the channels /stylize may be used in (empty: all)."""

    max_size: int | None = None
    max_iterations: int | None = None
    per_user_cap: int | None = None
    channels: tuple[int, ...] = ()
    max_clip_frames: int | None = None  # animations: frames, seconds and output long edge
    max_clip_seconds: float | None = None
    max_clip_size: int | None = None
    max_upscale_size: int | None = None  # the Upscale x2 button's largest result (long edge)


def style_key(name: str) -> str:
    """A saved style's name as it is stored and looked up: lower case, single spaces, no spaces around it
    ("  Starry   NIGHT " -> "starry night"); how it is typed does not matter."""
    return " ".join(name.split()).lower()


@dataclass(frozen=True)
class SavedStyle:
    guild_id: int
    name: str
    path: Path
    created_by: int
    created_at: float


@dataclass(frozen=True)
class JobTally:
    state: JobState
    created_at: float
    finished_at: float
    run_seconds: float | None


def _reply(row: aiosqlite.Row) -> Reply:
    return Reply(**{**dict(row), "dm": bool(row["dm"])})


class BotStore:
    """Open with `await BotStore.open(data_dir)`; one connection (aiosqlite runs its statements in order)."""

    def __init__(self, db: aiosqlite.Connection, data_dir: Path) -> None:
        self.db = db
        self.styles_dir = data_dir / "styles"

    @classmethod
    async def open(cls, data_dir: Path) -> BotStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        db = await connect_sqlite(data_dir / "bot.sqlite3", _SCHEMA)
        for table, column, kind in _ADDED_COLUMNS:  # a file written by an older bot
            present = {row["name"] for row in await db.execute_fetchall(f"PRAGMA table_info({table})")}
            if column not in present:
                await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        return cls(db, data_dir)

    async def close(self) -> None:
        await self.db.close()

    async def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        cursor = await self.db.execute(sql, args)  # one statement, committed by itself (autocommit)
        return cursor.rowcount

    # -- replies -----------------------------------------------------------------------------------------------------
    async def save_reply(self, reply: Reply) -> None:
        values = {**asdict(reply), "dm": int(reply.dm)}
        marks = ", ".join("?" * len(values))
        await self._write(f"INSERT OR REPLACE INTO replies ({', '.join(values)}) VALUES ({marks})",
                          tuple(values.values()))

    async def replies(self) -> list[Reply]:
        return [_reply(row) for row in await self.db.execute_fetchall("SELECT * FROM replies ORDER BY created_at")]

    async def forget_reply(self, job_id: str) -> None:
        await self._write("DELETE FROM replies WHERE job_id = ?", (job_id,))

    # -- guild settings ------------------------------------------------------------------------------------------------
    async def guild_settings(self, guild_id: int | None) -> GuildSettings:
        if guild_id is None:
            return GuildSettings()
        rows = list(await self.db.execute_fetchall("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)))
        if not rows:
            return GuildSettings()
        values = {name: rows[0][name] for name in _GUILD_COLUMNS}
        return GuildSettings(**{**values, "channels": tuple(json.loads(values["channels"]))})

    async def save_guild_settings(self, guild_id: int, settings: GuildSettings) -> None:
        values = {name: getattr(settings, name) for name in _GUILD_COLUMNS}
        values["channels"] = json.dumps(list(settings.channels))
        await self._write(f"INSERT OR REPLACE INTO guild_settings (guild_id, {', '.join(_GUILD_COLUMNS)}) "
                          f"VALUES ({', '.join('?' * (len(_GUILD_COLUMNS) + 1))})", (guild_id, *values.values()))

    # -- saved styles --------------------------------------------------------------------------------------------------
    async def save_style(self, guild_id: int, name: str, image: bytes, created_by: int) -> SavedStyle:
        """Store (or replace) the style `name` of a guild; the image goes to a file named by its hash."""
        name = style_key(name)
        folder = self.styles_dir / str(guild_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (hashlib.sha256(image).hexdigest()[:32] + ".img")
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(image)
            tmp.replace(path)
        old = await self.style(guild_id, name)
        now = time.time()
        await self._write("INSERT OR REPLACE INTO saved_styles VALUES (?,?,?,?,?)",
                          (guild_id, name, path.name, created_by, now))
        if old is not None and old.path != path:
            await self._drop_file_if_unused(old)
        return SavedStyle(guild_id, name, path, created_by, now)

    async def style(self, guild_id: int, name: str) -> SavedStyle | None:
        rows = list(await self.db.execute_fetchall(
            "SELECT * FROM saved_styles WHERE guild_id = ? AND name = ?", (guild_id, style_key(name))))
        return self._style(rows[0]) if rows else None

    async def styles(self, guild_id: int) -> list[SavedStyle]:
        rows = await self.db.execute_fetchall("SELECT * FROM saved_styles WHERE guild_id = ? ORDER BY name",
                                              (guild_id,))
        return [self._style(row) for row in rows]

    async def delete_style(self, guild_id: int, name: str) -> bool:
        old = await self.style(guild_id, name)
        if old is None:
            return False
        await self._write("DELETE FROM saved_styles WHERE guild_id = ? AND name = ?", (guild_id, old.name))
        await self._drop_file_if_unused(old)
        return True

    def _style(self, row: aiosqlite.Row) -> SavedStyle:
        return SavedStyle(row["guild_id"], row["name"], self.styles_dir / str(row["guild_id"]) / row["file"],
                          row["created_by"], row["created_at"])

    async def _drop_file_if_unused(self, style: SavedStyle) -> None:
        rows = list(await self.db.execute_fetchall(
            "SELECT COUNT(*) FROM saved_styles WHERE guild_id = ? AND file = ?", (style.guild_id, style.path.name)))
        if rows[0][0] == 0:
            style.path.unlink(missing_ok=True)

    # -- stats ---------------------------------------------------------------------------------------------------------
    async def tally(self, job_id: str, guild_id: int | None, user_id: int, state: JobState, created_at: float,
                    finished_at: float, run_seconds: float | None) -> None:
        await self._write("INSERT OR REPLACE INTO job_tally VALUES (?,?,?,?,?,?,?)",
                          (job_id, guild_id, user_id, state.value, created_at, finished_at, run_seconds))

    async def tallies(self, guild_id: int, since: float) -> list[JobTally]:
        rows = await self.db.execute_fetchall(
            "SELECT state, created_at, finished_at, run_seconds FROM job_tally WHERE guild_id = ? AND finished_at >= ?"
            " ORDER BY finished_at", (guild_id, since))
        return [JobTally(JobState(row["state"]), row["created_at"], row["finished_at"], row["run_seconds"])
                for row in rows]

    # -- key/values ----------------------------------------------------------------------------------------------------
    async def get_value(self, key: str) -> str | None:
        rows = list(await self.db.execute_fetchall("SELECT value FROM kv WHERE key = ?", (key,)))
        return rows[0]["value"] if rows else None

    async def set_value(self, key: str, value: str) -> None:
        await self._write("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
