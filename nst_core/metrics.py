"""A fixed yardstick for how stylised a result is, independent of any run's loss weights.

Used by the benchmark (`bench/`) to compare tools on one scale and by the tests to check that a result moved toward
the style and kept the content. Both images are resized to a fixed long edge and seen through the bundled VGG-19
(average pooling):

    content_distance = ||F(x) - F(c)||^2 / ||F(c)||^2 at relu4_2
    style_distance   = mean over relu1_1..relu5_1 of ||G(x) - G(s)||^2 / ||G(s)||^2

Lower is closer. A perfect copy of the content scores 0 on content_distance; the style image itself scores 0 on
style_distance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from nst_core.losses import gram
from nst_core.optimize import image_to_tensor
from nst_core.vgg import ExtractorKey, get_feature_extractor

__all__ = ["YARDSTICK_EDGE", "content_distance", "style_distance"]

YARDSTICK_EDGE = 256
_CONTENT_LAYER = "relu4_2"
_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: Always the bundled weights on the CPU in fp32, whatever a run used: one yardstick for every tool and setting.
_EXTRACTOR = ExtractorKey("bundled", (_CONTENT_LAYER, *_STYLE_LAYERS), "avg", "cpu", False)


def _size(image: Image.Image, edge: int) -> tuple[int, int]:
    ratio = edge / max(image.size)
    return max(16, round(image.width * ratio)), max(16, round(image.height * ratio))


def _features(image: Image.Image, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    image = image.convert("RGB")
    model = get_feature_extractor(_EXTRACTOR)
    with torch.no_grad():
        return model(image_to_tensor(image.resize(size, Image.Resampling.LANCZOS)))


def content_distance(result: Image.Image, content: Image.Image, *, edge: int = YARDSTICK_EDGE) -> float:
    """Relative relu4_2 feature distance of `result` to `content` (resized to the same size first)."""
    size = _size(content, edge)  # the result is compared at the content's size, whatever its own
    a = _features(result, size)[_CONTENT_LAYER]
    b = _features(content, size)[_CONTENT_LAYER]
    return float((a - b).pow(2).sum() / b.pow(2).sum())


def style_distance(result: Image.Image, style: Image.Image, *, edge: int = YARDSTICK_EDGE,
                   layers: Sequence[str] = _STYLE_LAYERS) -> float:
    """Mean relative Gram distance of `result` to `style` over the style layers (each at long edge `edge`)."""
    fa, fb = _features(result, _size(result, edge)), _features(style, _size(style, edge))
    total = 0.0
    for layer in layers:
        ga, gb = gram(fa[layer]), gram(fb[layer])
        total += float((ga - gb).pow(2).sum() / gb.pow(2).sum())
    return total / len(layers)
