"""Every error the engine raises on purpose, in one place.

Front ends (the `nst` CLI, the Discord bot, the job workers) catch `NSTError` and show its message as it is: each
message is written for the person who sent the input, names what was wrong and what is allowed. No torch import here,
so a front end can catch these without loading the engine.
"""

from __future__ import annotations

__all__ = [
    "ClipError",
    "ClipLimitError",
    "CorruptImageError",
    "DeviceError",
    "FileTooLargeError",
    "ImageError",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "JobCancelled",
    "NSTError",
    "NotAnImageError",
    "ParameterError",
    "UnsupportedFormatError",
    "WeightsError",
]


class NSTError(Exception):
    """Base class: the message is safe and meant to be shown to the user."""


class ParameterError(NSTError, ValueError):
    """A parameter is outside its documented range or of the wrong kind.

    `field`, `value` and `allowed` say which one, so a front end can point at the right option.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed; {allowed}")


class ImageError(NSTError):
    """An input image cannot be used. `role` is 'content', 'style' (or 'style 2', ...) or 'image'."""

    def __init__(self, message: str, *, role: str = "image") -> None:
        self.role = role
        super().__init__(message)


class NotAnImageError(ImageError):
    """The bytes are not an image in any format we read."""


class UnsupportedFormatError(ImageError):
    """The bytes are an image, but in a format we do not accept (e.g. PSD, EPS, SVG)."""


class ImageTooLargeError(ImageError):
    """Width x height is above the pixel cap (checked before the pixels are decoded)."""


class FileTooLargeError(ImageError):
    """The file is larger than the byte cap."""


class CorruptImageError(ImageError):
    """The header looks like an image but the pixel data cannot be decoded (truncated, damaged)."""


class ImageTooSmallError(ImageError):
    """The image is too small to stylise (a few pixels wide)."""


class ClipError(ImageError):
    """An animated input (GIF, APNG, WebP, MP4, WebM, MOV) cannot be used: undecodable frames, no frames at all."""


class ClipLimitError(ClipError):
    """An animated input is over a limit: frames, seconds, pixels per frame or frames x pixels.

    `limit` names which ("frames", "seconds", "frame_pixels", "total_pixels"); `value` and `allowed` are numbers, so a
    front end can quote them ("the clip has 240 frames; the limit is 48").
    """

    def __init__(self, message: str, *, limit: str, value: float, allowed: float, role: str = "content") -> None:
        self.limit = limit
        self.value = value
        self.allowed = allowed
        super().__init__(message, role=role)


class WeightsError(NSTError):
    """The VGG-19 weights named by `weights` cannot be found or loaded."""


class DeviceError(NSTError):
    """The requested device (e.g. 'cuda:1') is not available on this machine."""


class JobCancelled(NSTError):
    """Raised inside the optimisation loop when the cancellation check returns True."""

    def __init__(self, iteration: int = 0) -> None:
        self.iteration = iteration
        super().__init__(f"cancelled at iteration {iteration}")
