"""nst_core: Gatys-style neural style transfer on VGG-19, usable without Discord (see the `nst` command).

Importing the package does not import torch: the parameter model, errors, progress events and image decoding are
torch-free so a front end (the Discord bot) can validate and decode in its own process. `run_job` and the engine
modules load torch when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nst_core.clips import ClipLimits
from nst_core.errors import (
    ClipError,
    ClipLimitError,
    CorruptImageError,
    DeviceError,
    FileTooLargeError,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    JobCancelled,
    NotAnImageError,
    NSTError,
    ParameterError,
    UnsupportedFormatError,
    WeightsError,
)
from nst_core.params import PRESETS, StyleParams
from nst_core.progress import ProgressEvent
from nst_core.result import JobResult

if TYPE_CHECKING:
    from nst_core.job import run_job

__all__ = [
    "PRESETS",
    "ClipError",
    "ClipLimitError",
    "ClipLimits",
    "CorruptImageError",
    "DeviceError",
    "FileTooLargeError",
    "ImageError",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "JobCancelled",
    "JobResult",
    "NSTError",
    "NotAnImageError",
    "ParameterError",
    "ProgressEvent",
    "StyleParams",
    "UnsupportedFormatError",
    "WeightsError",
    "run_job",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "run_job":
        from nst_core import job

        return getattr(job, name)
    raise AttributeError(f"module 'nst_core' has no attribute {name!r}")
