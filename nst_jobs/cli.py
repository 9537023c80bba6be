"""The installed `nst` command: the engine's CLI (`nst_core.cli`) plus `--broker`, run on Celery workers.

The engine cannot run a job elsewhere (it imports nothing above it), so this module hands `nst_core.cli.main` the
`RemoteRunner` for `nst stylize ... --broker URL`: it sends the job through the shared Celery client
(`celery_client`, the one the bot's backend uses), feeds the CLI's progress bar, and turns the job's outcome into
the CLI's result or one-line error. Everything else (`nst info`, local runs, every check and message) is nst_core's.
The time limit and visibility timeout it assumes are the workers' NST_TIME_LIMIT / NST_VISIBILITY_TIMEOUT (or the
defaults); a job no worker takes within their `CeleryLimits.unclaimed_after` fails instead of waiting for ever.

Celery is imported only for `--broker`, so local runs and `nst --help` work without the `scale` extra.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nst_core import cli as core_cli
from nst_core.cli import CLIError
from nst_core.errors import JobCancelled
from nst_core.progress import CancelCheck, ProgressCallback, ProgressEvent
from nst_core.remote import RemoteJob, RemoteJobFailed
from nst_jobs.config import CeleryLimits, QueueConfig

if TYPE_CHECKING:
    from nst_core.result import JobResult
    from nst_jobs.celery_client import Outcome

__all__ = ["main", "run_on_broker"]

_QUEUE_DEFAULTS = QueueConfig()
#: Seconds a Ctrl-C'd job gets to stop on the worker before it is killed (the bot's default grace).
CANCEL_GRACE = _QUEUE_DEFAULTS.cancel_grace_seconds
#: Runs of a job whose worker died before the CLI gives up (the bot's default).
MAX_ATTEMPTS = _QUEUE_DEFAULTS.max_attempts


def run_on_broker(job: RemoteJob, *, progress: ProgressCallback, say: Callable[[str], None],
                  should_cancel: CancelCheck, limits: CeleryLimits | None = None) -> JobResult:
    """The `RemoteRunner` for `--broker`: send `job` to the nst-workers of `job.broker` and wait for it."""
    try:
        limits = CeleryLimits.from_env() if limits is None else limits
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    try:
        from nst_jobs.celery_app import ping_broker
        from nst_jobs.celery_client import CeleryClient, OutcomeKind, ProgressReport
        from nst_jobs.work import WorkPayload
    except ImportError as exc:
        raise CLIError(f"--broker needs Celery and redis ({exc}); install them with: pip install "
                       "'nst-discord[scale]'") from None

    ping_broker(job.broker)  # BrokerUnavailableError (an NSTError) names the URL without its password
    payload = WorkPayload(job_id=uuid.uuid4().hex, params=job.params.to_dict(), content=job.content,
                          styles=job.styles, output_format=job.output_format, max_output_bytes=job.max_output_bytes,
                          clip_limits=job.clip_limits.to_dict(), animation_format=job.animation_format,
                          continue_from=job.continue_from)
    iteration = 0

    def on_report(report: ProgressReport) -> None:
        nonlocal iteration
        event = ProgressEvent.from_dict(report.event)
        iteration = event.iteration
        progress(event)

    client = CeleryClient(job.broker, limits)
    try:
        outcome = client.run(payload, on_report=on_report, say=say, should_cancel=should_cancel,
                             max_attempts=MAX_ATTEMPTS, cancel_grace=CANCEL_GRACE)
    finally:
        client.close()
    if outcome.kind is OutcomeKind.DONE and outcome.result is not None:
        return outcome.result
    raise _error(outcome, payload.job_id, iteration, cancelled_here=should_cancel())


def _error(outcome: Outcome, job_id: str, iteration: int, *, cancelled_here: bool) -> Exception:
    """What the CLI shows for a job that did not finish."""
    from nst_jobs.celery_client import OutcomeKind

    if outcome.kind is OutcomeKind.CANCELLED:
        return JobCancelled(iteration) if cancelled_here else CLIError(f"job {job_id} was cancelled on the worker")
    if outcome.kind is OutcomeKind.FAILED:
        return RemoteJobFailed(outcome.reason)
    if outcome.kind is OutcomeKind.WORKER_LOST:
        return CLIError(f"{outcome.reason}, {MAX_ATTEMPTS} times; giving up")
    return CLIError(outcome.reason)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `nst` command with `argv` (default: sys.argv[1:]) and return the exit status."""
    # The CLI tells its user what matters in its own words; the job system's log lines are for services, which
    # configure logging (with no handler at all, Python would print the warnings on stderr).
    logging.getLogger("nst_jobs").addHandler(logging.NullHandler())
    return core_cli.main(argv, remote=run_on_broker)


if __name__ == "__main__":
    sys.exit(main())
