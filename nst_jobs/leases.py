"""Who holds a running job's lease: the name a queue process writes as the owner, and whether that process is gone.

A lease names its owner `host:pid:tag`. After a crash the restarted bot finds jobs still marked running; one whose
owner was a process on this machine that no longer runs can go back in line at once, without waiting for its lease
to expire. An owner on another machine is judged by its lease alone.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["lease_owner_name", "owner_is_gone"]


def lease_owner_name() -> str:
    """A new owner name for this process: host, process id and a random tag (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def owner_is_gone(owner: str | None) -> bool:
    """True when `owner` (host:pid:tag) was a process on this machine that no longer runs."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine: only its lease can tell
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # an earlier life of this very process id (a container restarts as pid 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
