"""The bot's log lines as an operator's collector reads them: `logging.format = "json"` gives one JSON object per line
(time, level, logger, message, and a job's id, guild and duration where the line is about a job), and the token
never appears, in JSON or in text, wherever it was (message, argument, extra field, exception). Each check runs
`setup_logging` in a fresh interpreter, as `nst-bot` does, and reads what it wrote to stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import BotConfig, ConfigError, load_config
from nst_jobs.log_format import LogFormat

TOKEN = "MTIzNDU2Nzg5.Gabcde.secret-part-of-the-token"
LOGGING = f"""
import logging, sys
from bot.logs import setup_logging
from nst_jobs.log_format import LogFormat, job_fields
setup_logging("INFO", {TOKEN!r}, LogFormat(sys.argv[1]))
log = logging.getLogger("bot.reporter")
log.info("job %s: outcome (done) delivered", "abc123",
         extra=job_fields("abc123", guild_id=1234567890123456789, duration=12.34567))
log.warning("token in the message: {TOKEN}")
log.warning("token in an argument: %s", "Bot {TOKEN}")
log.info("token in a field", extra={{"url": "https://discord.test/?t={TOKEN}"}})
try:
    raise RuntimeError("401 for {TOKEN}")
except RuntimeError:
    log.exception("a request failed")
logging.getLogger("discord.client").debug("not shown at INFO")
"""


def run_logging(fmt: LogFormat) -> str:
    result = subprocess.run([sys.executable, "-c", LOGGING, fmt.value], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_json_lines_parse_carry_the_job_and_never_the_token() -> None:
    output = run_logging(LogFormat.JSON)
    assert TOKEN not in output
    lines = [json.loads(line) for line in output.splitlines()]  # every line is one JSON object
    assert len(lines) == 5
    job = lines[0]
    assert job["message"] == "job abc123: outcome (done) delivered" and job["level"] == "INFO"
    assert job["logger"] == "bot.reporter" and job["time"].endswith("+00:00")  # ISO 8601, UTC
    assert job["job_id"] == "abc123" and job["guild_id"] == "1234567890123456789"  # a string: no float rounding
    assert job["duration_seconds"] == 12.346
    assert lines[1]["message"] == "token in the message: [token redacted]" and lines[1]["level"] == "WARNING"
    assert lines[2]["message"] == "token in an argument: Bot [token redacted]"
    assert lines[3]["url"] == "https://discord.test/?t=[token redacted]"
    assert lines[4]["level"] == "ERROR" and "RuntimeError: 401 for [token redacted]" in lines[4]["exc_info"]
    assert "job_id" not in lines[1]  # only lines about a job carry one


def test_text_lines_keep_the_token_out_too() -> None:
    output = run_logging(LogFormat.TEXT)
    assert TOKEN not in output and output.count("[token redacted]") >= 3
    first = output.splitlines()[0]
    assert first.endswith("INFO    bot.reporter: job abc123: outcome (done) delivered")
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)


def test_logging_format_is_checked_at_start_up(tmp_path: Path) -> None:
    assert BotConfig().logging.format == LogFormat.TEXT
    path = tmp_path / "config.toml"
    path.write_text('[logging]\nformat = "json"\n')
    assert load_config(path, {}).logging.format == LogFormat.JSON
    path.write_text('[logging]\nformat = "xml"\n')
    with pytest.raises(ConfigError, match=r"logging\.format: Input should be 'text' or 'json'"):
        load_config(path, {})
