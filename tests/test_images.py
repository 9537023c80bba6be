"""Tests for nst_core.images and nst_core.encoding: decoding untrusted uploads, encoding results to fit a limit.

Every image is made here with Pillow (tiny, 8-256 px), so the tests need no data files and no network.
"""

from __future__ import annotations

import random
import struct
import subprocess
import warnings
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from nst_core.encoding import EncodedImage, encode_image, encode_to_fit
from nst_core.errors import (
    CorruptImageError,
    FileTooLargeError,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    UnsupportedFormatError,
)
from nst_core.images import ACCEPTED_FORMATS, DEFAULT_MAX_PIXELS, MIN_SIDE, decode_image, human_bytes

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
SEND = "send PNG, JPEG, WebP, GIF, BMP or TIFF"


# --------------------------------------------------------------------------------------------------------------------
# Helpers


def save(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 8) -> bool:
    return len(actual) == len(expected) and all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def noise(size: int = 256, seed: int = 0) -> Image.Image:
    """An incompressible RGB image, the same every run."""
    return Image.frombytes("RGB", (size, size), random.Random(seed).randbytes(size * size * 3))


def png_with_header_size(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR then claims `width` x `height`: a decompression bomb's header, with no pixels."""
    data = bytearray(save(Image.new("RGB", (16, 16), RED), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def minimal_psd(width: int = 32, height: int = 32) -> bytes:
    """A raw 8-bit RGB Photoshop file, enough for Pillow to identify it as PSD."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode data, image resources, layers: all empty
    return header + sections + struct.pack(">H", 0) + bytes(3 * width * height)


# --------------------------------------------------------------------------------------------------------------------
# decode_image: formats


@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_every_accepted_format_decodes_to_rgb_at_full_size(fmt: str) -> None:
    colour = (200, 30, 40)
    data = save(Image.new("RGB", (48, 32), colour), fmt)
    img = decode_image(data, role="content")
    assert img.mode == "RGB"
    assert img.size == (48, 32)
    assert close(img.getpixel((10, 10)), colour)


def test_format_is_sniffed_from_the_bytes_not_the_filename(tmp_path: Path) -> None:
    jpeg_named_png = tmp_path / "photo.png"
    jpeg_named_png.write_bytes(save(Image.new("RGB", (40, 30), BLUE), "JPEG"))
    png_named_txt = tmp_path / "notes.txt"
    png_named_txt.write_bytes(save(Image.new("RGB", (30, 40), RED), "PNG"))

    assert decode_image(jpeg_named_png).size == (40, 30)
    assert close(decode_image(str(jpeg_named_png)).getpixel((5, 5)), BLUE)
    assert decode_image(png_named_txt).getpixel((5, 5)) == RED


def test_a_missing_path_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "nope.png")


def test_bytearray_and_memoryview_are_accepted() -> None:
    data = save(Image.new("RGB", (20, 20), RED), "PNG")
    assert decode_image(bytearray(data)).getpixel((0, 0)) == RED
    assert decode_image(memoryview(data)).getpixel((0, 0)) == RED


def test_the_result_is_independent_of_the_upload_and_carries_no_metadata(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    path = tmp_path / "in.jpg"
    path.write_bytes(save(Image.new("RGB", (32, 32), RED), "JPEG", exif=exif))
    img = decode_image(path)
    path.unlink()
    assert img.info == {}
    assert img.resize((8, 8)).size == (8, 8)  # pixels are loaded, not read lazily from the (gone) file


def test_exif_orientation_6_is_applied() -> None:
    # Stored 40x20: left half red, right half blue. Orientation 6 = "rotate 90 clockwise to display".
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img = decode_image(save(stored, "JPEG", exif=exif, quality=95))
    assert img.size == (20, 40)
    assert close(img.getpixel((10, 5)), RED, tol=30)  # the stored left is now the top
    assert close(img.getpixel((10, 34)), BLUE, tol=30)


def test_damaged_exif_does_not_lose_the_image() -> None:
    junk_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12"  # an IFD cut short
    data = save(Image.new("RGB", (32, 20), RED), "JPEG", exif=junk_exif)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow warns "Corrupt EXIF data" (to the log, not the user)
        img = decode_image(data)
    assert img.size == (32, 20)
    assert close(img.getpixel((5, 5)), RED)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)]
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 2  # really animated (APNG for PNG)
    img = decode_image(data)
    assert img.mode == "RGB"
    assert close(img.getpixel((16, 16)), RED)


# --------------------------------------------------------------------------------------------------------------------
# decode_image: modes


def test_transparent_rgba_becomes_white_and_half_transparent_blends() -> None:
    src = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    src.paste((0, 0, 0, 255), (0, 0, 16, 32))
    src.paste((0, 0, 0, 128), (16, 0, 32, 16))
    img = decode_image(save(src, "PNG"))
    assert img.mode == "RGB"
    assert img.getpixel((20, 24)) == WHITE  # fully transparent red shows as white, not red or black
    assert img.getpixel((4, 4)) == (0, 0, 0)  # opaque black stays black
    assert close(img.getpixel((20, 4)), (127, 127, 127), tol=2)  # half-transparent black on white is grey


def test_la_greyscale_with_alpha() -> None:
    src = Image.new("LA", (32, 32), (0, 0))
    src.paste((0, 255), (0, 0, 16, 32))
    img = decode_image(save(src, "PNG"))
    assert img.getpixel((4, 4)) == (0, 0, 0)
    assert img.getpixel((24, 4)) == WHITE


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index_becomes_white(fmt: str) -> None:
    src = Image.new("P", (32, 32), 0)
    src.putpalette([0, 255, 0] + [255, 0, 0] + [0] * (254 * 3))  # index 0 green (transparent), 1 red
    src.paste(1, (0, 0, 16, 32))
    data = save(src, fmt, transparency=0)
    img = decode_image(data)
    assert img.getpixel((4, 4)) == RED
    assert img.getpixel((24, 4)) == WHITE


def test_cmyk_jpeg_gives_the_right_colours() -> None:
    data = save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    with Image.open(BytesIO(data)) as check:
        assert check.mode == "CMYK"
    img = decode_image(data)
    assert img.mode == "RGB"
    assert close(img.getpixel((16, 16)), RED)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_not_clipped(fmt: str) -> None:
    src = Image.new("I;16", (32, 32), 32768)
    src.paste(65535, (0, 0, 16, 32))
    src.paste(257 * 40, (0, 0, 16, 8))
    data = save(src, fmt)
    with Image.open(BytesIO(data)) as check:
        assert check.mode.startswith("I;16")
    img = decode_image(data)
    assert img.getpixel((4, 20)) == WHITE
    assert close(img.getpixel((24, 20)), (128, 128, 128), tol=1)  # Pillow's own convert would clip this to 255
    assert img.getpixel((4, 4)) == (40, 40, 40)


def test_one_bit_bmp() -> None:
    src = Image.new("1", (32, 32), 1)
    src.paste(0, (0, 0, 16, 32))
    img = decode_image(save(src, "BMP"))
    assert img.getpixel((4, 4)) == (0, 0, 0)
    assert img.getpixel((24, 4)) == WHITE


# --------------------------------------------------------------------------------------------------------------------
# decode_image: errors


def test_pixel_cap_is_checked_with_the_dimensions_in_the_message() -> None:
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(save(Image.new("RGB", (100, 100)), "PNG"), role="style", max_pixels=1000)
    assert info.value.role == "style"
    assert str(info.value) == "style image is 100x100 px (10,000 pixels); the limit is 1,000 pixels"


def test_pixel_cap_is_checked_from_the_header_before_decoding() -> None:
    # 48 MP claimed, 16x16 worth of data: refused from the header (decoding it would be "corrupt").
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(png_with_header_size(8000, 6000), role="content")
    assert str(info.value) == "content image is 8000x6000 px (48.0 MP); the limit is 40 MP"
    assert info.value.role == "content"


def test_decompression_bomb_header_is_our_error_not_pillows() -> None:
    bomb = png_with_header_size(30000, 30000)  # 900 MP: Pillow itself raises DecompressionBombError for this
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(bomb, role="style 2")
    message = str(info.value)
    assert message.startswith("style 2 image is 900.0 MP")
    assert message.endswith("the limit is 40 MP")
    assert info.value.role == "style 2"
    assert not isinstance(info.value, Image.DecompressionBombError)


@pytest.mark.parametrize("action", ["ignore", "error"])
def test_pillows_bomb_warning_band_is_refused_by_our_cap(action: str) -> None:
    # 108 MP is between Pillow's warning (~89.5 MP) and its error (~179 MP): refused whatever the warning filter.
    with warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLargeError) as info:
            decode_image(png_with_header_size(12000, 9000), role="style")
    message = str(info.value)
    assert message.startswith("style image is ")
    assert "108.0 MP" in message
    assert "the limit is 40 MP" in message
    if action == "ignore":
        assert "12000x9000 px" in message


def test_a_raised_cap_still_decodes() -> None:
    data = save(Image.new("RGB", (100, 100)), "PNG")
    assert decode_image(data, max_pixels=10_000).size == (100, 100)
    assert DEFAULT_MAX_PIXELS == 40_000_000


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_file_is_corrupt(fmt: str) -> None:
    data = save(noise(96), fmt)
    with pytest.raises(CorruptImageError) as info:
        decode_image(data[: len(data) // 2], role="content")
    assert str(info.value) == "content image could not be decoded (the file is damaged or truncated)"
    assert info.value.role == "content"


def test_damaged_png_data_is_corrupt() -> None:
    data = bytearray(save(noise(64), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40 : idat + 400] = bytes(360)  # zeros in the middle of the compressed stream
    with pytest.raises(CorruptImageError):
        decode_image(bytes(data))


@pytest.mark.parametrize(
    "data",
    [random.Random(1).randbytes(4096), b"Hello! This is my style image, honest.\n" * 20, b""],
    ids=["random", "text", "empty"],
)
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImageError) as info:
        decode_image(data, role="style")
    assert str(info.value) == f"style image is not an image (or not one we can read); {SEND}"
    assert info.value.role == "style"


def test_ico_is_named_as_unsupported() -> None:
    data = save(Image.new("RGB", (48, 48), RED), "ICO")
    with pytest.raises(UnsupportedFormatError) as info:
        decode_image(data, role="content")
    assert str(info.value) == f"content image is an ICO file; {SEND}"
    assert info.value.role == "content"


def test_psd_is_named_as_unsupported() -> None:
    data = minimal_psd()
    with Image.open(BytesIO(data)) as check:
        assert check.format == "PSD"
    with pytest.raises(UnsupportedFormatError) as info:
        decode_image(data, role="style")
    assert str(info.value) == f"style image is a PSD file; {SEND}"


def test_eps_is_refused_without_running_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("an external program was started")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(subprocess, "check_call", no_subprocess)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nnewpath 0 0 moveto 32 32 lineto stroke\n%%EOF\n"
    with pytest.raises(UnsupportedFormatError) as info:
        decode_image(eps, role="style")
    assert str(info.value) == f"style image is an EPS file; {SEND}"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"></svg>', "an SVG"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "a PDF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "a HEIC"),
    ],
    ids=["svg", "pdf", "heic"],
)
def test_other_well_known_formats_are_named(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        decode_image(data, role="content")
    assert str(info.value) == f"content image is {name} file; {SEND}"


def test_file_too_large_is_checked_before_decoding() -> None:
    junk = bytes(int(1.5 * 1024 * 1024))  # not an image either: the size is what is reported
    with pytest.raises(FileTooLargeError) as info:
        decode_image(junk, role="style", max_bytes=1024 * 1024)
    assert str(info.value) == "style image is 1.5 MB; the limit is 1 MB"
    assert info.value.role == "style"


def test_file_too_large_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(save(noise(64), "PNG"))
    with pytest.raises(FileTooLargeError) as info:
        decode_image(path, role="content", max_bytes=1000)
    assert str(info.value).startswith("content image is 12.")
    assert str(info.value).endswith("KB; the limit is 1000 bytes")


def test_too_small() -> None:
    with pytest.raises(ImageTooSmallError) as info:
        decode_image(save(Image.new("RGB", (8, 8)), "PNG"), role="content")
    assert str(info.value) == "content image is 8x8 px; it must be at least 16 px on each side"
    assert info.value.role == "content"
    with pytest.raises(ImageTooSmallError):
        decode_image(save(Image.new("RGB", (200, MIN_SIDE - 1)), "PNG"))
    assert decode_image(save(Image.new("RGB", (MIN_SIDE, MIN_SIDE)), "PNG")).size == (MIN_SIDE, MIN_SIDE)


def test_every_error_is_an_image_error_with_the_default_role() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(b"nope")
    assert info.value.role == "image"
    assert str(info.value).startswith("image is not an image")


# --------------------------------------------------------------------------------------------------------------------
# encode_image


def _uploaded_with_metadata(fmt: str) -> bytes:
    img = Image.new("RGB", (32, 32), RED)
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0112] = 1
    icc = b"\0" * 128  # not a real profile: only its absence matters
    if fmt == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text("Author", "Jane Doe, 1 Secret Lane")
        return save(img, "PNG", pnginfo=text, exif=exif, icc_profile=icc)
    return save(img, "JPEG", exif=exif, icc_profile=icc)


@pytest.mark.parametrize("source_fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("out_fmt", ["png", "jpeg", "webp"])
def test_encode_image_strips_all_metadata(source_fmt: str, out_fmt: str) -> None:
    upload = _uploaded_with_metadata(source_fmt)
    with Image.open(BytesIO(upload)) as raw:
        assert "exif" in raw.info  # the test input really carries metadata
        raw.load()
        for img in (raw, decode_image(upload)):
            out = Image.open(BytesIO(encode_image(img, out_fmt)))
            assert out.format == out_fmt.upper()
            for key in ("exif", "icc_profile", "Author", "xmp", "XML:com.adobe.xmp"):
                assert key not in out.info
            assert dict(out.getexif()) == {}
            assert getattr(out, "text", {}) == {}
            assert close(out.convert("RGB").getpixel((16, 16)), RED)


def test_encode_image_formats_and_options() -> None:
    img = noise(64)
    assert Image.open(BytesIO(encode_image(img, "JPG"))).format == "JPEG"
    assert Image.open(BytesIO(encode_image(img, "WebP"))).format == "WEBP"
    png = Image.open(BytesIO(encode_image(img)))
    assert png.format == "PNG"
    assert png.mode == "RGB"
    assert png.tobytes() == img.tobytes()  # PNG is lossless
    assert len(encode_image(img, "jpeg", quality=30)) < len(encode_image(img, "jpeg", quality=95))
    with pytest.raises(ValueError, match="gif"):
        encode_image(img, "gif")
    with pytest.raises(ValueError, match="quality"):
        encode_image(img, "jpeg", quality=0)


def test_encode_image_composites_alpha_on_white() -> None:
    src = Image.new("RGBA", (16, 16), (0, 0, 255, 0))
    out = Image.open(BytesIO(encode_image(src, "png")))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == WHITE


# --------------------------------------------------------------------------------------------------------------------
# encode_to_fit


def test_fits_as_png_when_it_can() -> None:
    img = noise(64)
    png = encode_image(img, "png")
    result = encode_to_fit(img, len(png) + 1)
    assert isinstance(result, EncodedImage)
    assert result.data == png
    assert (result.format, result.quality, result.downscaled) == ("png", None, False)
    assert (result.width, result.height) == (64, 64)
    assert result.note == f"PNG ({human_bytes(len(png))})"
    assert (result.content_type, result.extension) == ("image/png", "png")


def test_falls_back_to_lossy_when_png_is_too_big() -> None:
    img = noise(256)
    png_size = len(encode_image(img, "png"))
    limit = png_size // 2
    result = encode_to_fit(img, limit)
    assert result.format in ("jpeg", "webp")
    assert len(result.data) <= limit
    assert not result.downscaled
    assert (result.width, result.height) == (256, 256)
    assert result.note.startswith(f"re-encoded as {'JPEG' if result.format == 'jpeg' else 'WebP'} quality ")
    assert result.note.endswith(f"to fit {human_bytes(limit)}".replace(".0 KB", " KB"))
    decoded = Image.open(BytesIO(result.data))
    assert decoded.format == result.format.upper()
    assert decoded.size == (256, 256)
    assert result.content_type == f"image/{result.format}"
    assert result.extension == ("jpg" if result.format == "jpeg" else "webp")


def test_best_quality_that_fits_is_chosen() -> None:
    img = noise(128)
    q90 = len(encode_image(img, "jpeg", quality=90))
    q95 = len(encode_image(img, "jpeg", quality=95))
    assert q90 < q95
    result = encode_to_fit(img, q90)
    assert (result.format, result.quality) == ("jpeg", 90)
    assert len(result.data) == q90


def test_downscales_as_a_last_resort() -> None:
    img = noise(256)
    smallest_full_size = min(len(encode_image(img, "jpeg", quality=80)), len(encode_image(img, "webp", quality=80)))
    limit = smallest_full_size // 3
    result = encode_to_fit(img, limit)
    assert result.downscaled
    assert len(result.data) <= limit
    assert result.width < 256 and result.width == result.height
    assert result.quality in (90, 85, 80)
    assert result.note.startswith(f"downscaled to {result.width}x{result.height} and re-encoded as JPEG quality ")
    assert Image.open(BytesIO(result.data)).size == (result.width, result.height)


def test_impossible_limit_raises() -> None:
    with pytest.raises(ImageTooLargeError) as info:
        encode_to_fit(noise(128), 100)
    assert str(info.value) == "result cannot be encoded under 100 bytes"
    assert info.value.role == "result"


def test_min_side_stops_the_downscaling() -> None:
    img = noise(128)
    at_96 = len(encode_image(img.resize((96, 96), Image.Resampling.LANCZOS), "jpeg", quality=80))
    with pytest.raises(ImageTooLargeError):
        encode_to_fit(img, at_96 // 2, min_side=90)  # 96 px fits min_side, 72 px would not


def test_prefer_jpeg_and_webp() -> None:
    img = noise(64)
    jpeg = encode_to_fit(img, 10 * 1024 * 1024, prefer="jpg")
    assert (jpeg.format, jpeg.quality, jpeg.extension) == ("jpeg", 95, "jpg")
    assert jpeg.note.startswith("JPEG quality 95 (")
    webp = encode_to_fit(img, 10 * 1024 * 1024, prefer="WEBP")
    assert (webp.format, webp.quality, webp.content_type) == ("webp", 90, "image/webp")
    assert webp.note.startswith("WebP quality 90 (")
    with pytest.raises(ValueError):
        encode_to_fit(img, 1000, prefer="gif")


# --------------------------------------------------------------------------------------------------------------------
# human_bytes


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1.0 KB"),
        (1536, "1.5 KB"),
        (int(1.2 * 1024 * 1024), "1.2 MB"),
        (int(61.2 * 1024 * 1024), "61.2 MB"),
        (3 * 1024**3, "3.0 GB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text
