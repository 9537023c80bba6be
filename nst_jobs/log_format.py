"""How the bot and `nst-worker` write their log lines: plain text for people, or JSON lines for a log collector.

Why it exists: both processes offer the same choice (`logging.format` in the bot's config, `nst-worker
--log-format`), so the formatter is made in one place. JSON lines come from python-json-logger and carry `time`
(ISO 8601, UTC), `level`, `logger` and `message`, plus whatever a log call passes as `extra=`: the calls about one
job pass `job_fields(...)` (`job_id`, and `guild_id` and `duration_seconds` where there are such), so a collector
can follow one job through the bot and its workers.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from nst_jobs.models import Job

__all__ = ["TEXT_FORMAT", "LogFormat", "job_fields", "make_formatter"]

#: The text format: time, level, logger, message.
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == LogFormat.JSON:
        return JsonFormatter("%(levelname)s %(name)s %(message)s", timestamp="time",
                             rename_fields={"levelname": "level", "name": "logger"})
    return logging.Formatter(TEXT_FORMAT)


def job_fields(job: Job | str, *, guild_id: int | str | None = None, duration: float | None = None) -> dict[str, Any]:
    """`extra=` for a log call about one job: a `Job` gives its id, guild and run time (once it ended); a job id
    gives the id, with the guild and duration when the caller knows them."""
    if isinstance(job, Job):
        job_id = job.id
        guild_id = job.guild_id if guild_id is None else guild_id
        duration = job.run_seconds if duration is None else duration
    else:
        job_id = job
    fields: dict[str, Any] = {"job_id": job_id}
    if guild_id is not None:
        fields["guild_id"] = str(guild_id)  # a Discord id is above 2**53: as a string, JSON readers keep it whole
    if duration is not None:
        fields["duration_seconds"] = round(duration, 3)
    return fields
