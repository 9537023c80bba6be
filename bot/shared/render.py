"""The words and bars a member sees in a job's reply, as pure functions of the job's state (easy to test, and the
reporter edits the message only when this text changes).

For an animation the progress line names the frame being painted ("frame 3/12"); its bar, iteration count and ETA
cover the whole clip (the engine counts them so), and the done line says how many frames and how long it plays."""

from __future__ import annotations

from typing import Any

from nst_core.encoding import format_label
from nst_core.images import human_bytes
from nst_core.progress import ProgressEvent

__all__ = [
    "cancelled_text",
    "clip_length",
    "done_text",
    "failed_text",
    "file_note",
    "interrupted_text",
    "progress_bar",
    "progress_text",
    "queued_text",
    "timelapse_text",
]

BAR_WIDTH = 16
RESTARTING = "🔄 The bot is restarting."


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`[██████░░░░░░░░░░]` for a fraction in 0..1."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "█" * filled + "░" * (width - filled) + "]"


def duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '1 h 02 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def headline(job_id: str, summary: str) -> str:
    return f"**Style transfer** `{job_id}` · {summary}"


def queued_text(job_id: str, summary: str, position: int | None, waiting: int, *, restarting: bool = False) -> str:
    """A waiting job; `restarting`: the bot is stopping to restart, and the job stays queued through it."""
    if position is None:
        place = "in the queue"
    elif position == 1:
        place = "next in line"
    else:
        place = f"position {position} of {max(waiting, position)} in the queue"
    text = f"{headline(job_id, summary)}\n⏳ Waiting: {place}."
    if restarting:
        text += f"\n{RESTARTING} This job stays in the queue and starts after the restart; nothing to do."
    return text


def interrupted_text(job_id: str, summary: str) -> str:
    """A running job the bot stopped to restart (it did not finish within `queue.drain_seconds`)."""
    return (f"{headline(job_id, summary)}\n{RESTARTING} This job was stopped before it finished; it goes back in the "
            "queue and starts again from the beginning after the restart. Nothing to do.")


def progress_text(job_id: str, summary: str, event: ProgressEvent | None) -> str:
    if event is None:
        return f"{headline(job_id, summary)}\n🎨 Starting (loading the model)…"
    percent = round(event.fraction * 100)
    frame = f"frame {event.frame}/{event.frames} · " if event.frames else ""
    line = (f"🎨 `{progress_bar(event.fraction)}` {percent}% · {frame}scale {event.scale}/{event.scales} "
            f"({event.width}x{event.height}) · iteration {event.iteration}/{event.total}")
    if event.eta is not None:
        line += f" · about {duration(event.eta)} left"
    text = f"{headline(job_id, summary)}\n{line}"
    if event.kind == "downsized" and event.message:
        text += f"\n⚠️ {event.message}"
    return text


def done_text(job_id: str, summary: str, result: dict[str, Any], *, size_note: str, elapsed: float) -> str:
    params = result.get("params") or {}
    frames = int(result.get("frames") or 1)
    clip = f"{clip_length(frames, int(result.get('duration_ms') or 0))} · " if frames > 1 else ""
    line = (f"✅ Done in {duration(elapsed)} · {result.get('width')}x{result.get('height')} · {clip}"
            f"{result.get('iterations')} iterations · seed {params.get('seed')} · {size_note}")
    notes = [f"ℹ️ {note}" for note in result.get("notes") or []]
    return "\n".join([headline(job_id, summary), line, *notes])


def failed_text(job_id: str, summary: str, reason: str) -> str:
    return f"{headline(job_id, summary)}\n❌ Failed: {reason}"


def failed_privately(job_id: str, reason: str) -> str:
    """The private note to the requester of a failed job: why, and what to do."""
    return (f"⚠️ Your style transfer `{job_id}` failed: {reason}. Nothing else is needed from you: run /stylize again "
            "(a new attempt starts from the beginning), or /queue to see what is running.")


def cancelled_text(job_id: str, summary: str, by: str | None) -> str:
    who = f" by <@{by}>" if by and by.isdigit() else ""
    return f"{headline(job_id, summary)}\n🛑 Cancelled{who}."


def clip_length(frames: int, duration_ms: int) -> str:
    """'12 frames, 1.2 s'."""
    return f"{frames} frames, {duration_ms / 1000:.1f} s"


def file_note(fmt: str, size: int) -> str:
    """'PNG (1.2 MB)', 'GIF (300.5 KB)'."""
    return f"{format_label(fmt)} ({human_bytes(size)})"


def timelapse_text(job_id: str, size: int) -> str:
    """The words above a still's timelapse GIF."""
    return f"⏱️ Timelapse of `{job_id}`: how the picture took shape, step by step (GIF, {human_bytes(size)})."


def moved_text(job_id: str) -> str:
    return f"**Style transfer** `{job_id}` · this reply can no longer be edited; updates continue below."
