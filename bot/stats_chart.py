"""The numbers and the chart of `/nst-admin stats`: jobs per day by outcome and the median run time per day.

Why a module of its own: the figures (`daily_stats`, from the bot's tally of finished jobs) are what the reply's text
and the chart both show, so they are worked out once; the chart (`render_chart`) is drawn with matplotlib's Agg canvas
on a `Figure` of its own (no pyplot, no display, no state shared between two renders, so it may run in a thread).
matplotlib is imported only when a chart is drawn, not when the bot starts.
"""

from __future__ import annotations

import datetime as dt
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bot.records import JobTally
from nst_jobs.models import JobState

__all__ = ["OUTCOMES", "STATS_PERIODS", "DailyStats", "daily_stats", "period_start", "render_chart"]

#: The periods an admin can pick, in days.
STATS_PERIODS = (7, 30)
#: The outcomes shown, in the chart's stacking order, with their colours.
OUTCOMES = ((JobState.DONE, "#3b8c4a"), (JobState.FAILED, "#c2403a"), (JobState.CANCELLED, "#9a9a9a"))
_WIDTH_PX, _HEIGHT_PX, _DPI = 900, 420, 100


@dataclass(frozen=True)
class DailyStats:
    """Per UTC day of the period, oldest first: how many jobs ended in each outcome and the median run time of
    those done (None on a day without one)."""

    days: tuple[dt.date, ...]
    counts: dict[JobState, tuple[int, ...]]
    medians: tuple[float | None, ...]

    def total(self, day_index: int) -> int:
        return sum(per_day[day_index] for per_day in self.counts.values())


def period_start(days: int, now: dt.datetime) -> dt.datetime:
    """Midnight UTC at the start of the period's first day: the period is `days` whole days, today included."""
    today = now.astimezone(dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    return dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)


def daily_stats(tallies: Sequence[JobTally], days: int, now: dt.datetime) -> DailyStats:
    start = period_start(days, now).date()
    span = tuple(start + dt.timedelta(days=i) for i in range(days))
    index = {day: i for i, day in enumerate(span)}
    counts = {state: [0] * days for state, _ in OUTCOMES}
    runs: list[list[float]] = [[] for _ in span]
    for tally in tallies:
        i = index.get(dt.datetime.fromtimestamp(tally.finished_at, dt.UTC).date())
        if i is None or tally.state not in counts:
            continue
        counts[tally.state][i] += 1
        if tally.state == JobState.DONE and tally.run_seconds is not None:
            runs[i].append(tally.run_seconds)
    return DailyStats(days=span, counts={state: tuple(per_day) for state, per_day in counts.items()},
                      medians=tuple(statistics.median(r) if r else None for r in runs))


def render_chart(stats: DailyStats, title: str) -> bytes:
    """A PNG: stacked bars of jobs per day by outcome, and the median run time of each day's done jobs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(_WIDTH_PX / _DPI, _HEIGHT_PX / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    bars = figure.add_subplot()
    x = range(len(stats.days))
    bottom = [0] * len(stats.days)
    for state, colour in OUTCOMES:
        heights = stats.counts[state]
        bars.bar(x, heights, bottom=bottom, color=colour, label=state.value, width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    bars.set_ylabel("jobs")
    bars.set_ylim(0, max(max(bottom, default=0), 1) * 1.3)  # room for the legend
    bars.yaxis.get_major_locator().set_params(integer=True)
    step = 1 if len(stats.days) <= 10 else 3
    bars.set_xticks(list(x)[::step], [d.strftime("%m-%d") for d in stats.days][::step])

    in_minutes = max((m for m in stats.medians if m is not None), default=0) >= 120
    unit, scale = ("min", 60.0) if in_minutes else ("s", 1.0)
    times = bars.twinx()
    points = [(i, m / scale) for i, m in enumerate(stats.medians) if m is not None]
    if points:
        times.plot([p[0] for p in points], [p[1] for p in points], color="#2f5f9e", marker="o",
                   label="median run time")
        times.set_ylim(0, max(p[1] for p in points) * 1.25)
    times.set_ylabel(f"median run time ({unit})")
    handles = [*bars.get_legend_handles_labels()[0], *times.get_legend_handles_labels()[0]]
    bars.legend(handles=handles, loc="upper left", fontsize="small", frameon=False, ncols=4)
    bars.set_title(title)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
