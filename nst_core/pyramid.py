"""The coarse-to-fine plan of one run and the clock that counts through it.

`plan_levels` turns the parameters and the content's shape into the list of levels (index, size, iteration budget),
made once per run. `RunClock` holds the iteration count, the planned total (which shrinks when a level stops early)
and the ETA, so the loop itself only says "a level starts", "one step done" and "this level stopped early".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from nst_core.params import StyleParams, scale_sizes, split_iterations

__all__ = ["Level", "RunClock", "plan_levels", "top_levels"]


@dataclass(frozen=True)
class Level:
    """One level of the pyramid: 0-based `index` of `count`, its (width, height) and its iteration budget."""

    index: int
    count: int
    size: tuple[int, int]
    iterations: int

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    @property
    def label(self) -> str:
        """`scale 2/3` as progress messages write it."""
        return f"scale {self.index + 1}/{self.count}"


def plan_levels(params: StyleParams, width: int, height: int) -> list[Level]:
    """The levels for a `width` x `height` content image, smallest first; the last has long edge `params.size`."""
    sizes = scale_sizes(width, height, params.size, params.scales)
    budgets = split_iterations(params.iterations, len(sizes))
    return [Level(index=i, count=len(sizes), size=size, iterations=budget)
            for i, (size, budget) in enumerate(zip(sizes, budgets, strict=True))]


class RunClock:
    """Iterations done, the planned total and the time left, over the whole plan."""

    def __init__(self, levels: list[Level], *, started: float | None = None) -> None:
        self.levels = levels
        self.started = time.perf_counter() if started is None else started
        self.iteration = 0
        self.total = sum(level.iterations for level in levels)
        self.setup_seconds = 0.0  # from `started` until the first level could start
        self._level = levels[0]
        self._level_started = self.started
        self._done_here = 0
        self._budget_here = levels[0].iterations

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def begin(self, level: Level) -> None:
        """`level` starts now (the first call also ends the set-up time)."""
        if level == self.levels[0]:
            self.setup_seconds = self.elapsed()
        self._level, self._done_here, self._budget_here = level, 0, level.iterations
        self._level_started = time.perf_counter()

    def step(self) -> None:
        """One optimiser iteration done."""
        self.iteration += 1
        self._done_here += 1

    @property
    def done_here(self) -> int:
        return self._done_here

    def stop_early(self) -> int:
        """The current level stops now: its unspent iterations leave the total. Returns how many."""
        skipped = self._budget_here - self._done_here
        self.total -= skipped
        self._budget_here = self._done_here
        return skipped

    def eta(self) -> float:
        """Seconds left: this level's remaining steps at its measured pace, later levels scaled by their pixels."""
        per_iteration = (time.perf_counter() - self._level_started) / max(self._done_here, 1)
        here = self._level
        eta = per_iteration * (self._budget_here - self._done_here)
        for later in self.levels[self.levels.index(here) + 1:]:
            eta += per_iteration * later.iterations * later.pixels / here.pixels
        return eta

    def optimise_seconds(self) -> float:
        return self.elapsed() - self.setup_seconds


def top_levels(plan: list[Level], levels: int, iterations: int) -> list[Level]:
    """Only the top `levels` of `plan`, sharing `iterations`: for a run that starts from a picture that already has
    the coarse structure (an animation's previous frame warped onto the next, an earlier result made larger)."""
    top = plan[-max(1, min(levels, len(plan))):]
    budgets = split_iterations(max(iterations, len(top)), len(top))
    return [Level(index=level.index, count=level.count, size=level.size, iterations=budget)
            for level, budget in zip(top, budgets, strict=True)]
