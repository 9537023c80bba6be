"""A still's optimisation as a short animated GIF: the picture turning from photo into painting.

`TimelapseRecorder` sits between the engine and the caller's progress hook and keeps a small frame at iterations
spread evenly over the planned run (coarse levels upscaled to the final frame size, so the clip sharpens as the
pyramid climbs), then holds the finished result at the end. Frames come from the events' own preview renderer, so
the colour strategy is applied as in every preview.
"""

from __future__ import annotations

from PIL import Image

from nst_core.clip_encoding import encode_animation
from nst_core.progress import EventKind, ProgressCallback, ProgressEvent

__all__ = ["TIMELAPSE_MAX_SIDE", "TimelapseRecorder"]

#: Long edge of a timelapse frame: small enough that 24 frames stay a few hundred kB.
TIMELAPSE_MAX_SIDE = 192
#: How long each recorded frame shows, and how long the finished result is held at the end (ms).
FRAME_MS = 120
HOLD_MS = 1500


class TimelapseRecorder:
    """Records `frames` small frames of one run; `hook(progress)` wraps the caller's progress callback."""

    def __init__(self, frames: int, *, max_side: int = TIMELAPSE_MAX_SIDE) -> None:
        if frames < 2:
            raise ValueError("a timelapse needs at least 2 frames")
        self.frames = frames
        self.max_side = max_side
        self.recorded: list[Image.Image] = []
        self._next = 1  # the next frame's 1-based number; frame k is taken at iteration k * total / frames

    def hook(self, progress: ProgressCallback | None) -> ProgressCallback:
        def record(event: ProgressEvent) -> None:
            self.observe(event)
            if progress is not None:
                progress(event)

        return record

    def observe(self, event: ProgressEvent) -> None:
        # The last frame is the finished image (`gif`); the recorder takes the frames before it.
        if event.kind != EventKind.ITERATION or event.preview is None or self._next >= self.frames:
            return
        if event.iteration * self.frames >= self._next * max(event.total, 1):
            self.recorded.append(event.preview(self.max_side))
            self._next += 1

    def gif(self, result: Image.Image) -> bytes:
        """The timelapse, ending on `result` (the finished image), as a looping GIF."""
        final = result.copy()
        final.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        frames = [image if image.size == final.size else image.resize(final.size, Image.Resampling.LANCZOS)
                  for image in self.recorded] + [final]
        durations = [FRAME_MS] * (len(frames) - 1) + [HOLD_MS]
        return encode_animation(frames, durations, 0, "gif")
