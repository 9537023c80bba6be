"""What `nst stylize --broker` hands to a job system: the contract between the engine's CLI and a remote runner.

The engine imports nothing above it, so it cannot run a job elsewhere itself: a job system implements
`RemoteRunner` and passes it to `nst_core.cli.main(argv, remote=...)` (the installed `nst` command does). The CLI
does everything else the same way for local and remote runs: the checks, the progress bar, Ctrl-C, the output file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nst_core.clips import DEFAULT_CLIP_LIMITS, ClipLimits
from nst_core.errors import NSTError
from nst_core.params import StyleParams

if TYPE_CHECKING:
    from nst_core.progress import CancelCheck, ProgressCallback
    from nst_core.result import JobResult

__all__ = ["RemoteJob", "RemoteJobFailed", "RemoteRunner"]


class RemoteJobFailed(NSTError):
    """A job run elsewhere failed for a reason of its own (an image, a parameter). The message is the worker's,
    naming images by role as the engine does ('style 2 image is ...'); the CLI puts the paths in."""


@dataclass(frozen=True)
class RemoteJob:
    """A checked `nst stylize` job for a RemoteRunner: what `run_job` would be given here, and where to send it."""

    broker: str  # the --broker URL
    params: StyleParams
    content: bytes
    styles: tuple[bytes, ...]
    output_format: str
    max_output_bytes: int | None
    clip_limits: ClipLimits = DEFAULT_CLIP_LIMITS
    animation_format: str = "auto"
    continue_from: bytes | None = None  # --continue-from: the earlier result a still starts from


class RemoteRunner(Protocol):
    """Runs a RemoteJob elsewhere and waits for it (`nst stylize --broker`).

    Feeds `progress` the job's ProgressEvents and `say` one-line notices ('waiting for a worker ...'); polls
    `should_cancel` (Ctrl-C) and then stops the job. Returns the JobResult; raises JobCancelled once a cancel
    stopped it, RemoteJobFailed for a job that failed for a reason of its own, another NSTError for anything else
    (one line for the user: an unreachable broker, a lost worker ...).
    """

    def __call__(self, job: RemoteJob, *, progress: ProgressCallback, say: Callable[[str], None],
                 should_cancel: CancelCheck) -> JobResult: ...
