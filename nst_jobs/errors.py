"""Errors of the job queue, each with a message a front end can show as it is."""

from __future__ import annotations

from nst_core.errors import NSTError

__all__ = ["JobFinishedError", "JobNotFoundError", "NotAllowedError", "QueueError", "QueueFullError", "UserCapError"]


class QueueError(NSTError):
    """Base class of the queue's own errors."""


class QueueFullError(QueueError):
    """The global cap of waiting + running jobs is reached."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        super().__init__(f"the queue is full ({cap} jobs waiting or running); try again in a few minutes")


class UserCapError(QueueError):
    """This user already has the maximum number of waiting + running jobs."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        super().__init__(f"you already have {cap} job{'s' if cap != 1 else ''} waiting or running; wait for one to "
                         "finish or cancel one")


class JobNotFoundError(QueueError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"there is no job {job_id}")


class NotAllowedError(QueueError):
    """Someone other than the requester (and without the right to) tried to cancel a job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is not yours to cancel")


class JobFinishedError(QueueError):
    def __init__(self, job_id: str, state: str) -> None:
        self.state = state
        super().__init__(f"job {job_id} is already {state}")
