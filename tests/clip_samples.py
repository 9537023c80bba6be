"""A tiny synthetic clip for the clip decoding and encoding tests: frames that differ, and their durations."""

from __future__ import annotations

from PIL import Image

DURATIONS = [40, 60, 80, 100]  # 0.28 s


def moving_frames(n: int = 4, width: int = 64, height: int = 64) -> list[Image.Image]:
    """A colour gradient (red across, green down) with a square moving right and changing colour: frames differ."""
    ramp = Image.linear_gradient("L").resize((width, height))
    background = Image.merge("RGB", (ramp.rotate(90), ramp, Image.new("L", (width, height), 150)))
    frames = []
    for i in range(n):
        frame = background.copy()
        x = 4 + i * (width // (n + 2))
        frame.paste((250, 200 - 40 * i, 40 + 50 * i), (x, height // 3, x + width // 4, height // 3 + height // 4))
        frames.append(frame)
    return frames
