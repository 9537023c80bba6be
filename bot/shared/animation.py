"""Moving pictures on the bot's side: an animated GIF, WebP or PNG, or a short MP4 / WebM / MOV clip, as content.

The engine decodes and stylises the clip in a worker; the bot's part is to know, before anything is queued, that a
content attachment is an animation at all (`probe_content`), to refuse one over the server's limits with the
numbers and what the member can do about it (`check_content_clip`: never cut short silently), to make an animation
at the server's animation size (`cap_clip_size`, said in the reply), and, should Discord still refuse a finished
animation as too large, to re-encode it smaller (`fit_animation`). All torch-free (`nst_core.clips` and
`nst_core.clip_encoding` decode and encode with Pillow and PyAV), and the slow parts run off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Final

from bot.config import MAX_CLIP_FRAMES, MAX_CLIP_SECONDS, LimitSettings
from bot.records import GuildSettings
from bot.shared.refusals import UserFacingError
from nst_core.clip_encoding import encode_animation_to_fit
from nst_core.clips import (
    CLIP_FORMAT_LABELS,
    DEFAULT_CLIP_LIMITS,
    ClipInfo,
    ClipLimits,
    check_clip,
    decode_clip,
    probe_clip,
)
from nst_core.errors import ClipLimitError
from nst_core.images import limit_text
from nst_core.params import StyleParams

__all__ = [
    "VIDEO_EXTENSIONS",
    "VIDEO_TYPES",
    "cap_clip_size",
    "check_content_clip",
    "clip_limits",
    "describe_clip",
    "fit_animation",
    "is_video_type",
    "max_clip_size",
    "probe_content",
]

#: The video content types Discord gives clips (an animated GIF, WebP or PNG is an image/* type already).
VIDEO_TYPES: Final = ("video/mp4", "video/webm", "video/quicktime")
VIDEO_EXTENSIONS: Final = (".mp4", ".webm", ".mov")


def is_video_type(content_type: str | None) -> bool:
    """True for the video content types a clip may come as ('video/mp4; codecs=...' too)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in VIDEO_TYPES


def clip_limits(limits: LimitSettings, settings: GuildSettings) -> ClipLimits:
    """The bot's animation limits, lowered by the server's own. A frame is never allowed more pixels than an
    input image is."""
    return ClipLimits(
        max_frames=min(limits.max_clip_frames, settings.max_clip_frames or limits.max_clip_frames),
        max_seconds=min(limits.max_clip_seconds, settings.max_clip_seconds or limits.max_clip_seconds),
        max_frame_pixels=min(DEFAULT_CLIP_LIMITS.max_frame_pixels, limits.max_input_pixels),
        max_total_pixels=DEFAULT_CLIP_LIMITS.max_total_pixels,
    )


def max_clip_size(limits: LimitSettings, settings: GuildSettings) -> int:
    """The long edge an animation is made at, at most: the bot's, lowered by the server's."""
    return min(limits.max_clip_size, settings.max_clip_size or limits.max_clip_size)


async def probe_content(data: bytes) -> ClipInfo | None:
    """What the content is, read from its bytes (never from the file name or the content type): a ClipInfo for
    an animation or a video, None for a still image. Raises ClipError for a clip whose frames cannot be read."""
    return await asyncio.to_thread(probe_clip, data, role="content")


#: What a member can do about each limit (`ClipLimitError.limit`), with the allowed figure filled in.
_ADVICE: Final = {
    "frames": "Trim it, or lower its frame rate, to {allowed:g} frames or fewer and send it again.",
    "seconds": "Trim it to {allowed:g} s or less and send it again.",
    "frame_pixels": "Send it at a smaller size.",
    "total_pixels": "Send a shorter or smaller clip.",
}


def check_content_clip(info: ClipInfo, limits: ClipLimits) -> None:
    """Refuse a clip over `limits` (UserFacingError: the engine's figures and what to do). Nothing is cut short:
    a member whose clip was trimmed without asking would get an animation they did not send."""
    try:
        check_clip(info, limits, role="content")
    except ClipLimitError as exc:
        advice = _ADVICE.get(exc.limit)
        if advice is None:
            raise
        raise UserFacingError(f"{exc}. {advice.format(allowed=exc.allowed)}") from exc


def cap_clip_size(params: StyleParams, limit: int) -> tuple[StyleParams, list[str]]:
    """An animation is made at most `limit` px on its long edge (every frame is a whole style transfer): a larger
    size, asked for or a preset's, is lowered, with a note for the reply."""
    if params.size <= limit:
        return params, []
    note = f"size lowered from {params.size} px to {limit} px, this server's size for animations"
    return params.replace(size=limit), [note]


def describe_clip(info: ClipInfo) -> str:
    """For the reply's headline: 'animation: 12 frames, 1.2 s (GIF)'."""
    kind = CLIP_FORMAT_LABELS.get(info.format, info.format.upper())
    return f"animation: {info.frames} frames, {info.seconds:.1f} s ({kind})"


#: A finished animation is the engine's own output, already held to its job's limits; decoding it again for a
#: smaller upload needs only a bound against a runaway file: the most any server may allow.
_RESULT_LIMITS: Final = ClipLimits(max_frames=MAX_CLIP_FRAMES, max_seconds=MAX_CLIP_SECONDS)


def fit_animation(data: bytes, max_bytes: int) -> tuple[bytes, str, str]:
    """Re-encode a finished animation (GIF, WebP or MP4 bytes) to at most `max_bytes`: (bytes, format, note).
    Blocking (decodes and encodes every frame): run it in a thread. Raises NSTError when nothing fits."""
    clip = decode_clip(data, _RESULT_LIMITS, role="result")
    fitted = encode_animation_to_fit(clip.frames, clip.durations_ms, clip.loop, max_bytes)
    note = fitted.note
    if not fitted.reduced and fitted.format == clip.format:  # the ladder's first step: its note says nothing of why
        note = f"re-encoded as {note} to fit {limit_text(max_bytes)}"
    return fitted.data, fitted.format, note
