"""Logging for the bot process: one format, and a filter that keeps the bot token out of every log line.

discord.py never logs the token on purpose, but an exception message or a URL could carry it; the filter replaces
it wherever it appears (message, arguments, exception text) before any handler writes the record.
"""

from __future__ import annotations

import logging

__all__ = ["RedactToken", "setup_logging"]

_REDACTED = "[token redacted]"


class RedactToken(logging.Filter):
    """Replaces `secret` in a record's final message and exception text."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secret:
            return True
        message = record.getMessage()
        if self.secret in message:
            record.msg = message.replace(self.secret, _REDACTED)
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if self.secret in text:
                record.exc_text = text.replace(self.secret, _REDACTED)
                record.exc_info = None
        return True


def setup_logging(level: str, secret: str = "") -> None:
    """Log to stderr with timestamps; every handler of the root logger drops the token from what it writes."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    redact = RedactToken(secret)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
