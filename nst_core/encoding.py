"""Encoding results: PNG, JPEG or WebP without any metadata, and the best encoding that fits an upload limit.

`encode_image` writes no EXIF, GPS, ICC profile or text chunks from the user's upload; `encode_to_fit` picks the
best encoding under a byte limit such as Discord's upload limit, downscaling only as a last resort. The table of
output formats (`normalise_format`, `extension_for`, `content_type_for`) lives here once; it also names the animated
formats `nst_core.clip_encoding` writes (GIF, MP4), which `normalise_format`, the check for a still's format, refuses.

Pillow only, no torch: the bot process imports this to post results without loading the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from typing import Final

from PIL import Image

from nst_core.errors import ImageTooLargeError
from nst_core.images import human_bytes, limit_text, to_rgb

__all__ = ["Encoded", "EncodedImage", "content_type_for", "encode_image", "encode_to_fit", "extension_for",
           "format_label", "normalise_format"]

_STILL_FORMATS: Final = ("png", "jpeg", "webp")
_CONTENT_TYPES: Final = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
}
_EXTENSIONS: Final = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "mp4": "mp4"}
_LABELS: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF", "mp4": "MP4"}

# encode_to_fit's ladders: (format, quality) tried in order, best first.
_JPEG_LADDER: Final = (("jpeg", 95), ("jpeg", 90), ("jpeg", 85), ("jpeg", 80))
_WEBP_LADDER: Final = (("webp", 90), ("webp", 80))
_DOWNSCALE_QUALITIES: Final = (90, 85, 80)
_DOWNSCALE_STEP: Final = 0.75


@dataclass(frozen=True)
class Encoded:
    """An encoded result, ready to upload: the bytes, what they are, and what was done to make them fit."""

    data: bytes = field(repr=False)
    format: str  # "png", "jpeg", "webp", "gif" or "mp4"
    width: int
    height: int
    quality: int | None  # the format's own setting (see the subclasses); None for PNG
    note: str  # for people: "PNG (1.2 MB)", "re-encoded as JPEG quality 90 (3.1 MB) to fit 8 MB"

    @property
    def content_type(self) -> str:
        """The MIME type: 'image/png', 'image/jpeg', 'image/webp', 'image/gif' or 'video/mp4'."""
        return content_type_for(self.format)

    @property
    def extension(self) -> str:
        """The file extension, without the dot: 'png', 'jpg', 'webp', 'gif' or 'mp4'."""
        return extension_for(self.format)


@dataclass(frozen=True)
class EncodedImage(Encoded):
    """An encoded still ("png", "jpeg" or "webp"; quality is JPEG's or WebP's)."""

    downscaled: bool  # True if pixels were reduced to fit


def format_label(fmt: str) -> str:
    """How people read an output format's name: 'PNG', 'JPEG', 'WebP', 'GIF' or 'MP4'."""
    return _LABELS[_table_name(fmt)]


def content_type_for(fmt: str) -> str:
    """MIME type of an output format ('png', 'jpeg'/'jpg', 'webp', or the animated 'gif', 'mp4')."""
    return _CONTENT_TYPES[_table_name(fmt)]


def extension_for(fmt: str) -> str:
    """File extension, without the dot, of an output format: 'png', 'jpg', 'webp', 'gif' or 'mp4'."""
    return _EXTENSIONS[_table_name(fmt)]


def _table_name(fmt: str) -> str:
    name = fmt.strip().lower()
    if name == "jpg":
        name = "jpeg"
    if name not in _CONTENT_TYPES:
        raise ValueError(f"unsupported output format {fmt!r}; use png, jpeg, webp, gif or mp4")
    return name


def normalise_format(fmt: str) -> str:
    """'png', 'jpeg' or 'webp' for a still's format name in any case ('jpg' accepted); ValueError for anything else
    (including 'gif' and 'mp4': an animation's format is `clip_encoding.normalise_animation_format`'s to check).
    """
    name = fmt.strip().lower()
    if name == "jpg":
        name = "jpeg"
    if name not in _STILL_FORMATS:
        raise ValueError(f"unsupported output format {fmt!r}; use png, jpeg or webp")
    return name


def _clean_rgb(image: Image.Image) -> Image.Image:
    """A fresh RGB image holding only the pixels: no info, EXIF, ICC profile or text chunks can follow it."""
    rgb = image if image.mode == "RGB" and not image.has_transparency_data else to_rgb(image)
    fresh = Image.new("RGB", rgb.size)
    fresh.paste(rgb)
    return fresh


def _encode_clean(clean: Image.Image, fmt: str, quality: int) -> bytes:
    buf = BytesIO()
    if fmt == "png":
        clean.save(buf, "PNG", optimize=False, compress_level=6)
    elif fmt == "jpeg":
        clean.save(buf, "JPEG", quality=quality, subsampling="4:2:0", optimize=True)
    else:
        clean.save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()


def encode_image(image: Image.Image, fmt: str = "png", *, quality: int = 92) -> bytes:
    """Encode `image` as PNG, JPEG (or 'jpg') or WebP, case-insensitive, with no metadata at all.

    The image is converted to RGB first (alpha composited on white). `quality` (1-100) is used by JPEG and WebP.
    Raises ValueError for another format or a quality out of range.
    """
    name = normalise_format(fmt)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality={quality!r} is not allowed; use 1 to 100")
    return _encode_clean(_clean_rgb(image), name, quality)


def encode_to_fit(image: Image.Image, max_bytes: int, *, prefer: str = "png", min_side: int = 64) -> EncodedImage:
    """Encode `image` in at most `max_bytes`, losing as little as possible.

    Tries `prefer` first (PNG by default, lossless), then JPEG at quality 95, 90, 85, 80, then WebP at 90, 80 (WebP
    first when `prefer` is webp); the first that fits wins. If none does, the image is downscaled by 0.75 at a time
    (LANCZOS, from the original) and JPEG (or WebP) 90, 85, 80 tried again, until the short side would drop below
    `min_side`: then ImageTooLargeError (role 'result') is raised.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes={max_bytes!r} is not allowed; use a positive number of bytes")
    if min_side < 1:
        raise ValueError(f"min_side={min_side!r} is not allowed; use at least 1")
    preferred = normalise_format(prefer)
    limit = limit_text(max_bytes)
    clean = _clean_rgb(image)
    width, height = clean.size

    if preferred == "webp":
        ladder = (*_WEBP_LADDER, *_JPEG_LADDER)
    else:
        ladder = (*_JPEG_LADDER, *_WEBP_LADDER)
        if preferred == "png":
            ladder = (("png", 0), *ladder)

    first = True
    for fmt, quality in ladder:
        data = _encode_clean(clean, fmt, quality)
        if len(data) <= max_bytes:
            described = _describe(fmt, quality, len(data))
            note = described if first else f"re-encoded as {described} to fit {limit}"
            return EncodedImage(data=data, format=fmt, width=width, height=height,
                                quality=None if fmt == "png" else quality, note=note, downscaled=False)
        first = False

    lossy = "webp" if preferred == "webp" else "jpeg"
    scale = 1.0
    while True:
        scale *= _DOWNSCALE_STEP
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if min(size) < min_side:
            break
        small = clean.resize(size, Image.Resampling.LANCZOS)
        for quality in _DOWNSCALE_QUALITIES:
            data = _encode_clean(small, lossy, quality)
            if len(data) <= max_bytes:
                note = f"downscaled to {size[0]}x{size[1]} and re-encoded as {_describe(lossy, quality, len(data))} "
                return EncodedImage(data=data, format=lossy, width=size[0], height=size[1], quality=quality,
                                    note=note + f"to fit {limit}", downscaled=True)
    raise ImageTooLargeError(f"result cannot be encoded under {limit}", role="result")


def _describe(fmt: str, quality: int, size: int) -> str:
    if fmt == "png":
        return f"PNG ({human_bytes(size)})"
    return f"{format_label(fmt)} quality {quality} ({human_bytes(size)})"
