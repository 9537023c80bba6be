"""Logging for the bot process: text or JSON lines (`logging.format`), and a filter that keeps the bot token out of
every log line in either.

discord.py never logs the token on purpose, but an exception message, a URL or a field passed as `extra=` could
carry it; the filter replaces it wherever it appears (message, arguments, extra fields, exception text) before any
handler formats the record, so the text and the JSON formatter both only ever see the redacted record.
"""

from __future__ import annotations

import logging

from nst_jobs.log_format import LogFormat, make_formatter

__all__ = ["RedactToken", "setup_logging"]

_REDACTED = "[token redacted]"
#: What every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RedactToken(logging.Filter):
    """Replaces `secret` in a record's final message, its extra fields and its exception text."""

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
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRIBUTES and isinstance(value, str) and self.secret in value:
                setattr(record, key, value.replace(self.secret, _REDACTED))
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if self.secret in text:
                record.exc_text = text.replace(self.secret, _REDACTED)
                record.exc_info = None
        return True


def setup_logging(level: str, secret: str = "", fmt: LogFormat = LogFormat.TEXT) -> None:
    """Log to stderr as `fmt` says; every handler of the root logger drops the token from what it writes."""
    logging.basicConfig(level=level)
    formatter = make_formatter(fmt)
    redact = RedactToken(secret)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redact)
