"""Shared fixtures: the small public-domain test images (tests/data/SOURCES.md) as bytes and PIL images."""

from __future__ import annotations

from pathlib import Path

import pytest
from bot_harness import bot_env_factory  # noqa: F401  (the fixture that runs the real bot against a fake Discord)
from PIL import Image

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def content_bytes() -> bytes:
    return (DATA / "chelsea_128.png").read_bytes()


@pytest.fixture(scope="session")
def style_bytes() -> bytes:
    return (DATA / "starry_night_128.jpg").read_bytes()


@pytest.fixture(scope="session")
def wave_bytes() -> bytes:
    return (DATA / "wave_128.jpg").read_bytes()


@pytest.fixture(scope="session")
def content_image() -> Image.Image:
    return Image.open(DATA / "chelsea_128.png").convert("RGB")


@pytest.fixture(scope="session")
def style_image() -> Image.Image:
    return Image.open(DATA / "starry_night_128.jpg").convert("RGB")


@pytest.fixture(scope="session")
def wave_image() -> Image.Image:
    return Image.open(DATA / "wave_128.jpg").convert("RGB")
