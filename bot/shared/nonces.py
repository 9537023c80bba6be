"""Message nonces made from the job, so that a message the bot posts again after a crash is not posted twice.

Why it exists: a job's progress message and its outcome may be posted in the channel (once the interaction token ran
out) and the bot can die between the post and recording it. discord.py sends every message with `enforce_nonce`;
Discord answers a post that repeats a nonce of the same author in the same channel within a few minutes with the
first message instead of making another. A random nonce (discord.py's default) never repeats, so the restarted bot
would post a second copy; a nonce derived from the job and the message's role repeats exactly when the message is
the same one. Where a genuinely new message is wanted (the progress message was deleted by someone), `attempt`
counts up.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

__all__ = ["MAX_NONCE_LENGTH", "MessageRole", "message_nonce"]

#: Discord refuses a longer nonce (400, Invalid Form Body).
MAX_NONCE_LENGTH = 25


class MessageRole(StrEnum):
    """Which of a job's messages a post is (one letter: it goes into the nonce)."""

    PROGRESS = "p"  # the channel message that carries the progress once the interaction token ran out
    OUTCOME = "o"  # the result, failure or cancellation posted in the channel (or a direct message)


def message_nonce(job_id: str, role: MessageRole, attempt: int = 0) -> str:
    """`<job id>.<role><attempt>` (job ids are 12 characters: 16 in all); a key too long for Discord is hashed."""
    nonce = f"{job_id}.{role.value}{attempt}"
    if len(nonce) > MAX_NONCE_LENGTH:
        nonce = hashlib.blake2b(nonce.encode(), digest_size=12).hexdigest()  # 24 characters
    return nonce
