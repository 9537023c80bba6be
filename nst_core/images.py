"""Safe decoding of untrusted images: the one place that turns a user's bytes into pixels.

Every image the engine sees comes from a user: a Discord attachment, a file named on the command line. This module
decodes them defensively:

* the real format is sniffed from the bytes (a filename or a content type is never trusted), and only the formats in
  `ACCEPTED_FORMATS` are decoded; an image in another format is named in the error, so the user knows what to send;
* the byte size is checked before anything is parsed, and width x height is checked from the header before a single
  pixel is decoded, so a decompression bomb costs nothing; Pillow's own bomb warning/error is turned into ours;
* damaged or truncated data is an error (truncated images are never half-loaded);
* the result is always a plain, fully loaded RGB image: EXIF orientation applied, first frame of an animation, alpha
  composited on white, 16-bit and float greyscale scaled (not clipped), no metadata left in `info`.

The way out (results encoded without metadata, fitted to an upload limit) is `nst_core.encoding`.

Pillow only, no torch and no numpy: the bot process imports this to check attachments without loading the engine.

Every error raised on purpose is an `nst_core.errors.ImageError` subclass whose message starts with
"<role> image ..." and whose `role` attribute is the `role` argument, so a front end can show it as it is.
"""

from __future__ import annotations

import os
import re
import struct
from io import BytesIO
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError

from nst_core.errors import (
    CorruptImageError,
    FileTooLargeError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    UnsupportedFormatError,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "check_declared_size",
    "decode_image",
    "human_bytes",
    "limit_text",
    "style_role",
    "to_rgb",
]

DEFAULT_MAX_PIXELS: Final = 40_000_000  # 40 MP, well under Pillow's own ~89.5 MP warning
DEFAULT_MAX_BYTES: Final = 50 * 1024 * 1024
MIN_SIDE: Final = 16
ACCEPTED_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

_SEND: Final = "send PNG, JPEG, WebP, GIF, BMP or TIFF"

# Formats Pillow must never be asked to open, even just to name them: EPS/PS hands the file to Ghostscript.
_NEVER_OPEN: Final = frozenset({"EPS"})

# Formats recognised by their first bytes, to name them without handing them to any decoder. Checked only after the
# bytes failed to open as an accepted format.
_MAGIC: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"%!PS", 0, "EPS"),
    (b"\xc5\xd0\xd3\xc6", 0, "EPS"),  # DOS EPS binary header
    (b"%PDF-", 0, "PDF"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftyphevc", 4, "HEIC"),
    (b"ftypheif", 4, "HEIF"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypavis", 4, "AVIF"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL"),
)
_SVG_RE: Final = re.compile(rb"<svg[\s>]", re.IGNORECASE)

# What Pillow raises while decoding damaged data.
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

_PIXELS_IN_BOMB_MESSAGE: Final = re.compile(r"\((\d+) pixels\)")

_WHITE: Final = (255, 255, 255)

# 16-bit value -> 8-bit value, rounded; Pillow's own I;16 -> L conversion clips at 255 instead of scaling.
_LUT_16_TO_8: Final = [(v + 128) // 257 for v in range(65536)]

# --------------------------------------------------------------------------------------------------------------------
# Formatting helpers


def style_role(index: int, count: int) -> str:
    """How error messages name style image `index` of `count`: 'style' alone, else 'style 1', 'style 2', ..."""
    return "style" if count == 1 else f"style {index + 1}"


def human_bytes(n: int) -> str:
    """A byte count for people: '512 bytes', '12.3 KB', '1.2 MB', '1.5 GB' (1 KB = 1024 bytes, one decimal)."""
    if n < 1024:
        return f"{n} byte" if n == 1 else f"{n} bytes"
    for unit, size in (("KB", 1024), ("MB", 1024**2), ("GB", 1024**3)):
        if n < size * 1024 or unit == "GB":
            return f"{n / size:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def limit_text(n: int) -> str:
    """A byte limit for people: like `human_bytes` but a round limit reads '50 MB', not '50.0 MB'."""
    text = human_bytes(n)
    return text.replace(".0 ", " ", 1)


def _pixels(n: int, *, limit: bool = False) -> str:
    """A pixel count for people: '108.0 MP' (or '40 MP' for a round limit); small counts as '1,000 pixels'."""
    if n < 50_000:
        return f"{n:,} pixels"
    text = f"{n / 1_000_000:.1f} MP"
    return text.replace(".0 ", " ", 1) if limit else text


def _subject(role: str) -> str:
    """How a message names the image: 'content image', 'style 2 image', or just 'image' for the default role."""
    return "image" if role == "image" else f"{role} image"


def _article(name: str) -> str:
    """'a' or 'an' before a format name read as letters or as a word ('an ICO', 'a PSD', 'an SVG', 'a HEIC')."""
    if name[:1] in "AEIOU" or name in {"SVG", "SGI", "MPEG", "HDF5", "XBM", "XPM", "MSP", "FLI", "FTEX"}:
        return "an"
    return "a"


# --------------------------------------------------------------------------------------------------------------------
# Decoding


def decode_image(
    source: bytes | str | os.PathLike[str],
    *,
    role: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Decode an untrusted image into a fully loaded, metadata-free RGB image at full resolution.

    `source` is the file's bytes (bytearray and memoryview are accepted too) or a path to read; a missing path raises
    FileNotFoundError. `role` names the image in error messages ('content', 'style', 'style 2', ...).

    Raises FileTooLargeError (more than `max_bytes`, checked before parsing), NotAnImageError, UnsupportedFormatError
    (an image, but not in `ACCEPTED_FORMATS`), ImageTooLargeError (more than `max_pixels`, checked from the header
    before decoding; Pillow refuses more than 2 * Image.MAX_IMAGE_PIXELS whatever `max_pixels` says),
    ImageTooSmallError (a side under MIN_SIDE) and CorruptImageError (damaged or truncated data).
    """
    data = _read_source(source, role=role, max_bytes=max_bytes)
    try:
        img = Image.open(BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise _unreadable_error(data, role) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Only above Pillow's own cap (2x ~89.5 MP, or ~89.5 MP when warnings are errors): the header was read but
        # Pillow gave us no image, so the message has the pixel count but not the width and height.
        raise _bomb_error(exc, role, max_pixels) from None
    except _DECODE_ERRORS:
        # A header that matched an accepted format but could not be parsed.
        raise _corrupt_error(role) from None

    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise _too_many_pixels(width, height, max_pixels, role)
        if min(width, height) < MIN_SIDE:
            raise ImageTooSmallError(
                f"{_subject(role)} is {width}x{height} px; it must be at least {MIN_SIDE} px on each side",
                role=role,
            )
        try:
            img.load()  # the first frame of an animation only
            oriented = _exif_transpose(img)
            rgb = to_rgb(oriented)
        except _DECODE_ERRORS:
            raise _corrupt_error(role) from None

    rgb.info = {}
    return rgb


def check_declared_size(
    size: int,
    width: int | None,
    height: int | None,
    *,
    role: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """Check the byte size and dimensions a sender declares (a Discord attachment's metadata) before downloading.

    Raises the same FileTooLargeError / ImageTooLargeError, with the same messages, that `decode_image` would raise
    for those bytes; unknown dimensions (None) pass, and `decode_image` checks them after the download.
    """
    if size > max_bytes:
        raise _file_too_large(size, max_bytes, role)
    if width is not None and height is not None and width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels, role)


def _too_many_pixels(width: int, height: int, max_pixels: int, role: str) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{_subject(role)} is {width}x{height} px ({_pixels(width * height)}); "
        f"the limit is {_pixels(max_pixels, limit=True)}",
        role=role,
    )


def _read_source(source: bytes | str | os.PathLike[str], *, role: str, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        size = len(data)
    else:
        size = os.stat(source).st_size  # FileNotFoundError propagates
        if size > max_bytes:
            raise _file_too_large(size, max_bytes, role)
        with open(source, "rb") as fh:
            data = fh.read(max_bytes + 1)  # the file may have grown since stat()
        size = len(data)
    if size > max_bytes:
        raise _file_too_large(size, max_bytes, role)
    return data


def _file_too_large(size: int, max_bytes: int, role: str) -> FileTooLargeError:
    return FileTooLargeError(
        f"{_subject(role)} is {human_bytes(size)}; the limit is {limit_text(max_bytes)}",
        role=role,
    )


def _corrupt_error(role: str) -> CorruptImageError:
    return CorruptImageError(f"{_subject(role)} could not be decoded (the file is damaged or truncated)", role=role)


def _bomb_error(exc: Exception, role: str, max_pixels: int) -> ImageTooLargeError:
    pillow_cap = Image.MAX_IMAGE_PIXELS
    limit = max_pixels if pillow_cap is None else min(max_pixels, pillow_cap * 2)
    if isinstance(exc, Image.DecompressionBombWarning) and pillow_cap is not None:
        limit = min(limit, pillow_cap)
    match = _PIXELS_IN_BOMB_MESSAGE.search(str(exc))
    size = _pixels(int(match.group(1))) if match else f"over {_pixels(limit, limit=True)}"
    return ImageTooLargeError(f"{_subject(role)} is {size}; the limit is {_pixels(limit, limit=True)}", role=role)


def _unreadable_error(data: bytes, role: str) -> NotAnImageError | UnsupportedFormatError:
    """The bytes are not in an accepted format: name the format if it is an image we could identify."""
    name = _identify_other_format(data)
    if name is None:
        return NotAnImageError(f"{_subject(role)} is not an image (or not one we can read); {_SEND}", role=role)
    return UnsupportedFormatError(f"{_subject(role)} is {_article(name)} {name} file; {_SEND}", role=role)


def _identify_other_format(data: bytes) -> str | None:
    head = data[:64]
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if _SVG_RE.search(data[:4096]):
        return "SVG"
    Image.init()
    others = tuple(fmt for fmt in Image.ID if fmt not in ACCEPTED_FORMATS and fmt not in _NEVER_OPEN)
    try:
        # Identification only: the header is parsed, no pixel is decoded and no external program runs.
        with Image.open(BytesIO(data), formats=others) as img:
            return str(img.format or "unknown")
    except Exception:  # any failure just means we cannot name it
        return None


def _exif_transpose(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block is ignored (the pixels are what matter)."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError, struct.error, Warning):
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: alpha and transparency composited on white, 16-bit/float greyscale scaled to 8 bits."""
    mode = img.mode
    if mode == "RGB" and not img.has_transparency_data:
        return img.convert("RGB")  # a copy, detached from the file
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I: 16-bit greyscale, 0..65535 -> 0..255
        return img.convert("I").point(_LUT_16_TO_8, "L").convert("RGB")
    if mode == "F":  # float greyscale: 0..1 is scaled, anything else is taken as 0..255 (F -> L truncates: round)
        low, high = img.getextrema()
        scale = 255.0 if float(low) >= 0.0 and float(high) <= 1.0 else 1.0
        return img.point(lambda v: v * scale + 0.5).convert("L").convert("RGB")
    if img.has_transparency_data:  # RGBA, LA, PA, RGBa, La, a tRNS colour key, a palette with alpha
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, ...
