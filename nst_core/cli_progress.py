"""What `nst stylize` shows while a job runs, and how Ctrl-C reaches it: the progress bar and the cancel flag.

Shared by local runs and by runners that run the job elsewhere (`nst_core.cli.RemoteRunner`): both feed the same
bar from ProgressEvents, so a remote job looks like a local one. tqdm is imported only when there is a bar to draw.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from nst_core.errors import NSTError
from nst_core.progress import EventKind

if TYPE_CHECKING:
    from tqdm import tqdm

    from nst_core.progress import ProgressEvent

__all__ = ["CancelFlag", "FrameError", "ProgressBar", "clock"]


class FrameError(NSTError):
    """A `--save-every` frame cannot be written."""


def clock(seconds: float) -> str:
    """0:12, 3:05, 1:02:03."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Turns ProgressEvents into a tqdm bar on stderr, messages, and `--save-every` frames."""

    # No {remaining}: tqdm's rate-based ETA is wrong for coarse-to-fine (later levels are slower); ours is in postfix.
    BAR_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, total: int, *, quiet: bool, output: Path, save_every: int | None) -> None:
        self.total = total
        self.quiet = quiet
        self.output = output
        self.save_every = save_every
        self.bar: tqdm[Any] | None = None
        self.shown: set[str] = set()
        self.frames = 0

    def say(self, message: str) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
        self.shown.add(message)

    def _ensure_bar(self) -> tqdm[Any] | None:
        if self.bar is None and not self.quiet:
            from tqdm import tqdm

            # Created at the first event, so errors raised before any work (a bad image) print without a bar.
            self.bar = tqdm(total=self.total, file=sys.stderr, unit="it", dynamic_ncols=True,
                            bar_format=self.BAR_FORMAT)
        return self.bar

    def __call__(self, event: ProgressEvent) -> None:
        bar = self._ensure_bar()
        if event.kind == "iteration":
            if bar is not None:
                if event.total != bar.total:
                    bar.total = event.total
                parts = [f"scale {event.scale}/{event.scales} {event.width}x{event.height}"]
                if event.frames:
                    parts.insert(0, f"frame {event.frame}/{event.frames}")
                if "total" in event.losses:
                    parts.append(f"loss {event.losses['total']:.4g}")
                if event.eta is not None:
                    parts.append(f"eta {clock(event.eta)}")
                bar.set_postfix_str(", ".join(parts), refresh=False)
                bar.update(event.iteration - bar.n)  # redraws at most every 0.1 s
            if self.save_every and event.iteration % self.save_every == 0 and event.preview is not None:
                self._save_frame(event)
        else:
            if bar is not None and event.total != bar.total:
                bar.total = event.total
                bar.refresh()
            # An animation's later frames would repeat their level messages once per frame: the bar says the frame.
            if event.message and event.frame <= 1 and event.kind != EventKind.FRAME:
                self.say(event.message)

    def _save_frame(self, event: ProgressEvent) -> None:
        assert event.preview is not None
        path = self.output.with_name(f"{self.output.stem}-{event.iteration:04d}.png")
        if self.frames == 0:
            self.say(f"saving every {self.save_every} iterations to {path.parent}/{self.output.stem}-NNNN.png")
        image = event.preview(max(event.width, event.height))
        try:
            image.save(path, format="PNG")
        except OSError as exc:
            raise FrameError(f"cannot write frame '{path}': {exc.strerror or exc}") from None
        self.frames += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CancelFlag:
    """SIGINT (Ctrl-C) sets the flag the engine polls, so it stops cooperatively; a second Ctrl-C interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None
        self.installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> CancelFlag:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            self.installed = False
