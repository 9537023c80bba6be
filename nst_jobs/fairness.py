"""Who runs next: round-robin between users, first-in first-out within one user.

A user with five waiting jobs does not starve a user with one: the next job always belongs to the user who was
served longest ago (never-served users first), and ties go to the earlier submission. The order is derived from the
job table alone (each started job's `dispatch_seq`), so it survives restarts without extra state.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Waiting", "fair_order"]


@dataclass(frozen=True)
class Waiting:
    job_id: str
    requester: str
    seq: int


def fair_order(waiting: Iterable[Waiting], last_served: Mapping[str, int]) -> list[str]:
    """Job ids of `waiting` in the order they will start.

    last_served maps a requester to the dispatch number of their most recently started job (absent: never).
    """
    per_user: dict[str, deque[Waiting]] = defaultdict(deque)
    for job in sorted(waiting, key=lambda j: j.seq):
        per_user[job.requester].append(job)
    served = {user: last_served.get(user, -1) for user in per_user}
    counter = max([*last_served.values(), 0]) + 1
    order: list[str] = []
    while per_user:
        user = min(per_user, key=lambda u: (served[u], per_user[u][0].seq))
        job = per_user[user].popleft()
        order.append(job.job_id)
        served[user] = counter
        counter += 1
        if not per_user[user]:
            del per_user[user]
    return order
