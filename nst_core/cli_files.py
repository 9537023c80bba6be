"""The `nst` command's files: reading the inputs, the output's format from its extension, writing the result.

Each failure is a `CLIError` naming the path and what to do, as every other command-line mistake is.
"""

from __future__ import annotations

from pathlib import Path

from nst_core.errors import NSTError

__all__ = ["ANIMATION_OUTPUTS", "OUTPUT_FORMATS", "CLIError", "check_output", "output_format_for", "read_input",
           "write_file"]

OUTPUT_FORMATS: dict[str, str] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
#: An animated CONTENT (GIF, APNG, WebP, MP4, WebM, MOV) is written as one of these.
ANIMATION_OUTPUTS: dict[str, str] = {".gif": "gif", ".webp": "webp", ".mp4": "mp4"}


class CLIError(NSTError):
    """A problem with the command line itself (a path, the output extension); shown like any NSTError."""


def output_format_for(path: Path, *, animation: bool = False) -> str:
    """Encoder format for an output path, from its extension (CLIError for anything else)."""
    formats = ANIMATION_OUTPUTS if animation else OUTPUT_FORMATS
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        allowed = ", ".join(formats)
        ext = f"extension {path.suffix!r}" if path.suffix else "no extension"
        what = "the content is an animation, so the" if animation else "the"
        raise CLIError(f"output '{path}' has {ext}; {what} output must be one of {allowed}")
    return fmt


def read_input(path_text: str, role: str) -> bytes:
    path = Path(path_text)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CLIError(f"{role} image '{path_text}' does not exist") from None
    except IsADirectoryError:
        raise CLIError(f"{role} image '{path_text}' is a folder, not a file") from None
    except PermissionError:
        raise CLIError(f"{role} image '{path_text}' cannot be read: permission denied") from None
    except OSError as exc:
        raise CLIError(f"{role} image '{path_text}' cannot be read: {exc.strerror or exc}") from None


def check_output(path: Path) -> None:
    folder = path.parent
    if not folder.exists():
        raise CLIError(f"output folder '{folder}' does not exist")
    if not folder.is_dir():
        raise CLIError(f"output folder '{folder}' is not a folder")
    if path.is_dir():
        raise CLIError(f"output '{path}' is a folder; give a file name such as '{path / 'out.png'}'")


def write_file(path: Path, data: bytes, what: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CLIError(f"cannot write {what} '{path}': {exc.strerror or exc}") from None
