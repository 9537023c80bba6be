"""From a Discord attachment to image bytes the engine will accept, without trusting anything the sender says.

Three steps, cheapest first: the declared metadata (content type, byte size, width x height) is checked before any
download; the download comes only from the allowed CDN hosts and stops at the byte cap while streaming; the bytes
are then decoded once by the engine's safe decoder (`nst_core.images.decode_image`, in a thread) so a bad file is
refused now, with its own message, rather than failing later in a worker. A content attachment may also be a video
clip (`accept_video`); the starter probes those bytes as a clip (`bot.shared.animation`) instead of decoding them
as a still.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import aiohttp
import yarl

from bot.shared.animation import is_video_type
from nst_core.errors import NotAnImageError, NSTError
from nst_core.images import check_declared_size, decode_image

__all__ = ["DownloadError", "ImageLimits", "InputImage", "check_attachment_metadata", "fetch_bytes", "fetch_image"]

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 64 * 1024


class DownloadError(NSTError):
    """The attachment could not be fetched (network, CDN refused, host not allowed)."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    allowed_hosts: tuple[str, ...]


@dataclass(frozen=True)
class InputImage:
    """An image that passed every check: its original bytes (the worker decodes them again) and its size."""

    data: bytes
    width: int
    height: int
    filename: str


def _subject(role: str) -> str:
    return f"{role} image"


SEND_IMAGE = "send PNG, JPEG, WebP, GIF, BMP or TIFF"
SEND_CONTENT = SEND_IMAGE + ", or an animated GIF, WebP or PNG, or an MP4, WebM or MOV clip"


def check_attachment_metadata(*, role: str, filename: str, size: int, content_type: str | None,
                              width: int | None, height: int | None, limits: ImageLimits,
                              accept_video: bool = False) -> None:
    """Refuse what the metadata already shows to be unusable (raises NSTError subclasses with user messages).
    `accept_video`: a video clip is fine too (the content of an animation)."""
    video = accept_video and is_video_type(content_type)
    if content_type and not content_type.lower().startswith("image/") and not video:
        send = SEND_CONTENT if accept_video else SEND_IMAGE
        raise NotAnImageError(f"{_subject(role)} ({filename}) is {content_type}, not an image; {send}", role=role)
    check_declared_size(size, width, height, role=role, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes)


def _host_allowed(url: yarl.URL, allowed: tuple[str, ...]) -> bool:
    host = (url.host or "").lower()
    with_port = f"{host}:{url.port}" if url.port is not None else host
    if url.scheme == "https":
        return host in allowed or with_port in allowed
    if url.scheme == "http":  # plain http only from a loopback host named with its port (a local test CDN)
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        return loopback and with_port in allowed
    return False


async def download(session: aiohttp.ClientSession, url: str, *, role: str, limits: ImageLimits) -> bytes:
    """GET `url` from an allowed host, reading at most `limits.max_bytes` (raises FileTooLargeError past it)."""
    parsed = yarl.URL(url)
    if not _host_allowed(parsed, limits.allowed_hosts):
        raise DownloadError(f"the {_subject(role)} is not on Discord's CDN ({parsed.host}); attach the file "
                            "itself instead of a link")
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT_S), session.get(parsed, allow_redirects=False) as response:
            if response.status != 200:
                raise DownloadError(f"the {_subject(role)} could not be downloaded (Discord's CDN answered "
                                    f"HTTP {response.status}); send it again")
            if response.content_length is not None:
                check_declared_size(response.content_length, None, None, role=role, max_bytes=limits.max_bytes)
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.content.iter_chunked(_CHUNK):
                total += len(chunk)
                if total > limits.max_bytes:
                    check_declared_size(total, None, None, role=role, max_bytes=limits.max_bytes)
                chunks.append(chunk)
            return b"".join(chunks)
    except TimeoutError:
        raise DownloadError(f"the {_subject(role)} took longer than {DOWNLOAD_TIMEOUT_S:.0f} s to download; "
                            "try a smaller file") from None
    except aiohttp.ClientError as exc:
        raise DownloadError(f"the {_subject(role)} could not be downloaded ({type(exc).__name__}); send it "
                            "again") from None


async def fetch_bytes(session: aiohttp.ClientSession, *, url: str, role: str, filename: str, size: int,
                      content_type: str | None, width: int | None, height: int | None, limits: ImageLimits,
                      accept_video: bool = False) -> bytes:
    """Check the metadata, download: the attachment's bytes, not decoded yet (or an NSTError saying why not)."""
    check_attachment_metadata(role=role, filename=filename, size=size, content_type=content_type, width=width,
                              height=height, limits=limits, accept_video=accept_video)
    return await download(session, url, role=role, limits=limits)


async def fetch_image(session: aiohttp.ClientSession, *, url: str, role: str, filename: str, size: int,
                      content_type: str | None, width: int | None, height: int | None,
                      limits: ImageLimits) -> InputImage:
    """Check the metadata, download, decode: the bytes of a usable image, or an NSTError saying what is wrong."""
    data = await fetch_bytes(session, url=url, role=role, filename=filename, size=size, content_type=content_type,
                             width=width, height=height, limits=limits)
    return await check_image_bytes(data, role=role, filename=filename, limits=limits)


async def check_image_bytes(data: bytes, *, role: str, filename: str, limits: ImageLimits) -> InputImage:
    """Decode `data` with the engine's safe decoder (off the event loop) to refuse a bad image now."""
    image = await asyncio.to_thread(decode_image, data, role=role, max_pixels=limits.max_pixels,
                                    max_bytes=limits.max_bytes)
    width, height = image.size
    image.close()
    return InputImage(data, width, height, filename)

